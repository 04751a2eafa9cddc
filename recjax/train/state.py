"""Train state, optimizer and learning-rate schedules."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from recjax.errors import ConfigError


@struct.dataclass
class TrainState:
  """Everything a train step changes. A pytree; `tx` is static.

  Attributes:
    step: [] int32, number of optimizer updates applied.
    params: the model's parameter tree (unboxed arrays).
    opt_state: the optax state.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads: Any) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")


def make_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning-rate schedule from `train.lr`, `train.schedule`, `train.warmup_steps`, `train.max_steps`.

  Schedules: "constant" (FuxiCTR default), "cosine" (decay to 0 at max_steps), "warmup_cosine"
  (linear warm-up then cosine), "exponential" (×`train.decay_rate` every `train.decay_steps`).

  Raises:
    ConfigError: on an unknown schedule name or a non-positive learning rate.
  """
  lr, name = float(train_cfg.lr), train_cfg.schedule
  if lr <= 0:
    raise ConfigError(f"train.lr must be > 0, got {lr}")
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(1, train_cfg.max_steps))
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(1, train_cfg.warmup_steps),
                                              max(2, train_cfg.max_steps))
  if name == "exponential":
    return optax.exponential_decay(lr, max(1, train_cfg.decay_steps), train_cfg.decay_rate)
  raise ConfigError(f"train.schedule must be one of {SCHEDULES}, got {name!r}")


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (optionally with global-norm clipping and decoupled weight decay) on the schedule above.

  The chain ends with an injected `lr_factor` (initially 1) that the training loop multiplies by
  `train.plateau_factor` after each evaluation without improvement (FuxiCTR's reduce-on-plateau). It lives
  in the optimizer state, so it is checkpointed and a resumed run continues with the same learning rate.
  """
  sched = make_schedule(train_cfg)
  parts = []
  if train_cfg.get("grad_clip", 0.0):
    parts.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
  if train_cfg.get("weight_decay", 0.0):
    parts.append(optax.adamw(sched, weight_decay=float(train_cfg.weight_decay)))
  else:
    parts.append(optax.adam(sched))
  parts.append(optax.inject_hyperparams(optax.scale)(step_size=1.0))
  return optax.chain(*parts)


def lr_factor(opt_state: Any) -> float:
  """The current reduce-on-plateau multiplier of the learning rate (see `make_optimizer`)."""
  return float(opt_state[-1].hyperparams["step_size"])


def scale_lr(opt_state: Any, factor: float) -> Any:
  """Returns `opt_state` with the learning-rate multiplier times `factor`, placed like the old one."""
  last = opt_state[-1]
  old = last.hyperparams["step_size"]
  new = jax.device_put(jnp.asarray(old * factor, old.dtype), old.sharding)
  return (*opt_state[:-1], last._replace(hyperparams={**last.hyperparams, "step_size": new}))


def zeros_like_tree(tree: Any) -> Any:
  return jax.tree.map(jnp.zeros_like, tree)
