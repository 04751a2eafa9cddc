"""greedy_map / greedy_map_window / greedy_map_lowrank / dpp_kernel against brute-force oracles.

The oracle is written here from the definition (spec §2-§3): at every step, pick the argmax over unselected
candidates of det(L_{W∪{i}}) / det(L_W) computed with numpy.linalg.slogdet, where W is the whole selection
(Algorithm 1) or its last `window − 1` picks (Algorithm 2); stop when the best gain < eps (the first pick is
accepted unchecked).

Every test runs twice, once per greedy_map implementation (the native CPU kernel and XLA ops).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.rerank import dpp
from recjax.rerank.dpp import dpp_kernel, greedy_map_lowrank, greedy_map_window

greedy_map = dpp.greedy_map  # replaced per test by the `impl` fixture below


@pytest.fixture(autouse=True, params=["native", "xla"])
def impl(request, monkeypatch):
  """Runs the test with `greedy_map` bound to one implementation."""
  monkeypatch.setitem(globals(), "greedy_map", functools.partial(dpp.greedy_map, impl=request.param))
  return request.param


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def brute_greedy(L, k, eps=1e-10, window=None, mask=None, gain_lt_one=False):
  """Returns (indices [k] with -1 after the stop, valid [k])."""
  L = np.asarray(L, np.float64)
  m = L.shape[0]
  avail = np.ones(m, bool) if mask is None else np.asarray(mask, bool).copy()
  picks = []
  idx, valid = np.full(k, -1), np.zeros(k, bool)
  for t in range(k):
    w = picks if window is None else picks[max(0, len(picks) - (window - 1)):]
    _, base = np.linalg.slogdet(L[np.ix_(w, w)]) if w else (1.0, 0.0)
    gains = np.full(m, -np.inf)
    for i in np.flatnonzero(avail):
      sub = w + [i]
      sign, logdet = np.linalg.slogdet(L[np.ix_(sub, sub)])
      gains[i] = sign * np.exp(logdet - base)
    j = int(np.argmax(gains))
    thresh = 1.0 if gain_lt_one else eps
    if gains[j] == -np.inf or ((t > 0 or gain_lt_one) and gains[j] < thresh):
      break
    picks.append(j)
    avail[j] = False
    idx[t], valid[t] = j, True
  return idx, valid


def gram(rng, m, d, scale=None):
  f = rng.normal(size=(m, d))
  q = np.exp(rng.normal(size=m) * 0.5) if scale is None else scale
  return (q[:, None] * f) @ (q[:, None] * f).T / d


def assert_same(got, want):
  gi, gv = (np.asarray(a) for a in got)
  wi, wv = want
  np.testing.assert_array_equal(gv, wv)
  np.testing.assert_array_equal(gi[gv], wi[wv])
  assert gi.dtype == np.int32 and gv.dtype == np.bool_


@pytest.mark.parametrize("seed", range(20))
def test_full_rank_matches_brute_force(x64, seed):
  rng = np.random.default_rng(seed)
  m = int(rng.integers(20, 61))
  L = gram(rng, m, m + 10)
  k = 16
  got = greedy_map(jnp.asarray(L), k)
  assert_same(got, brute_greedy(L, k))
  assert np.asarray(got[1]).all()


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_low_rank_stops_at_rank(x64, rank):
  rng = np.random.default_rng(rank)
  L = gram(rng, 40, rank)
  got = greedy_map(jnp.asarray(L), 12)
  assert_same(got, brute_greedy(L, 12))
  assert int(np.asarray(got[1]).sum()) == rank
  # valid is a prefix
  v = np.asarray(got[1])
  assert v[:rank].all() and not v[rank:].any()


def test_duplicated_items(x64):
  rng = np.random.default_rng(3)
  base = gram(rng, 20, 30)
  # Exact duplicates (bitwise-equal rows and columns), some twice, at shuffled positions.
  src = rng.permutation(np.concatenate([np.arange(20), [0, 4, 4, 9], np.arange(10)]))
  L = base[np.ix_(src, src)]
  got = greedy_map(jnp.asarray(L), 25)
  want = brute_greedy(L, 25)
  assert_same(got, want)
  # 20 distinct items of full rank: exactly 20 valid, and no item picked together with its duplicate.
  gi, gv = (np.asarray(a) for a in got)
  assert gv.sum() == 20
  assert len(np.unique(src[gi[gv]])) == 20


def test_ties_go_to_lowest_index(x64):
  L = np.eye(6) * np.array([1.0, 2.0, 2.0, 1.0, 2.0, 0.5])
  idx, valid = greedy_map(jnp.asarray(L), 6)
  np.testing.assert_array_equal(np.asarray(idx), [1, 2, 4, 0, 3, 5])
  assert np.asarray(valid).all()


@pytest.mark.parametrize("seed", range(4))
def test_candidate_mask(x64, seed):
  rng = np.random.default_rng(100 + seed)
  L = gram(rng, 40, 50)
  mask = rng.random(40) < 0.5
  k = min(12, int(mask.sum()) + 2)
  got = greedy_map(jnp.asarray(L), k, candidate_mask=jnp.asarray(mask))
  want = brute_greedy(L, k, mask=mask)
  assert_same(got, want)
  gi, gv = (np.asarray(a) for a in got)
  assert mask[gi[gv]].all()
  # Masked-out rows may hold garbage (padding): results are unchanged.
  L2 = L.copy()
  L2[~mask, :] = np.nan
  L2[:, ~mask] = 1e30
  assert_same(greedy_map(jnp.asarray(L2), k, candidate_mask=jnp.asarray(mask)), want)


def test_all_masked_gives_no_valid(x64):
  L = np.eye(5)
  idx, valid = greedy_map(jnp.asarray(L), 3, candidate_mask=jnp.zeros(5, bool))
  assert not np.asarray(valid).any()
  np.testing.assert_array_equal(np.asarray(idx), [-1, -1, -1])


def test_first_pick_unchecked_and_eps(x64):
  L = np.diag([1e-12, 5e-13, 2e-13])
  idx, valid = greedy_map(jnp.asarray(L), 3)
  np.testing.assert_array_equal(np.asarray(valid), [True, False, False])
  assert int(idx[0]) == 0
  # eps_mode="relative": threshold eps * max L_ii = 0.3 * 1e-12
  idx, valid = greedy_map(jnp.asarray(L), 3, eps=0.3, eps_mode="relative")
  np.testing.assert_array_equal(np.asarray(valid), [True, True, False])


def test_gain_lt_one_stop_rule(x64):
  rng = np.random.default_rng(7)
  L = gram(rng, 30, 40, scale=np.exp(rng.normal(size=30)))
  got = greedy_map(jnp.asarray(L), 15, stop_rule="gain_lt_one")
  want = brute_greedy(L, 15, gain_lt_one=True)
  assert 0 < want[1].sum() < 15
  assert_same(got, want)


@pytest.mark.parametrize("theta", [0.0, 0.02, 0.98])
def test_dpp_kernel_theta(x64, theta):
  rng = np.random.default_rng(11)
  m, d = 30, 60
  feats = rng.normal(size=(m, d))
  scores = rng.permutation(m) * 0.1  # well separated relative to 1/alpha at theta near 1
  L = np.asarray(dpp_kernel(jnp.asarray(scores), jnp.asarray(feats), theta))
  fn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  alpha = theta / (2 * (1 - theta))
  want = np.exp(alpha * scores)[:, None] * (fn @ fn.T) * np.exp(alpha * scores)[None, :]
  np.testing.assert_allclose(L, want, rtol=1e-12)
  got = greedy_map(jnp.asarray(L), 10)
  assert_same(got, brute_greedy(L, 10))
  if theta == 0.0:  # pure diversity: the kernel is S itself, so the greedy above is volume greedy on S
    np.testing.assert_allclose(L, fn @ fn.T, rtol=1e-12, atol=1e-14)
  if theta > 0.9:  # pure relevance: score order
    np.testing.assert_array_equal(np.asarray(got[0]), np.argsort(-scores)[:10])


def test_dpp_kernel_exact_unit_diagonal_breaks_ties_by_index(x64):
  """Equal scores at θ = 0: every L_ii is exactly 1, so the first pick is item 0 (lowest index), not the
  item whose ‖f‖² happened to round up; an all-zero feature row gives L_ii = 0."""
  feats = np.random.default_rng(2).normal(size=(30, 6))
  feats[5] = 0.0
  L = np.asarray(dpp_kernel(jnp.zeros(30), jnp.asarray(feats), 0.0))
  want = np.ones(30)
  want[5] = 0.0
  np.testing.assert_array_equal(np.diag(L), want)
  assert int(greedy_map(jnp.asarray(L), 3)[0][0]) == 0
  assert int(greedy_map(jnp.asarray(L), np.int64(3))[0][0]) == 0  # NumPy integers are accepted as k


def test_dpp_kernel_center_only_rescales(x64):
  rng = np.random.default_rng(12)
  feats, scores = rng.normal(size=(20, 8)), rng.normal(size=20) * 3
  a = np.asarray(dpp_kernel(scores, feats, 0.7))
  b = np.asarray(dpp_kernel(scores, feats, 0.7, center=True))
  alpha = 0.7 / 0.6
  np.testing.assert_allclose(b * np.exp(2 * alpha * scores.max()), a, rtol=1e-10)


@pytest.mark.parametrize("window", [1, 2, 3, 5, 8])
def test_window_matches_brute_force(x64, window):
  for seed in range(3):
    rng = np.random.default_rng(1000 * window + seed)
    L = gram(rng, 36, 50)
    got = greedy_map_window(jnp.asarray(L), 20, window)
    assert_same(got, brute_greedy(L, 20, window=window))


def test_window_degenerate_and_masked(x64):
  rng = np.random.default_rng(5)
  # rank 4 < window - 1: the window spans the column space, so the stop fires like Algorithm 1.
  L = gram(rng, 30, 4)
  got = greedy_map_window(jnp.asarray(L), 12, 6)
  assert_same(got, brute_greedy(L, 12, window=6))
  assert np.asarray(got[1]).sum() == 4
  # rank 6, window 3: items leave the window, so more than rank-many picks are valid.
  L = gram(rng, 30, 6)
  mask = rng.random(30) < 0.8
  got = greedy_map_window(jnp.asarray(L), 15, 3, candidate_mask=jnp.asarray(mask))
  want = brute_greedy(L, 15, window=3, mask=mask)
  assert_same(got, want)
  assert want[1].sum() > 6


def test_window_large_equals_full(x64):
  rng = np.random.default_rng(9)
  L = gram(rng, 40, 50)
  a = greedy_map_window(jnp.asarray(L), 15, 15)
  b = greedy_map(jnp.asarray(L), 15)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_batched_equals_loop_with_padding(x64):
  rng = np.random.default_rng(21)
  r, m, k = 5, 32, 10
  Ls, masks = [], []
  for i in range(r):
    mi = int(rng.integers(12, m + 1))  # request i has mi real candidates, padded to m
    L = np.zeros((m, m))
    L[:mi, :mi] = gram(rng, mi, 40)
    Ls.append(L)
    masks.append(np.arange(m) < mi)
  Ls, masks = np.stack(Ls), np.stack(masks)
  bi, bv = greedy_map(jnp.asarray(Ls), k, candidate_mask=jnp.asarray(masks))
  wi, wv = greedy_map_window(jnp.asarray(Ls), k, 4, candidate_mask=jnp.asarray(masks))
  assert bi.shape == (r, k) and bv.shape == (r, k)
  for i in range(r):
    mi = masks[i].sum()
    assert_same((bi[i], bv[i]), brute_greedy(Ls[i][:mi, :mi], k))
    si, sv = greedy_map(jnp.asarray(Ls[i]), k, candidate_mask=jnp.asarray(masks[i]))
    np.testing.assert_array_equal(np.asarray(bi[i]), np.asarray(si))
    np.testing.assert_array_equal(np.asarray(bv[i]), np.asarray(sv))
    si, sv = greedy_map_window(jnp.asarray(Ls[i]), k, 4, candidate_mask=jnp.asarray(masks[i]))
    np.testing.assert_array_equal(np.asarray(wi[i]), np.asarray(si))
    np.testing.assert_array_equal(np.asarray(wv[i]), np.asarray(sv))


def test_chunked_batch_with_remainder(x64):
  """R = 19 runs as two full chunks of 8 and a remainder of 3; every request must match its own oracle."""
  rng = np.random.default_rng(23)
  r, m, k = 19, 24, 9
  Ls = np.stack([gram(rng, m, int(rng.integers(5, 30))) for _ in range(r)])
  masks = rng.random((r, m)) < 0.85
  bi, bv = greedy_map(jnp.asarray(Ls), k, candidate_mask=jnp.asarray(masks))
  f = rng.normal(size=(r, m, 6))
  q = np.exp(rng.normal(size=(r, m)) * 0.5)
  li, lv = greedy_map_lowrank(jnp.asarray(f), jnp.asarray(q), k, candidate_mask=jnp.asarray(masks))
  for i in range(r):
    assert_same((bi[i], bv[i]), brute_greedy(Ls[i], k, mask=masks[i]))
    full = q[i][:, None] * (f[i] @ f[i].T) * q[i][None, :]
    assert_same((li[i], lv[i]), brute_greedy(full, k, mask=masks[i]))


MESH_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from recjax.rerank.dpp import greedy_map, greedy_map_lowrank
rng = np.random.default_rng(0)
r, m, k = 24, 40, 12
f = rng.normal(size=(r, m, 16)).astype(np.float32)
q = np.exp(0.3 * rng.normal(size=(r, m))).astype(np.float32)
L = np.einsum("rm,rmd,rnd,rn->rmn", q, f, f, q)
mask = rng.random((r, m)) < 0.9
mesh = jax.make_mesh((8,), ("requests",))
out = {}
for name, kw in (("one", {}), ("mesh", {"mesh": mesh})):
  i, v = greedy_map(jnp.asarray(L), k, candidate_mask=jnp.asarray(mask), impl=sys.argv[1], **kw)
  li, lv = greedy_map_lowrank(jnp.asarray(f), jnp.asarray(q), k, candidate_mask=jnp.asarray(mask), **kw)
  out[name] = [np.asarray(a).tolist() for a in (i, v, li, lv)]
try:
  greedy_map(jnp.asarray(L[:20]), k, mesh=mesh)
  out["error"] = None
except ValueError as e:
  out["error"] = str(e)
out["devices"] = len(jax.devices())
print(json.dumps(out))
"""


