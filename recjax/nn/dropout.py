"""Dropout that draws one raw 32-bit word per element and compares it with an integer threshold.

`flax.linen.Dropout` turns random bits into uniform floats first (`jax.random.bernoulli`); on XLA:CPU that
conversion costs about 5× the bit generation itself (373 ms vs 66 ms for 11M elements), and attention-weight
dropout was the largest single cost of an InterFormer train step. Keeping an element iff its word is
>= round(rate · 2³²) gives the same keep probability up to 2⁻³² (our choice).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
  """Inverted dropout: zeroes each element with probability `rate`, scales the rest by 1 / (1 − rate).

  Attributes:
    rate: drop probability in [0, 1).
    rng_collection: the RNG stream, "dropout".

  Call: `(x [...], *, train: bool) -> [...]` in x's dtype; identity when not training or rate == 0.
  """
  rate: float
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"dropout rate must be in [0, 1), got {self.rate}")
    threshold = jnp.uint32(min(round(self.rate * 2**32), 2**32 - 1))
    bits = jax.random.bits(self.make_rng(self.rng_collection), x.shape, jnp.uint32)
    return jnp.where(bits >= threshold, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))
