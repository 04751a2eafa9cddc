"""Default `train`, `eval` and `mesh` config sections shared by every experiment config."""

from __future__ import annotations

import ml_collections


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
      patience=2,               # evaluations without improvement before stopping early
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
