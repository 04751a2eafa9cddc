"""Shared helpers for the building blocks: partitioned initialisers and a partitioned Dense.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) drawn only from
`LOGICAL_AXES`; `recjax/sharding.py` maps them to mesh axes (`vocab` -> `model`, the rest replicated).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# The only logical axis names params may use (None = an unnamed, always-replicated axis).
LOGICAL_AXES = ("vocab", "embed", "mlp", "heads", "head_dim", "tokens", "cross")

Dtype = Any

default_kernel_init = nn.initializers.lecun_normal()


def partitioned(init, axes: tuple[str | None, ...]):
  """Wraps an initializer so the param carries logical axis names `axes` (one per param dim)."""
  for a in axes:
    if a is not None and a not in LOGICAL_AXES:
      raise ValueError(f"logical axis {a!r} is not one of {LOGICAL_AXES}")
  return nn.with_logical_partitioning(init, axes)


def dense(features: int, axes: tuple[str, str] = ("embed", "mlp"), *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, kernel_init=default_kernel_init, name: str | None = None) -> nn.Dense:
  """A `nn.Dense` whose kernel [in, out] has logical axes `axes` and bias [out] has `axes[1]`.

  Params are float32; `dtype` is the activation (compute) dtype. Source: our choice.
  """
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=partitioned(kernel_init, axes),
      bias_init=partitioned(nn.initializers.zeros_init(), (axes[1],)),
      name=name)


def layer_norm(*, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over the last (feature) axis, scale/bias with logical axis `embed`."""
  return nn.LayerNorm(
      dtype=dtype, param_dtype=jnp.float32,
      scale_init=partitioned(nn.initializers.ones_init(), ("embed",)),
      bias_init=partitioned(nn.initializers.zeros_init(), ("embed",)),
      name=name)
