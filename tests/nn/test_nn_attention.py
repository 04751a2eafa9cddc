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


def test_rope_gradient_is_the_inverse_rotation():
  # d/dx <g, R x> = Rᵀ g, and Rᵀ rotates each pair (i, i + hd/2) by the opposite angle: checked against
  # the closed form in numpy, with some tokens left unrotated.
  hd, length = 6, 5
  x = jnp.asarray(RNG.normal(size=(2, length, 3, hd)), jnp.float32)
  g = RNG.normal(size=(2, length, 3, hd)).astype(np.float32)
  pos = jnp.arange(length)
  cos, sin = rope_cos_sin(pos, hd, pos >= 2)
  _, vjp = jax.vjp(lambda x: apply_rope(x, cos, sin), x)
  c, s = np.asarray(cos)[None, :, None, :], np.asarray(sin)[None, :, None, :]
  g1, g2 = g[..., :hd // 2], g[..., hd // 2:]
  want = np.concatenate([g1 * c + g2 * s, g2 * c - g1 * s], axis=-1)
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0])[:, :2], g[:, :2])


def _ref_mha_jnp(p, xq, xkv, mask, pos):
  """MultiHeadAttention written with plain autodiff-able jnp ops (no custom VJPs, three projections)."""
  hd = p["query"].shape[-1]
  inv = 10000.0 ** (-jnp.arange(0, hd // 2, dtype=jnp.float32) * 2.0 / hd)
  ang = pos.astype(jnp.float32)[:, None] * inv
  cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]

  def rope(t):
    t1, t2 = t[..., :hd // 2], t[..., hd // 2:]
    return jnp.concatenate([t1 * cos - t2 * sin, t2 * cos + t1 * sin], axis=-1)

  q = rope(jnp.einsum("bld,dhk->blhk", xq, p["query"]))
  k = rope(jnp.einsum("bld,dhk->blhk", xkv, p["key"]))
  v = jnp.einsum("bld,dhk->blhk", xkv, p["value"])
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd)
  w = jax.nn.softmax(jnp.where(mask[:, None, None, :], s, -1e30), axis=-1)
  o = jnp.einsum("bhqk,bkhd->bqhd", w, v)
  return jnp.einsum("bqhd,hde->bqe", o, p["out"]) + p["out_bias"]


def test_mha_gradients_match_plain_autodiff_for_self_and_cross_attention():
  # Self-attention takes the one-product Q/K/V path, cross-attention the Q + KV path; both with RoPE.
  b, length, d = 2, 6, 8
  mask = jnp.asarray([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
  pos = jnp.arange(length)
  xq = jnp.asarray(RNG.normal(size=(b, length, d)), jnp.float32)
  xkv = jnp.asarray(RNG.normal(size=(b, length, d)), jnp.float32)
  gy = jnp.asarray(RNG.normal(size=(b, length, d)), jnp.float32)
  m = MultiHeadAttention(num_heads=2)
  params = nn.meta.unbox(m.init(jax.random.key(0), xq, xkv, mask)["params"])
  for self_attention in (True, False):
    def ours(p, xq, xkv):
      kv = xq if self_attention else xkv
      y = m.apply({"params": p}, xq, kv, mask, q_positions=pos, k_positions=pos)
      return jnp.sum(y * gy)

    def ref(p, xq, xkv):
      return jnp.sum(_ref_mha_jnp(p, xq, xq if self_attention else xkv, mask, pos) * gy)

    got = jax.grad(ours, argnums=(0, 1, 2))(params, xq, xkv)
    want = jax.grad(ref, argnums=(0, 1, 2))(params, xq, xkv)
    for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=2e-4, atol=2e-5)
