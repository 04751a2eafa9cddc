"""DNN baseline experiment configs.

  python experiments/run.py --config experiments/configs/dnn.py:<variant> --workdir DIR

Model: embeddings + mean-pooled sequences + dense -> ReLU MLP [500, 500, 500] (FuxiCTR 2.3 `DNN_default`; see recjax/models/baselines.py).
Variants: a dataset preset of `recjax.train.defaults.PRESETS` (movielens, taobao_ub, amazon_beauty,
taobao_ad, taobao_ad_bars, criteo, synthetic), or `tiny` (ml-100k, a seconds-long smoke run).
The movielens variant uses the FuxiCTR peer-reference settings: embedding 16, batch 2048, Adam 1e-3,
early stopping on validation AUC.
"""

import ml_collections

from recjax.models.baselines import dnn_config
from recjax.train.defaults import baseline_experiment


def get_config(arg: str = "movielens") -> ml_collections.ConfigDict:
  """DNN on one dataset preset (or `tiny`); embedding widths in `defaults.BASELINE_DIM`."""
  return baseline_experiment(arg, dnn_config())
