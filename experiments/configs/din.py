"""DIN baseline experiment configs.

  python experiments/run.py --config experiments/configs/din.py:<variant> --workdir DIR

Model: target attention (unit [64], PReLU, no softmax) per sequence group + ReLU MLP [500, 500, 500] (FuxiCTR 2.3 `DIN_default`; see recjax/models/baselines.py).
Variants: a dataset preset of `recjax.train.defaults.PRESETS` (movielens, taobao_ub, amazon_beauty,
taobao_ad, taobao_ad_bars, criteo, synthetic), or `tiny` (ml-100k, a seconds-long smoke run).
The movielens variant uses the FuxiCTR peer-reference settings: embedding 16, batch 2048, Adam 1e-3,
early stopping on validation AUC.
"""

import ml_collections

from recjax.models.baselines import din_config
from recjax.train.defaults import base_config, tiny

# Embedding width per preset: 16 on ml-100k (the FuxiCTR peer reference); elsewhere the InterFormer
# config's widths (BARS: Amazon 64, TaobaoAd 32), so baselines and InterFormer compare at equal d.
DIM = {"movielens": 16, "taobao_ub": 32, "amazon_beauty": 64, "taobao_ad": 32, "taobao_ad_bars": 32,
       "criteo": 16, "synthetic": 32}


def get_config(arg: str = "movielens") -> ml_collections.ConfigDict:
  """DIN on one dataset preset (or `tiny`)."""
  if arg == "tiny":
    c = tiny(base_config("movielens"))
    c.model = din_config()
    c.model.update(dim=8, hidden=(32,))
    return c
  c = base_config(arg)
  c.model = din_config()
  c.model.dim = DIM[arg]
  return c
