"""DCNv2 cross network (low-rank cross layers) and its token-in/token-out interaction wrapper."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype, dense


class CrossNetwork(nn.Module):
  """Stack of DCNv2 cross layers: `x_{l+1} = x0 ⊙ (U_l (V_l x_l) + b_l) + x_l`.

  Attributes:
    num_layers: number of cross layers.
    low_rank: r of U [D, r] and V [r, D]; None = full-rank W [D, D] (`x0 ⊙ (W x_l + b) + x_l`).
    dtype: activation dtype.

  Params per layer i: `down_i` kernel [D, r] ("embed", "cross") (V, no bias) and `up_i` kernel [r, D]
  ("cross", "embed") with bias [D] (U and b); full rank: `full_i` kernel [D, D] + bias.
  Source: Wang et al., DCN V2 (2021), Eq. 1 and §3.2 (low rank); spec §4.
  """
  num_layers: int = 2
  low_rank: int | None = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    """x0 [B, D] -> [B, D]."""
    x0 = x0.astype(self.dtype)
    dim = x0.shape[-1]
    x = x0
    for i in range(self.num_layers):
      if self.low_rank is None:
        h = dense(dim, ("embed", "mlp"), dtype=self.dtype, name=f"full_{i}")(x)
      else:
        v = dense(self.low_rank, ("embed", "cross"), use_bias=False, dtype=self.dtype, name=f"down_{i}")(x)
        h = dense(dim, ("cross", "embed"), dtype=self.dtype, name=f"up_{i}")(v)
      x = x0 * h + x
    return x


class DCNInteraction(nn.Module):
  """Flatten tokens -> CrossNetwork -> Linear -> `num_out` tokens.

  Attributes:
    num_out: output tokens; None keeps N_in.
    num_layers, low_rank: of the CrossNetwork (spec defaults 2 and 32).
  Source: spec §4 (DCNv2 module).
  """
  num_out: int | None = None
  num_layers: int = 2
  low_rank: int | None = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, d] -> [B, num_out or N, d]."""
    b, n, d = x.shape
    m = self.num_out or n
    h = CrossNetwork(self.num_layers, self.low_rank, self.dtype, name="cross")(x.reshape(b, n * d))
    return dense(m * d, ("embed", "mlp"), dtype=self.dtype, name="proj")(h).reshape(b, m, d)