def test_mesh_sharded_requests_match_single_device(run_json_on_cpu_devices, impl):
  """Requests split over 8 simulated CPU devices (shard_map) give the same picks as one device."""
  out = run_json_on_cpu_devices(["-c", MESH_SCRIPT, impl], devices=8)
  assert out["devices"] == 8
  assert out["mesh"] == out["one"]
  assert sum(map(sum, out["one"][1])) > 24 * 6  # most requests fill several valid picks
  assert "divisible by the mesh size 8" in out["error"]


def test_jit_and_vmap_compose(x64):
  rng = np.random.default_rng(22)
  Ls = jnp.asarray(np.stack([gram(rng, 24, 30) for _ in range(3)]))
  want = greedy_map(Ls, 8)
  got_jit = jax.jit(lambda L: greedy_map(L, 8))(Ls)
  got_vmap = jax.vmap(lambda L: greedy_map(L, 8))(Ls)
  got_w = jax.jit(jax.vmap(lambda L: greedy_map_window(L, 8, 3)))(Ls)
  for got in (got_jit, got_vmap):
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  for i in range(3):
    assert_same((got_w[0][i], got_w[1][i]), brute_greedy(np.asarray(Ls[i]), 8, window=3))


@pytest.mark.parametrize("d", [5, 40])
def test_lowrank_equals_full(x64, d):
  rng = np.random.default_rng(30 + d)
  r, m, k = 3, 50, 12
  f = rng.normal(size=(r, m, d))
  q = np.exp(rng.normal(size=(r, m)))
  mask = rng.random((r, m)) < 0.9
  full = np.einsum("rm,rmd,rnd,rn->rmn", q, f, f, q)
  li, lv = greedy_map_lowrank(jnp.asarray(f), jnp.asarray(q), k, candidate_mask=jnp.asarray(mask))
  for i in range(r):
    assert_same((li[i], lv[i]), brute_greedy(full[i], k, mask=mask[i]))
  assert int(np.asarray(lv).sum(axis=1).max()) == min(d, k)


