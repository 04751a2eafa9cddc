"""Linear compressed embedding (LCE): a linear map along the token axis."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype, partitioned


class LCE(nn.Module):
  """`LCE(X) = W X`: maps N tokens to `num_out` tokens, shared over the embedding axis.

  Attributes:
    num_out: M, the number of output tokens (may exceed N: then it expands).
    use_bias: add a learned [M, d] bias.
    dtype: activation dtype.

  Params: `kernel` [M, N] with logical axes ("tokens", None); `bias` [M, d] ("tokens", "embed").
  Source: InterFormer appendix (LCE), spec §1.
  """
  num_out: int
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, d] -> [B, num_out, d]."""
    n, d = x.shape[-2], x.shape[-1]
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=0)
    w = self.param("kernel", partitioned(init, ("tokens", None)), (self.num_out, n), jnp.float32)
    y = jnp.einsum("mn,...nd->...md", w.astype(self.dtype), x.astype(self.dtype))
    if self.use_bias:
      b = self.param("bias", partitioned(nn.initializers.zeros_init(), ("tokens", "embed")),
                     (self.num_out, d), jnp.float32)
      y = y + b.astype(self.dtype)
    return y
