"""Jitted train and eval steps: pure functions of (state, batch), compiled once with explicit shardings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from recjax.train.state import TrainState


def bce_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean binary cross-entropy with logits. logits, labels, mask: [B] f32. Returns [] f32."""
  per = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_train_step(model: nn.Module, seed: int, prng_impl: str = "threefry2x32"
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, {"loss", "grad_norm"})`.

  Dropout randomness is `fold_in(key(seed, impl=prng_impl), step)`, so a resumed run draws the same masks
  as an uninterrupted one. Each dropout site draws only two words from its key and hashes element positions
  (`recjax.nn.dropout`), so the PRNG implementation costs nothing per element; the default threefry2x32 is
  JAX's standard, identical across backends and meshes.
  """
  base = jax.random.key(seed, impl=prng_impl)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(base, state.step)

    def loss_fn(params):
      logits = model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
      return bce_loss(logits, batch["label"], batch["mask"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new_state = state.apply_gradients(grads)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  return train_step


def make_eval_step(model: nn.Module) -> Callable[[Any, dict], jax.Array]:
  """Returns `eval_step(params, batch) -> logits [B] f32` (inference mode, no dropout)."""

  def eval_step(params: Any, batch: dict) -> jax.Array:
    return model.apply({"params": params}, batch, train=False).astype(jnp.float32)

  return eval_step
