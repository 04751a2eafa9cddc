"""The integer-threshold dropout: keep rate, scaling, determinism per key, identity at eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.nn.dropout import Dropout


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_fraction_and_scaling(rate):
  x = jnp.ones((400, 500))
  y = Dropout(rate).apply({}, x, train=True, rngs={"dropout": jax.random.key(0, impl="rbg")})
  y = np.asarray(y)
  kept = y != 0
  # 200,000 Bernoulli(1 - rate) draws: the kept fraction is within 5 standard deviations of 1 - rate.
  sd = np.sqrt(rate * (1 - rate) / x.size)
  assert abs(kept.mean() - (1 - rate)) < 5 * sd
  np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)


def test_identity_at_eval_and_rate_zero():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(Dropout(0.3).apply({}, x, train=False), x)
  np.testing.assert_array_equal(Dropout(0.0).apply({}, x, train=True), x)


def test_same_key_same_mask_other_key_other_mask():
  x = jnp.ones((64, 64))
  f = lambda k: np.asarray(Dropout(0.5).apply({}, x, train=True, rngs={"dropout": k}))
  np.testing.assert_array_equal(f(jax.random.key(3)), f(jax.random.key(3)))
  assert (f(jax.random.key(3)) != f(jax.random.key(4))).any()
