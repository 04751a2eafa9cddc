"""Personalized FFN (PFFN): a context-generated linear map applied to every sequence token."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.nn.common import Dtype, partitioned
from recjax.nn.mlp import MLP

PFFN_FORMS = ("appendix", "mlp")


class PFFN(nn.Module):
  """`PFFN(X_sum, S)`: a d×d projection of S generated from the context summary X_sum.

  - form "appendix" (default): `(S · Wᵀ) · X_sum` with param `kernel` W [n_sum, d] (logical axes
    ("tokens", "embed")). This is linear attention with static keys W, values X_sum, identity
    activation (GDPA with act = identity, d_ff = n_sum).
  - form "mlp": `S · M`, M = reshape(MLP(flatten X_sum), [d, d]) with MLP n_sum*d -> d -> d*d (SiLU),
    scaled by 1/√d; much larger.

  Raises:
    ConfigError: unknown form.
  Source: InterFormer §3.4 and appendix (W_PFFN = X_sum · W), spec §5.1.
  """
  form: str = "appendix"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s: jax.Array, x_sum: jax.Array) -> jax.Array:
    """s [B, L, d], x_sum [B, n_sum, d] -> [B, L, d]."""
    s, x_sum = s.astype(self.dtype), x_sum.astype(self.dtype)
    b, n_sum, d = x_sum.shape
    if self.form == "appendix":
      init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=0)
      w = self.param("kernel", partitioned(init, ("tokens", "embed")), (n_sum, d), jnp.float32)
      a = jnp.einsum("bld,jd->blj", s, w.astype(self.dtype))
      return jnp.einsum("blj,bjd->bld", a, x_sum)
    if self.form == "mlp":
      m = MLP((d, d * d), dtype=self.dtype, name="mlp")(x_sum.reshape(b, n_sum * d)).reshape(b, d, d)
      return jnp.einsum("bld,bde->ble", s, m) / jnp.sqrt(jnp.asarray(d, self.dtype))
    raise ConfigError(f"pffn_form={self.form!r} is not one of {PFFN_FORMS}")
