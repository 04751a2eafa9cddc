"""DOT interaction: DLRM-style pairwise inner products of tokens, then a Linear back to tokens."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recjax.nn.common import Dtype, dense


def pairwise_dots(x: jax.Array) -> jax.Array:
  """Strict upper triangle of the token Gram matrix.

  Args:
    x: [B, N, d].
  Returns:
    [B, N(N-1)/2]: `<x_i, x_j>` for i < j in row-major order (i outer, j inner).
  Source: DLRM dot interaction; spec §4 (DOT module).
  """
  n = x.shape[-2]
  gram = jnp.einsum("bid,bjd->bij", x, x)
  iu, ju = np.triu_indices(n, k=1)
  return gram[:, iu, ju]


class DotInteraction(nn.Module):
  """Pairwise dots -> Linear -> `num_out` tokens of width d.

  Attributes:
    num_out: output tokens; None keeps N_in (the DHEN convention, spec §4).
    dtype: activation dtype.

  Raises:
    ValueError: fewer than 2 input tokens (no pairs).
  Source: spec §4 DOT module [our choice, DLRM-style].
  """
  num_out: int | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, d] -> [B, num_out or N, d]."""
    b, n, d = x.shape
    if n < 2:
      raise ValueError(f"DotInteraction needs at least 2 tokens, got {n}")
    m = self.num_out or n
    p = pairwise_dots(x.astype(self.dtype))
    return dense(m * d, ("cross", "embed"), dtype=self.dtype, name="proj")(p).reshape(b, m, d)
