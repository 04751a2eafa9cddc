"""DIN target attention: a local activation unit scores each history item against the target item."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype
from recjax.nn.mlp import MLP


class TargetAttention(nn.Module):
  """DIN's local activation unit and weighted sum pooling.

  For each history position t with item embedding h_t and the target embedding q:
    `w_t = MLP([h_t, q, h_t − q, h_t ⊙ q])` (hidden widths `hidden`, then a Linear to 1 scalar),
    `w_t = 0` where `mask` is False, and the output is `Σ_t w_t h_t`.
  The weights are not normalised (DIN keeps the intensity of the user's interest, §4.3); `use_softmax`
  switches to a masked softmax over t (FuxiCTR's `din_use_softmax`).

  Attributes:
    hidden: hidden widths of the attention MLP (DIN/FuxiCTR: [64]; 80-40 in the DIN paper's figure).
    activation: hidden activation of the attention MLP: "prelu" (default; DIN paper's PReLU), "relu"
      or "silu". Dice is not offered: it needs batch statistics (a `batch_stats` collection) that our
      train loop does not carry.
    use_softmax: masked softmax over positions instead of raw weights (default False, as DIN).
    dtype: activation dtype.

  Params: `unit` (an MLP: `dense_<i>` kernels [in, out], `prelu_<i>` slopes).
  Source: Zhou et al., "Deep Interest Network for Click-Through Rate Prediction" (KDD 2018), §4.3 and
  Fig. 2 (the input [h, q, h − q, h ⊙ q] follows FuxiCTR's DIN_Attention: out-product replaced by
  the difference and element-wise product).
  """
  hidden: Sequence[int] = (64,)
  activation: str = "prelu"
  use_softmax: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, query: jax.Array, keys: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Attends over the history.

    Args:
      query: [B, D] target embedding (the concatenation of the target's feature embeddings).
      keys: [B, T, D] history embeddings, aligned feature by feature with `query`.
      mask: [B, T] bool, True at valid (non-padding) positions.
    Returns:
      (pooled [B, D], weights [B, T]) in `dtype`; weights are exactly 0 at masked positions, and a row
      with no valid position pools to 0.
    """
    keys = keys.astype(self.dtype)
    q = jnp.broadcast_to(query.astype(self.dtype)[:, None, :], keys.shape)
    unit_in = jnp.concatenate([keys, q, keys - q, keys * q], axis=-1)
    w = MLP((*self.hidden, 1), activation=self.activation, dtype=self.dtype, name="unit")(unit_in)[..., 0]
    if self.use_softmax:
      w = jax.nn.softmax(jnp.where(mask, w, -1e9), axis=-1)  # finite: all-padding rows stay NaN-free
      w = jnp.where(mask, w, 0.0)
    else:
      w = jnp.where(mask, w, 0.0)
    pooled = jnp.einsum("bt,btd->bd", w, keys)
    return pooled, w
