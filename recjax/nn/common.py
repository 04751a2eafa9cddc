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


def _wants_physical_transpose(a: jax.Array, b: jax.Array) -> bool:
  """bfloat16 products with both non-contracted sides ≥ 16 wide take the materialised-transpose path."""
  return a.dtype == jnp.bfloat16 and min(a.shape[1], b.shape[1]) >= 16


def _transposed_dot(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
  """aᵀ·b for a [n, i], b [n, o] -> [i, o] in out_dtype (float32 accumulation)."""
  if _wants_physical_transpose(a, b):
    return jnp.dot(_physical_transpose(a), b, preferred_element_type=jnp.float32).astype(out_dtype)
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32).astype(out_dtype)


def _dot_transposed(g: jax.Array, w: jax.Array) -> jax.Array:
  """g·wᵀ for g [n, o], w [i, o] -> [n, i] in g's dtype."""
  if _wants_physical_transpose(g, w.T):
    return jnp.dot(g, _physical_transpose(w))
  return lax.dot_general(g, w, (((1,), (1,)), ((), ())))


def _row_sum(a: jax.Array) -> jax.Array:
  """Σ over the rows of a [n, d] as 1ᵀ·a (float32). XLA:CPU reduces over the major axis of [n, d] with a
  slow reduce-window (about 2.3 ms for [2048, 500]); the product is one library call."""
  return jnp.dot(jnp.ones((1, a.shape[0]), a.dtype), a, preferred_element_type=jnp.float32)[0]


@jax.custom_vjp
def _affine(x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
  y = jnp.dot(x, w)
  if b is None:
    return y
  if jax.default_backend() == "cpu":
    # XLA:CPU folds `+ b` into the oneDNN matmul call and materialises the [n, out] broadcast of b for it;
    # behind the barrier, the add fuses into the consumer's elementwise pass instead (our choice: 102 ->
    # 91 ms for silu(x·W + b) at [102400, 384] x [384, 384]).
    y = lax.optimization_barrier(y)
  return y + b


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
  db = None if b is None else _row_sum(g).astype(b.dtype)
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
    return affine(x.astype(dtype), kernel.astype(dtype), None if bias is None else bias.astype(dtype))


def affine(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`x·w (+ b)` over the last axis of x, with `Dense`'s written-out backward (plain matrix products).

  Args:
    x: [..., k]; w: [k, n]; b: [n] or None; one dtype for all three.
  Returns:
    [..., n] in x's dtype.
  Source: our choice (see `Dense`).
  """
  return _affine(x.reshape(-1, x.shape[-1]), w, b).reshape(*x.shape[:-1], w.shape[-1])


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


_LN_EPS = 1e-6  # flax nn.LayerNorm's default


def _row_mean(a: jax.Array) -> jax.Array:
  """Mean over the last axis of a [n, d], [n, 1] (a row reduction; 3.3 against 6.7 ms for a matrix-vector
  product in the forward pass at [110592, 128] with oneDNN dots)."""
  return jnp.mean(a, axis=-1, keepdims=True)


def _ln_stats(x):
  mean = _row_mean(x)
  var = jnp.maximum(_row_mean(x * x) - mean * mean, 0.0)  # flax's fast variance
  return mean, lax.rsqrt(var + _LN_EPS)


def _layer_norm_fwd(x, scale, bias):
  mean, inv = _ln_stats(x)
  return (x - mean) * inv * scale + bias, (x, mean, inv, scale)


@jax.custom_vjp
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """x [n, d] float32 -> [n, d]: (x − mean) / sqrt(var + eps) · scale + bias."""
  return _layer_norm_fwd(x, scale, bias)[0]


def _layer_norm_bwd(res, g):
  x, mean, inv, scale = res
  g = lax.optimization_barrier(g)
  xhat = (x - mean) * inv
  gs = g * scale
  dx = inv * (gs - _row_mean(gs) - xhat * _row_mean(gs * xhat))
  return lax.optimization_barrier(dx), _row_sum(g * xhat), _row_sum(g)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with the params, initialisation, epsilon (1e-6) and statistics of flax's
  `nn.LayerNorm` (computed in float32, output in `dtype`).

  Its backward is written out (`jax.custom_vjp`): the input gradient is one fused pass with two row
  means, and the scale/bias gradients (sums over all rows) are 1ᵀ·(g ⊙ x̂) and 1ᵀ·g products, where
  XLA:CPU's derivation of nn.LayerNorm gave multi-input fusions of up to 273 ms on InterFormer `medium`'s
  [2048, 54, 128] activations. Our choice; values equal nn.LayerNorm's up to float rounding.

  Call: x [..., d] -> [..., d] in `dtype`.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scale_init: Any = nn.initializers.ones_init()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param("scale", self.scale_init, (d,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (d,), self.param_dtype)
    wide = jnp.promote_types(x.dtype, jnp.float32)
    y = _layer_norm(x.reshape(-1, d).astype(wide), scale.astype(wide), bias.astype(wide))
    return y.reshape(x.shape).astype(self.dtype or x.dtype)


def layer_norm(*, dtype: Dtype = jnp.float32, name: str | None = None) -> LayerNorm:
  """LayerNorm over the last (feature) axis, scale/bias with logical axis `embed`."""
  return LayerNorm(
      dtype=dtype, param_dtype=jnp.float32,
      scale_init=partitioned(nn.initializers.ones_init(), ("embed",)),
      bias_init=partitioned(nn.initializers.zeros_init(), ("embed",)),
      name=name)
