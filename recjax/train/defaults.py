"""Config sections shared by every experiment config: dataset presets, `train`, `eval`, `mesh`.

A model config file (`experiments/configs/<model>.py`) is `base_config(preset)` plus its `model` section,
so every model sees the same data, protocol and training settings for a given preset.
"""

from __future__ import annotations

import importlib

import ml_collections

from recjax.data.sources import SOURCES
from recjax.errors import ConfigError

# preset -> (dataset source, dataset field overrides, train field overrides). eval_every ≈ one epoch.
PRESETS: dict[str, tuple[str, dict, dict]] = {
    # 80,808 train examples / 2048 ≈ 39 steps per epoch.
    "movielens": ("movielens", {}, dict(max_steps=1600, eval_every=40)),
    # 134,984 train examples ≈ 66 steps per epoch.
    "taobao_ub": ("taobao_userbehavior", {}, dict(max_steps=2000, eval_every=66)),
    # 262,826 train examples ≈ 128 steps per epoch.
    "amazon_beauty": ("amazon", dict(category="Beauty"), dict(max_steps=3000, eval_every=128)),
    # DMR sample: 259 train rows; small batches, many short epochs.
    "taobao_ad": ("taobao_ad", dict(variant="dmr"), dict(batch_size=64, eval_batch_size=64, max_steps=200,
                                                          eval_every=4, patience=5)),
    # BARS TaobaoAd_x1 (21.9M train rows): the paper's benchmark; valid = test as BARS does.
    "taobao_ad_bars": ("taobao_ad", dict(variant="bars", protocol="bars"),
                       dict(max_steps=100_000, eval_every=10_708, patience=1, monitor="gauc")),
    # 200-row Criteo sample: a schema check (no sequences); tiny batches.
    "criteo": ("criteo", {}, dict(batch_size=32, eval_batch_size=32, max_steps=50, eval_every=5, patience=3)),
    "synthetic": ("synthetic", {}, dict(max_steps=500, eval_every=50)),
}


def dataset_config(source: str, **overrides) -> ml_collections.ConfigDict:
  """The `dataset` section: the source module's `DEFAULTS` with `overrides` applied."""
  if source not in SOURCES:
    raise ConfigError(f"unknown dataset source {source!r}; known: {sorted(SOURCES)}")
  defaults = importlib.import_module(SOURCES[source]).DEFAULTS
  c = ml_collections.ConfigDict(dict(defaults))
  c.update(overrides)
  return c


def train_config(**overrides) -> ml_collections.ConfigDict:
  """The `train` section. FuxiCTR-like defaults: Adam 1e-3, batch 2048, early stopping on valid AUC."""
  c = ml_collections.ConfigDict(dict(
      batch_size=2048,
      eval_batch_size=4096,
      lr=1e-3,
      schedule="constant",      # constant | cosine | warmup_cosine | exponential
      warmup_steps=0,
      decay_steps=1000,         # exponential schedule only
      decay_rate=0.5,           # exponential schedule only
      grad_clip=0.0,            # 0 = off; else global-norm clipping
      weight_decay=0.0,         # 0 = Adam; else AdamW (decoupled)
      max_steps=2000,
      eval_every=40,            # steps between validation evaluations (and checkpoints)
      log_every=10,             # steps between train-loss log lines
      patience=2,               # stop after this many evaluations in a row without improvement (FuxiCTR)
      plateau_factor=0.1,       # lr ×= this after each evaluation without improvement (FuxiCTR); 0 = off
      min_lr_factor=1e-3,       # floor of that multiplier (FuxiCTR min_lr 1e-6 at lr 1e-3)
      monitor="auc",            # auc | gauc | logloss | ne (early stopping + best-param selection)
      keep_checkpoints=2,
  ))
  c.update(overrides)
  return c


def eval_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      gauc_weight="samples",    # InterFormer spec knob 12: samples (FuxiCTR) | clicks | uniform
      ne_base_rate="train",     # spec knob 13: train (the paper's NE) | eval (torchrec)
  ))


def mesh_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      data=-1,                  # -1 = all devices not used by `model`
      model=1,                  # embedding-row sharding axis size
  ))


def check_variant(config_file: str, variant: str, extra: tuple[str, ...] = ("tiny",)) -> None:
  """Raises ConfigError naming every valid variant (the dataset presets plus `extra`) of `config_file`."""
  if variant not in PRESETS and variant not in extra:
    raise ConfigError(f"unknown variant {variant!r} of {config_file}; known: dataset presets {sorted(PRESETS)} "
                      f"and {list(extra)}")


def base_config(preset: str) -> ml_collections.ConfigDict:
  """Everything but the `model` section, for a dataset preset (a key of PRESETS).

  Raises:
    ConfigError: on an unknown preset (the message lists the known ones).
  """
  if preset not in PRESETS:
    raise ConfigError(f"unknown dataset preset {preset!r}; known presets: {sorted(PRESETS)}")
  source, ds, tr = PRESETS[preset]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.distributed = False         # True: jax.distributed.initialize() first (multi-host pods / clusters)
  c.dataset = dataset_config(source, **ds)
  c.train = train_config(**tr)
  c.eval = eval_config()
  c.mesh = mesh_config()
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks the train section of `c` to a seconds-long smoke run (tests)."""
  c.train.update(batch_size=256, eval_batch_size=4096, max_steps=6, eval_every=3, log_every=1, patience=10)
  return c


# Baseline embedding width per preset: 16 on ml-100k (the FuxiCTR peer reference); elsewhere the
# InterFormer config's widths (BARS: Amazon 64, TaobaoAd 32), so baselines and InterFormer compare at equal d.
BASELINE_DIM = {"movielens": 16, "taobao_ub": 32, "amazon_beauty": 64, "taobao_ad": 32, "taobao_ad_bars": 32,
                "criteo": 16, "synthetic": 32}


def baseline_experiment(arg: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A baseline's experiment config: `base_config(arg)` + `model` at `BASELINE_DIM[arg]`; `tiny` shrinks it."""
  check_variant(f"{model.name}.py", arg)
  if arg == "tiny":
    c = tiny(base_config("movielens"))
    c.model = model
    c.model.update(dim=8, hidden=(32,))
    return c
  c = base_config(arg)
  c.model = model
  c.model.dim = BASELINE_DIM[arg]
  return c
