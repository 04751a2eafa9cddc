"""MHA, RoPE and PMA: masks, the RoPE relative property, and a numpy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recjax.nn.attention import PMA, MultiHeadAttention, apply_rope, rope_cos_sin

RNG = np.random.default_rng(1)


def _ref_mha(p, xq, xkv, mask):
  q = np.einsum("bld,dhk->blhk", xq, p["query"])
  k = np.einsum("bld,dhk->blhk", xkv, p["key"])
  v = np.einsum("bld,dhk->blhk", xkv, p["value"])
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  s = np.where(mask[:, None, None, :], s, -np.inf)
  w = np.exp(s - s.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  o = np.einsum("bhqk,bkhd->bqhd", w, v)
  return np.einsum("bqhd,hde->bqe", o, p["out"]) + p["out_bias"], w


def test_mha_matches_numpy_and_padded_keys_get_zero_weight():
  x = RNG.normal(size=(2, 5, 8)).astype(np.float32)
  mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  m = MultiHeadAttention(num_heads=2)
  v = m.init(jax.random.key(0), x, x, mask)
  p = jax.tree.map(np.asarray, nn.meta.unbox(v["params"]))
  out, w = m.apply(v, x, x, mask, return_weights=True)
  want, wref = _ref_mha(p, x, x, mask)
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(w), wref, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(w)[0, :, :, :2] == 0.0)
  # Changing padded keys/values does not change any output.
  x2 = x.copy()
  x2[0, :2] = RNG.normal(size=(2, 8)) * 10
  out2 = m.apply(v, x, x2, mask)
  np.testing.assert_allclose(np.asarray(out2), np.asarray(out), rtol=1e-6, atol=1e-6)


def test_rope_scores_depend_only_on_offset():
  hd, length = 8, 7
  q = jnp.broadcast_to(jnp.asarray(RNG.normal(size=(hd,)), jnp.float32), (1, length, 1, hd))
  k = jnp.broadcast_to(jnp.asarray(RNG.normal(size=(hd,)), jnp.float32), (1, length, 1, hd))
  cos, sin = rope_cos_sin(jnp.arange(length), hd)
  s = np.asarray(jnp.einsum("bqhd,bkhd->qk", apply_rope(q, cos, sin), apply_rope(k, cos, sin)))
  # Toeplitz: every diagonal is constant, and the scores differ across offsets.
  for off in range(-length + 1, length):
    diag = np.diagonal(s, offset=off)
    np.testing.assert_allclose(diag, diag[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(s[0, 0], s[0, 3])
  # Rotation preserves norms; unrotated tokens are unchanged.
  np.testing.assert_allclose(np.linalg.norm(apply_rope(q, cos, sin), axis=-1), np.linalg.norm(q, axis=-1),
                             rtol=1e-5)
  rot = jnp.arange(length) >= 3
  cos2, sin2 = rope_cos_sin(jnp.arange(length), hd, rot)
  np.testing.assert_array_equal(np.asarray(apply_rope(q, cos2, sin2))[:, :3], np.asarray(q)[:, :3])


def test_rope_rotation_closed_form():
  # Pair (i, i + hd/2) is rotated by angle pos * base^(-2i/hd).
  hd = 4
  x = jnp.asarray([[[[1.0, 0.0, 0.0, 0.0]]]])
  cos, sin = rope_cos_sin(jnp.asarray([2]), hd, base=100.0)
  got = np.asarray(apply_rope(x, cos, sin))[0, 0, 0]
  np.testing.assert_allclose(got, [np.cos(2.0), 0.0, np.sin(2.0), 0.0], atol=1e-6)


def test_pma_ignores_padding_and_has_seed_outputs():
  s = RNG.normal(size=(3, 6, 8)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], bool)
  m = PMA(num_seeds=2, num_heads=2)
  v = m.init(jax.random.key(0), s, mask)
  out = np.asarray(m.apply(v, s, mask))
  assert out.shape == (3, 2, 8)
  s2 = s.copy()
  s2[~mask] = 99.0
  np.testing.assert_allclose(np.asarray(m.apply(v, s2, mask)), out, rtol=1e-6, atol=1e-6)
  # Equals plain MHA with the seeds as queries (numpy reference).
  p = jax.tree.map(np.asarray, nn.meta.unbox(v["params"]))
  q = np.broadcast_to(p["seeds"][None], (3, 2, 8))
  want, _ = _ref_mha(p["mha"], q, s, mask)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
