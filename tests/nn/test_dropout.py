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


def _fmix32_reference(h: int) -> int:
  """MurmurHash3's fmix32 written out in Python integers (mod 2**32)."""
  h ^= h >> 16
  h = (h * 0x85EBCA6B) % 2**32
  h ^= h >> 13
  h = (h * 0xC2B2AE35) % 2**32
  return h ^ (h >> 16)


def test_fmix32_matches_murmur3_reference():
  words = [0, 1, 2, 0xDEADBEEF, 2**32 - 1, 123456789]
  got = np.asarray(_fmix32(jnp.asarray(words, jnp.uint32)))
  assert got.tolist() == [_fmix32_reference(w) for w in words]
  assert _fmix32_reference(0) == 0 and _fmix32_reference(1) == 0x514E28B7  # published fmix32 value for 1


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


def _hash_reference(k0, k1, n):
  """h = fmix32(fmix32(p ^ k0) ^ k1) for positions p = 0..n-1, in Python integers."""
  return [_fmix32_reference(_fmix32_reference(p ^ k0) ^ k1) for p in range(n)]


@pytest.mark.parametrize("shape", [(3, 7, 5), (), (4, 0, 3), (11,)])
def test_hash_bits_is_the_documented_formula_in_row_major_order(shape):
  key = jax.random.key(5)
  k0, k1 = (int(w) for w in np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
  n = int(np.prod(shape))
  want = np.asarray(_hash_reference(k0, k1, n), np.uint64).reshape(shape)
  np.testing.assert_array_equal(np.asarray(hash_bits(key, shape)).astype(np.uint64), want)
  np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: hash_bits(k, shape))(key)).astype(np.uint64), want)


def test_too_many_elements_raise_without_allocating():
  with pytest.raises(ValueError, match="2\\*\\*32"):
    hash_bits(jax.random.key(0), (65536, 65537))


def test_bfloat16_kept_values_are_correctly_rounded():
  x = jax.random.normal(jax.random.key(0), (4096,)).astype(jnp.bfloat16)
  y = Dropout(0.1).apply({}, x, train=True, rngs={"dropout": jax.random.key(1)})
  kept = np.asarray(y != 0) & np.asarray(x != 0)
  # x / 0.9 in float64, rounded once to bfloat16. Dividing by bf16(0.9) = 0.8984 instead misrounds ~1/3 of them.
  want = jnp.asarray(np.asarray(x, np.float64) / 0.9, jnp.float32).astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(y, np.float32)[kept], np.asarray(want, np.float32)[kept])
  assert 0.85 < kept.mean() < 0.95


def test_gradient_is_the_same_mask_scaled():
  # d/dx Σ w·dropout(x) = w·mask/(1 − rate), with the mask read off the forward output (x has no zeros).
  x = jax.random.normal(jax.random.key(0), (64, 33)) + 5.0
  w = jax.random.normal(jax.random.key(1), (64, 33))
  drop = lambda x: Dropout(0.3).apply({}, x, train=True, rngs={"dropout": jax.random.key(2)})
  mask = np.asarray(drop(x) != 0)
  g = jax.grad(lambda x: jnp.sum(w * drop(x)))(x)
  np.testing.assert_allclose(g, np.where(mask, np.asarray(w) / 0.7, 0.0), rtol=1e-6)
  assert 0.6 < mask.mean() < 0.8


SHARDED_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from recjax.nn.dropout import Dropout
f = jax.jit(lambda x, k: Dropout(0.3).apply({}, x, train=True, rngs={"dropout": k}))
key = jax.random.key(9)
x = jax.random.normal(jax.random.key(1), (8, 4, 12, 12))
ref = np.asarray(f(x, key))
m1 = Mesh(np.array(jax.devices()), ("d",))
m2 = Mesh(np.array(jax.devices()).reshape(2, 2), ("d", "m"))
out = {}
for name, mesh, spec in [("rows", m1, P("d")), ("inner", m1, P(None, None, "d")), ("2d", m2, P("d", "m"))]:
  xs = jax.device_put(x, NamedSharding(mesh, spec))
  out[name] = bool(np.array_equal(np.asarray(f(xs, key)), ref))
out["devices"] = len(jax.devices())
out["dropped"] = float((ref == 0).mean())
print(json.dumps(out))
"""


def test_masks_are_the_same_on_any_mesh(run_json_on_cpu_devices):
  """Sharding x over 4 simulated CPU devices along the batch, an inner axis, or two axes leaves the mask
  unchanged (positions are global)."""
  out = run_json_on_cpu_devices(["-c", SHARDED_SCRIPT], devices=4)
  assert out["devices"] == 4
  assert out["rows"] and out["inner"] and out["2d"]
  assert 0.25 < out["dropped"] < 0.35  # 4,608 elements at rate 0.3
