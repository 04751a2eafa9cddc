"""Self-gating of a token set (InterFormer Cross Arch, spec §3.2)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.nn.common import Dtype
from recjax.nn.mlp import MLP

GATING_FORMS = ("x_sigmoid", "paper_literal")
GATING_MLP_MODES = ("per_token", "flatten")


class SelfGating(nn.Module):
  """Self-gate `Z` by an MLP of itself.

  - form "x_sigmoid" (default, our choice / unofficial ports): `Z ⊙ σ(MLP_g(Z))`.
  - form "paper_literal" (v4 LaTeX read literally): `σ(Z ⊙ MLP_g(Z))`.
  - mlp_mode "per_token": MLP_g is d -> d -> d with SiLU, shared by all tokens (our choice);
    "flatten": MLP_g acts on the flattened N*d vector, N*d -> N*d -> N*d.

  Raises:
    ConfigError: unknown `form` or `mlp_mode`.
  Source: InterFormer §3.2 (Gating), spec §3.2.
  """
  form: str = "x_sigmoid"
  mlp_mode: str = "per_token"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z [B, N, d] -> [B, N, d]."""
    if self.form not in GATING_FORMS:
      raise ConfigError(f"gating={self.form!r} is not one of {GATING_FORMS}")
    if self.mlp_mode not in GATING_MLP_MODES:
      raise ConfigError(f"gating_mlp={self.mlp_mode!r} is not one of {GATING_MLP_MODES}")
    z = z.astype(self.dtype)
    b, n, d = z.shape
    if self.mlp_mode == "per_token":
      g = MLP((d, d), dtype=self.dtype, name="mlp")(z)
    else:
      g = MLP((n * d, n * d), dtype=self.dtype, name="mlp")(z.reshape(b, n * d)).reshape(b, n, d)
    if self.form == "x_sigmoid":
      return z * nn.sigmoid(g)
    return nn.sigmoid(z * g)
