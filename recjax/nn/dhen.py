"""DHEN: a deep, hierarchical ensemble of interaction modules (here DOT + DCN)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.nn.common import Dtype, dense, layer_norm
from recjax.nn.dcn import DCNInteraction
from recjax.nn.dot import DotInteraction

DHEN_MODULES = ("dot", "dcn")
DHEN_ENSEMBLES = ("concat_linear", "sum")


class DHENLayer(nn.Module):
  """`X' = LayerNorm(Ensemble_i Module_i(X) + ShortCut(X))`, token count kept (N_out = N_in).

  Attributes:
    module_types: interaction modules, each of "dot" | "dcn".
    ensemble: "concat_linear" (concat module outputs on the embedding axis, Linear to d; default) or "sum".
    dcn_layers, dcn_low_rank: settings of the DCN module.
  ShortCut is the identity, because shapes match (our choice).

  Raises:
    ConfigError: unknown module type or ensemble.
  Source: Zhang et al., DHEN (2022); InterFormer spec §4 (DHEN layer).
  """
  module_types: Sequence[str] = ("dot", "dcn")
  ensemble: str = "concat_linear"
  dcn_layers: int = 2
  dcn_low_rank: int | None = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, d] -> [B, N, d]."""
    if self.ensemble not in DHEN_ENSEMBLES:
      raise ConfigError(f"dhen_ensemble={self.ensemble!r} is not one of {DHEN_ENSEMBLES}")
    if not self.module_types:
      raise ConfigError(f"dhen_modules is empty; allowed entries: {DHEN_MODULES}")
    x = x.astype(self.dtype)
    d = x.shape[-1]
    outs = []
    for i, t in enumerate(self.module_types):
      if t == "dot":
        outs.append(DotInteraction(dtype=self.dtype, name=f"dot_{i}")(x))
      elif t == "dcn":
        outs.append(DCNInteraction(num_layers=self.dcn_layers, low_rank=self.dcn_low_rank,
                                   dtype=self.dtype, name=f"dcn_{i}")(x))
      else:
        raise ConfigError(f"dhen_modules entry {t!r} is not one of {DHEN_MODULES}")
    if self.ensemble == "concat_linear":
      y = dense(d, ("mlp", "embed"), dtype=self.dtype, name="ensemble")(jnp.concatenate(outs, axis=-1))
    else:
      y = sum(outs[1:], outs[0])
    return layer_norm(dtype=self.dtype, name="ln")(y + x)


class DHEN(nn.Module):
  """A stack of `num_layers` DHENLayers; x [B, N, d] -> [B, N, d]. Source: DHEN; spec §4."""
  num_layers: int = 1
  module_types: Sequence[str] = ("dot", "dcn")
  ensemble: str = "concat_linear"
  dcn_layers: int = 2
  dcn_low_rank: int | None = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = DHENLayer(tuple(self.module_types), self.ensemble, self.dcn_layers, self.dcn_low_rank,
                    self.dtype, name=f"layer_{i}")(x)
    return x
