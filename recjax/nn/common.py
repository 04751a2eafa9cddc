"""Shared helpers for the building blocks: partitioned initialisers and a partitioned Dense.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) drawn only from
`LOGICAL_AXES`; `recjax/sharding.py` maps them to mesh axes (`vocab` -> `model`, the rest replicated).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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


def _physical_transpose(a: jax.Array) -> jax.Array:
  """a.T [n, m] of a 2-D a [m, n], materialised row-major.

  A plain transpose feeding a dot is folded into the dot's dimension numbers (or given a column-major
  layout), which sends a bfloat16 dot to XLA:CPU's slow generic path; the flattening reshape behind an
  optimisation barrier forces a real row-major copy, so the dot keeps the standard [m, k] x [k, n] form
  that the fast library path (YNNPACK; AMX on CPUs that have it) takes. Our choice; measured ~1 TFLOP/s
  against ~250 GFLOP/s for the transposed forms of a 2048 x 500 x 500 bfloat16 dot.
  """
  return lax.optimization_barrier(a.T.reshape(-1)).reshape(a.shape[1], a.shape[0])


def _transposed_dot(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
  """aᵀ·b for a [n, i], b [n, o] -> [i, o] in out_dtype (float32 accumulation)."""
  if a.dtype == jnp.bfloat16 and a.shape[1] >= 16 and b.shape[1] >= 16:
    return jnp.dot(_physical_transpose(a), b, preferred_element_type=jnp.float32).astype(out_dtype)
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32).astype(out_dtype)


def _dot_transposed(g: jax.Array, w: jax.Array) -> jax.Array:
  """g·wᵀ for g [n, o], w [i, o] -> [n, i] in g's dtype."""
  if g.dtype == jnp.bfloat16 and w.shape[0] >= 16 and w.shape[1] >= 16:
    return jnp.dot(g, _physical_transpose(w))
  return lax.dot_general(g, w, (((1,), (1,)), ((), ())))


@jax.custom_vjp
def _affine(x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
  y = jnp.dot(x, w)
  return y if b is None else y + b


def _affine_fwd(x, w, b):
  return _affine(x, w, b), (x, w, b)


def _affine_bwd(res, g):
  # The barrier keeps the forward input materialised: otherwise XLA:CPU fuses its producer (a dropout mask,
  # say) into the transposing copy that the weight gradient needs and recomputes it in column order
  # (350 ms for one [110592, 128] input of InterFormer `medium`).
  x, w, b = res
  x = lax.optimization_barrier(x)
  dx = _dot_transposed(g, w).astype(x.dtype)
  dw = _transposed_dot(x, g, w.dtype)
  # Σ over rows as a product with a ones row: XLA:CPU reduces over the major axis of [n, o] slowly
  # (a reduce-window, about 2.3 ms for [2048, 500] here) while the product is one library call.
  db = None if b is None else jnp.dot(jnp.ones((1, g.shape[0]), g.dtype), g,
                                      preferred_element_type=jnp.float32)[0].astype(b.dtype)
  return dx, dw, db


_affine.defvjp(_affine_fwd, _affine_bwd)


class Dense(nn.Module):
  """`y = x·W + b` over the last axis, with the params, initialisation and dtype promotion of `nn.Dense`.

  Its backward pass is written out (`jax.custom_vjp`) so that XLA:CPU runs every gradient as a plain
  matrix product: the bias gradient Σ_rows g as `1ᵀ·g`, and in bfloat16 the input and weight gradients
  g·Wᵀ and xᵀ·g on materialised transposes (see `_physical_transpose`). Values equal `nn.Dense`'s up to
  float rounding (weight and bias gradients accumulate in float32). Our choice.

  Call: x [..., in] -> [..., features] in `dtype`.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = default_kernel_init
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = _affine(x.astype(dtype).reshape(-1, x.shape[-1]), kernel.astype(dtype),
                None if bias is None else bias.astype(dtype))
    return y.reshape(*x.shape[:-1], self.features)


def dense(features: int, axes: tuple[str, str] = ("embed", "mlp"), *, use_bias: bool = True,
          dtype: Dtype = jnp.float32, kernel_init=default_kernel_init, name: str | None = None) -> Dense:
  """A `Dense` (same params as `nn.Dense`) whose kernel [in, out] has logical axes `axes` and bias [out] has `axes[1]`.

  Params are float32; `dtype` is the activation (compute) dtype. Source: our choice.
  """
  return Dense(
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
