"""MaskNet unification of k time-aligned sequences into one d-wide token per timestep."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype, dense
from recjax.nn.mlp import MLP


class MaskNet(nn.Module):
  """`MaskNet(S_cat) = LCE_emb(S_cat ⊙ MLP_mask(S_cat))`.

  Attributes:
    out_dim: d, the width of LCE_emb's output.
    hidden: hidden width of the 2-layer MLP_mask; None = kd (our choice).
    mask_sigmoid: apply a sigmoid to the mask (one unofficial port does; default False, following the
      original MaskNet instance-guided mask).
    dtype: activation dtype.
  Source: InterFormer §3 (preprocessing), spec §2; Wang et al., MaskNet (2021).
  """
  out_dim: int
  hidden: int | None = None
  mask_sigmoid: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s_cat: jax.Array) -> jax.Array:
    """s_cat [B, T, kd] -> [B, T, out_dim]."""
    s_cat = s_cat.astype(self.dtype)
    kd = s_cat.shape[-1]
    mask = MLP((self.hidden or kd, kd), dtype=self.dtype, name="mask_mlp")(s_cat)
    if self.mask_sigmoid:
      mask = nn.sigmoid(mask)
    return dense(self.out_dim, ("mlp", "embed"), dtype=self.dtype, name="lce_emb")(s_cat * mask)
