"""DCNv2 baseline experiment configs.

  python experiments/run.py --config experiments/configs/dcnv2.py:<variant> --workdir DIR

Model: 3 low-rank (r = 32) cross layers in parallel with a ReLU MLP [500, 500, 500] (FuxiCTR 2.3 `DCNv2_default`; see recjax/models/baselines.py).
Variants: a dataset preset of `recjax.train.defaults.PRESETS` (movielens, taobao_ub, amazon_beauty,
taobao_ad, taobao_ad_bars, criteo, synthetic), or `tiny` (ml-100k, a seconds-long smoke run).
The movielens variant uses the FuxiCTR peer-reference settings: embedding 16, batch 2048, Adam 1e-3,
early stopping on validation AUC.
"""

import ml_collections

from recjax.models.baselines import dcnv2_config
from recjax.train.defaults import baseline_experiment


def get_config(arg: str = "movielens") -> ml_collections.ConfigDict:
  """DCNv2 on one dataset preset (or `tiny`); embedding widths in `defaults.BASELINE_DIM`."""
  return baseline_experiment(arg, dcnv2_config())
