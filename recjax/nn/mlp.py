"""Multi-layer perceptron with SiLU activations (paper Appendix B: SiLU/Swish everywhere)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.nn.common import Dtype, default_kernel_init, dense, layer_norm, partitioned
from recjax.nn.dropout import Dropout

ACTIVATIONS = ("silu", "relu", "prelu")


class MLP(nn.Module):
  """Dense layers over the last axis: hidden layers are Dense -> [LayerNorm] -> SiLU -> [Dropout].

  Attributes:
    features: output width of each layer; the last entry is the output width.
    dropout: dropout rate after each hidden activation (RNG stream "dropout"; only when train=True).
    layer_norm: LayerNorm after each hidden Dense.
    activate_final: also apply LayerNorm/SiLU/Dropout after the last layer.
    dtype: activation dtype (params stay float32).
    activation: hidden activation, one of ACTIVATIONS: "silu" (default), "relu", or "prelu" (a learned
      slope per unit for x < 0, param `prelu_<i>` [width] initialised to 0.25 as in He et al. 2015).
    kernel_init: initializer of every Dense kernel (default LeCun normal).
    input_layer: optional factory `(features, axes, dtype=, kernel_init=, name=) -> module` used for the
      first layer instead of `dense`, for inputs that have a cheaper exact form than one Dense over a
      materialised concatenation (DIN's activation unit); its params keep the name `dense_0`.

  Raises:
    ConfigError: unknown `activation`.

  Kernels alternate logical axes ("embed", "mlp") / ("mlp", "embed"), so no kernel names the same axis
  twice. Source: paper Appendix B for SiLU; the rest is our choice.
  """
  features: Sequence[int]
  dropout: float = 0.0
  layer_norm: bool = False
  activate_final: bool = False
  dtype: Dtype = jnp.float32
  activation: str = "silu"
  kernel_init: Any = default_kernel_init
  input_layer: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """x [..., D_in] -> [..., features[-1]] in `dtype` (x is whatever `input_layer` takes, if set)."""
    if self.activation not in ACTIVATIONS:
      raise ConfigError(f"MLP activation={self.activation!r} is not one of {ACTIVATIONS}")
    n = len(self.features)
    for i, f in enumerate(self.features):
      axes = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
      make = self.input_layer if i == 0 and self.input_layer is not None else dense
      x = make(f, axes, dtype=self.dtype, kernel_init=self.kernel_init, name=f"dense_{i}")(x)
      if i < n - 1 or self.activate_final:
        if self.layer_norm:
          x = layer_norm(dtype=self.dtype, name=f"ln_{i}")(x)
        if self.activation == "silu":
          x = nn.silu(x)
        elif self.activation == "relu":
          x = nn.relu(x)
        else:
          a = self.param(f"prelu_{i}", partitioned(nn.initializers.constant(0.25), (axes[1],)), (f,), jnp.float32)
          x = jnp.where(x >= 0, x, a.astype(x.dtype) * x)
        if self.dropout > 0:
          x = Dropout(self.dropout)(x, train=train)
    return x
