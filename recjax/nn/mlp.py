"""Multi-layer perceptron with SiLU activations (paper Appendix B: SiLU/Swish everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.nn.common import Dtype, dense, layer_norm


class MLP(nn.Module):
  """Dense layers over the last axis: hidden layers are Dense -> [LayerNorm] -> SiLU -> [Dropout].

  Attributes:
    features: output width of each layer; the last entry is the output width.
    dropout: dropout rate after each hidden activation (RNG stream "dropout"; only when train=True).
    layer_norm: LayerNorm after each hidden Dense.
    activate_final: also apply LayerNorm/SiLU/Dropout after the last layer.
    dtype: activation dtype (params stay float32).

  Kernels alternate logical axes ("embed", "mlp") / ("mlp", "embed"), so no kernel names the same axis
  twice. Source: paper Appendix B for SiLU; the rest is our choice.
  """
  features: Sequence[int]
  dropout: float = 0.0
  layer_norm: bool = False
  activate_final: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """x [..., D_in] -> [..., features[-1]] in `dtype`."""
    n = len(self.features)
    for i, f in enumerate(self.features):
      axes = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
      x = dense(f, axes, dtype=self.dtype, name=f"dense_{i}")(x)
      if i < n - 1 or self.activate_final:
        if self.layer_norm:
          x = layer_norm(dtype=self.dtype, name=f"ln_{i}")(x)
        x = nn.silu(x)
        if self.dropout > 0:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x