def _logdet(L, idx, valid):
  sel = np.asarray(idx)[np.asarray(valid)]
  return np.linalg.slogdet(np.asarray(L, np.float64)[np.ix_(sel, sel)])[1]


def test_float32_agrees_with_float64():
  rng = np.random.default_rng(40)
  for _ in range(4):
    m, d, k = 200, 64, 20
    feats = rng.normal(size=(m, d))
    scores = rng.normal(size=m)
    with jax.enable_x64(True):
      L64 = np.asarray(dpp_kernel(scores, feats, 0.6))
      i64, v64 = greedy_map(jnp.asarray(L64), k)
    i32, v32 = greedy_map(jnp.asarray(L64, jnp.float32), k)
    assert i32.dtype == jnp.int32 and jnp.asarray(L64, jnp.float32).dtype == jnp.float32
    assert np.asarray(v32).all() and np.asarray(v64).all()
    o32, o64 = _logdet(L64, i32, v32), _logdet(L64, i64, v64)
    assert abs(o32 - o64) <= 1e-4 * abs(o64) + 1e-6


def test_float32_relative_eps_rank_stop():
  rng = np.random.default_rng(41)
  f = rng.normal(size=(100, 8)).astype(np.float32)
  L = f @ f.T
  _, v = greedy_map(jnp.asarray(L), 20, eps=1e-6, eps_mode="relative")
  assert int(np.asarray(v).sum()) == 8
  _, v = greedy_map_lowrank(jnp.asarray(f), jnp.ones(100, jnp.float32), 20, eps=1e-6, eps_mode="relative")
  assert int(np.asarray(v).sum()) == 8


