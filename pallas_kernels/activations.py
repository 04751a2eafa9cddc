"""Pointwise activations used by GDPA, with closed-form derivatives.

All functions take and return float32 (or float64) arrays; kernels call them on the f32 logits tile.
Each activation satisfies act(0) = 0.

Source: docs/specs/kernels.md §2.3 (table of activations and derivatives).
"""
import math

import jax
import jax.numpy as jnp

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _identity(x):
  return x


def _d_identity(x):
  return jnp.ones_like(x)


def _relu(x):
  return jnp.where(x > 0, x, jnp.zeros_like(x))


def _d_relu(x):
  return (x > 0).astype(x.dtype)


def _relu2(x):
  r = _relu(x)
  return r * r


def _d_relu2(x):
  return 2.0 * _relu(x)


def _leaky_relu(x):
  return jnp.where(x > 0, x, 0.01 * x)


def _d_leaky_relu(x):
  return jnp.where(x > 0, jnp.ones_like(x), jnp.full_like(x, 0.01))


def _sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def _silu(x):
  return x * _sigmoid(x)


def _d_silu(x):
  s = _sigmoid(x)
  return s * (1.0 + x * (1.0 - s))


def _gelu(x):
  return 0.5 * x * (1.0 + jax.lax.erf(x * _INV_SQRT_2))


def _d_gelu(x):
  cdf = 0.5 * (1.0 + jax.lax.erf(x * _INV_SQRT_2))
  pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)
  return cdf + x * pdf


def _gelu_tanh(x):
  u = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
  return 0.5 * x * (1.0 + jnp.tanh(u))


def _d_gelu_tanh(x):
  u = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
  t = jnp.tanh(u)
  du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


def _hardswish(x):
  return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def _d_hardswish(x):
  mid = (2.0 * x + 3.0) / 6.0
  return jnp.where(x < -3.0, jnp.zeros_like(x), jnp.where(x > 3.0, jnp.ones_like(x), mid))


ACTIVATIONS = {
    "identity": (_identity, _d_identity),
    "relu": (_relu, _d_relu),
    "relu2": (_relu2, _d_relu2),
    "leaky_relu": (_leaky_relu, _d_leaky_relu),
    "silu": (_silu, _d_silu),
    "gelu": (_gelu, _d_gelu),
    "gelu_tanh": (_gelu_tanh, _d_gelu_tanh),
    "hardswish": (_hardswish, _d_hardswish),
}


def get(name: str):
  """Returns `(act, d_act)` for an activation name.

  Raises:
    ValueError: for an unknown name; the message lists the known names.
  """
  if not isinstance(name, str) or name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def normalize(activation, num_heads: int) -> tuple[str, ...]:
  """Returns a tuple of `num_heads` activation names.

  Args:
    activation: one name for all heads, or a tuple/list of `num_heads` names.
    num_heads: H, the number of query heads.

  Raises:
    ValueError: unknown name, or a tuple whose length is not H.

  Source: docs/specs/kernels.md §1 ("a string, or a tuple of length H").
  """
  if isinstance(activation, str):
    get(activation)
    return (activation,) * num_heads
  if isinstance(activation, (tuple, list)):
    names = tuple(activation)
    if len(names) != num_heads:
      raise ValueError(f"per-head activation tuple has length {len(names)}, expected H={num_heads}")
    for n in names:
      get(n)
    return names
  raise ValueError(f"activation must be a name or a tuple of H names, got {activation!r}")
