"""DIN target attention: a local activation unit scores each history item against the target item."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype, default_kernel_init, partitioned
from recjax.nn.mlp import MLP


class UnitInputDense(nn.Module):
  """The first Dense of DIN's activation unit, `[h, q, h − q, h ⊙ q] · W + b`, without the concatenation.

  With W split by rows into W_h, W_q, W_d, W_p ([D, F] each) the layer equals
  `[h, h ⊙ q] · [W_h + W_d; W_p] + (q · (W_q − W_d) + b)`: the query's part is computed once per example
  instead of once per history position, and the per-position product contracts over 2D instead of 4D.
  Same params (`kernel` [4D, F], `bias` [F]) and initialisation as `recjax.nn.common.dense` [our choice;
  exact up to float rounding].

  Call: `((keys [B, T, D], query [B, D]))` -> [B, T, F] in `dtype`.
  """
  features: int
  axes: tuple[str, str] = ("embed", "mlp")
  dtype: Dtype = jnp.float32
  kernel_init: object = default_kernel_init

  @nn.compact
  def __call__(self, inputs: tuple[jax.Array, jax.Array]) -> jax.Array:
    keys, query = inputs
    d = keys.shape[-1]
    kernel = self.param("kernel", partitioned(self.kernel_init, self.axes), (4 * d, self.features), jnp.float32)
    bias = self.param("bias", partitioned(nn.initializers.zeros_init(), (self.axes[1],)), (self.features,),
                      jnp.float32)
    w_h, w_q, w_d, w_p = jnp.split(kernel.astype(self.dtype), 4, axis=0)
    per_example = query @ (w_q - w_d) + bias.astype(self.dtype)                        # [B, F]
    per_step = jnp.concatenate([keys, keys * query[:, None, :]], axis=-1) @ jnp.concatenate([w_h + w_d, w_p])
    return per_step + per_example[:, None, :]


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
    query = query.astype(self.dtype)
    w = MLP((*self.hidden, 1), activation=self.activation, dtype=self.dtype, input_layer=UnitInputDense,
            name="unit")((keys, query))[..., 0]
    if self.use_softmax:
      w = jax.nn.softmax(jnp.where(mask, w, -1e9), axis=-1)  # finite: all-padding rows stay NaN-free
      w = jnp.where(mask, w, 0.0)
    else:
      w = jnp.where(mask, w, 0.0)
    pooled = jnp.einsum("bt,btd->bd", w, keys)
    return pooled, w
