"""The hashed-position dropout: keep rate, scaling, independence of masks, determinism per key, eval identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.nn.dropout import Dropout, _fmix32, hash_bits


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_fraction_and_scaling(rate):
  x = jnp.ones((400, 500))
  y = Dropout(rate).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
  y = np.asarray(y)
  kept = y != 0
  # 200,000 Bernoulli(1 - rate) draws: the kept fraction is within 5 standard deviations of 1 - rate.
  sd = np.sqrt(rate * (1 - rate) / x.size)
  assert abs(kept.mean() - (1 - rate)) < 5 * sd
  np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)


def test_fmix32_matches_murmur3_reference():
  # MurmurHash3 fmix32 written out in Python integers (mod 2**32), on a few hand-picked words.
  def ref(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    return h ^ (h >> 16)
  words = [0, 1, 2, 0xDEADBEEF, 2**32 - 1, 123456789]
  got = np.asarray(_fmix32(jnp.asarray(words, jnp.uint32)))
  assert got.tolist() == [ref(w) for w in words]
  assert ref(0) == 0 and ref(1) == 0x514E28B7  # published fmix32 test value for 1


def test_bits_are_uniform_and_uncorrelated():
  bits = np.asarray(hash_bits(jax.random.key(7), (256, 1024))).astype(np.float64) / 2**32
  n = bits.size
  # Uniform on [0, 1): mean 1/2 (sd 1/sqrt(12 n)); each of the 16 bins holds n/16 ± 5 sd.
  assert abs(bits.mean() - 0.5) < 5 / np.sqrt(12 * n)
  counts = np.histogram(bits, bins=16, range=(0, 1))[0]
  assert np.all(np.abs(counts - n / 16) < 5 * np.sqrt(n / 16 * (15 / 16)))
  # Neighbours along a row and along a column are uncorrelated (|r| < 5 / sqrt(n)).
  for a, b in [(bits[:, :-1], bits[:, 1:]), (bits[:-1], bits[1:])]:
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert abs(r) < 5 / np.sqrt(a.size)


def test_masks_of_different_keys_are_independent():
  x = jnp.ones((200, 500))
  f = lambda k: np.asarray(Dropout(0.5).apply({}, x, train=True, rngs={"dropout": k})) != 0
  keys = jax.random.split(jax.random.key(11), 4)
  masks = [f(k) for k in keys]
  # Two independent Bernoulli(1/2) masks agree on half the positions (sd 0.5 / sqrt(n)).
  for i in range(4):
    for j in range(i + 1, 4):
      assert abs((masks[i] == masks[j]).mean() - 0.5) < 5 * 0.5 / np.sqrt(x.size)


def test_same_key_same_mask_other_key_other_mask():
  x = jnp.ones((64, 64))
  f = lambda k: np.asarray(Dropout(0.5).apply({}, x, train=True, rngs={"dropout": k}))
  np.testing.assert_array_equal(f(jax.random.key(3)), f(jax.random.key(3)))
  assert (f(jax.random.key(3)) != f(jax.random.key(4))).any()


def test_identity_at_eval_and_rate_zero():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(Dropout(0.3).apply({}, x, train=False), x)
  np.testing.assert_array_equal(Dropout(0.0).apply({}, x, train=True), x)


def test_bad_rate_raises():
  with pytest.raises(ValueError, match="rate"):
    Dropout(1.0).apply({}, jnp.ones(3), train=False)