def test_errors():
  L = jnp.eye(5)
  with pytest.raises(ValueError, match="square"):
    greedy_map(jnp.ones((5, 4)), 2)
  with pytest.raises(ValueError, match="square"):
    greedy_map_window(jnp.ones((5, 4)), 2, 2)
  with pytest.raises(ValueError, match="k must"):
    greedy_map(L, 6)
  with pytest.raises(ValueError, match="k must"):
    greedy_map(L, 0)
  with pytest.raises(ValueError, match="k must"):
    greedy_map_window(L, 6, 2)
  with pytest.raises(ValueError, match="k must"):
    greedy_map_lowrank(jnp.ones((5, 2)), jnp.ones(5), 6)
  with pytest.raises(ValueError, match="window"):
    greedy_map_window(L, 2, 0)
  with pytest.raises(ValueError, match="candidate_mask"):
    greedy_map(L, 2, candidate_mask=jnp.ones(4, bool))
  with pytest.raises(ValueError, match="quality"):
    greedy_map_lowrank(jnp.ones((5, 2)), jnp.ones(4), 2)
  for bad in (1.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="theta"):
      dpp_kernel(jnp.ones(5), jnp.ones((5, 3)), bad)
  with pytest.raises(ValueError, match="eps_mode"):
    greedy_map(L, 2, eps_mode="bogus")
