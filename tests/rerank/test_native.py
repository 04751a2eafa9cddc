"""The native greedy_map CPU kernel: build, cache, fallback, and agreement with the XLA implementation.

Exactness against the brute-force oracle is in test_dpp_greedy.py (every test there runs on both
implementations). Here: float32 cases the oracle is too slow for (M up to 1000, not a multiple of the
kernel's item block), leading batch dimensions, vmap, and what happens without a compiler.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.rerank import native
from recjax.rerank.dpp import greedy_map

HAS_CXX = native._compiler() is not None and shutil.which(native._compiler()[0]) is not None


def kernels(rng, r, m, d, dtype=np.float32):
  """[r, m, m] Gram kernels of rank min(m, d) with qualities ~ exp(0.3·N(0, 1))."""
  f = rng.normal(size=(r, m, d))
  f /= np.linalg.norm(f, axis=-1, keepdims=True)
  q = np.exp(0.3 * rng.normal(size=(r, m)))
  return np.einsum("rm,rmd,rnd,rn->rmn", q, f, f, q).astype(dtype)


def both(L, k, **kw):
  a = [np.asarray(x) for x in greedy_map(L, k, impl="native", **kw)]
  b = [np.asarray(x) for x in greedy_map(L, k, impl="xla", **kw)]
  return a, b


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler on this machine")
def test_builds_where_a_compiler_exists():
  assert native.available(), native.reason()


@pytest.mark.parametrize("m,k,d", [(1000, 50, 200), (257, 40, 64), (129, 129, 300), (3, 2, 5), (300, 60, 20)])
def test_native_equals_xla_float32(m, k, d):
  """Same picks and validity as the XLA path; (300, 60, 20) is rank 20 < k (relative-eps rank stop)."""
  rng = np.random.default_rng(m + k)
  L = jnp.asarray(kernels(rng, 4, m, d))
  mask = jnp.asarray(rng.random((4, m)) < 0.9)
  kw = {"eps": 1e-6, "eps_mode": "relative"} if d < k else {}
  (ai, av), (bi, bv) = both(L, k, candidate_mask=mask, **kw)
  np.testing.assert_array_equal(av, bv)
  np.testing.assert_array_equal(ai, bi)
  if d < k:
    assert (av.sum(-1) <= d).all() and (av.sum(-1) >= d - 1).all()
  else:  # full rank: stops only when the candidates run out
    np.testing.assert_array_equal(av.sum(-1), np.minimum(k, np.asarray(mask).sum(-1)))
  picked = np.take_along_axis(np.asarray(mask), np.where(av, ai, 0), axis=-1)
  assert picked[av].all()  # never a masked item
  assert all(len(set(row[v])) == v.sum() for row, v in zip(ai, av))  # never twice


def test_stop_rules_and_all_masked():
  rng = np.random.default_rng(3)
  L = jnp.asarray(kernels(rng, 3, 50, 8) * 40)
  (ai, av), (bi, bv) = both(L, 20, stop_rule="gain_lt_one")
  np.testing.assert_array_equal(av, bv)
  np.testing.assert_array_equal(np.where(av, ai, -1), np.where(bv, bi, -1))
  assert 0 < av.sum() < 60
  i, v = greedy_map(L[0], 5, candidate_mask=jnp.zeros(50, bool), impl="native")
  assert not np.asarray(v).any() and (np.asarray(i) == -1).all()


def test_leading_batch_dims_through_vmap():
  """vmap over greedy_map adds batch dimensions the FFI call sees as more requests."""
  rng = np.random.default_rng(5)
  L = jnp.asarray(kernels(rng, 6, 40, 12).reshape(2, 3, 40, 40))
  got = jax.jit(jax.vmap(lambda x: greedy_map(x, 10, impl="native")))(L)
  want = greedy_map(L.reshape(6, 40, 40), 10, impl="xla")
  np.testing.assert_array_equal(np.asarray(got[0]).reshape(6, 10), np.asarray(want[0]))
  eps = jnp.asarray([1e-10, 10.0])  # a batched eps reaches each request
  _, got_v = jax.vmap(lambda x, e: greedy_map(x, 10, eps=e, impl="native"))(L[:, 0], eps)
  assert np.asarray(got_v[0]).all() and np.asarray(got_v[1]).sum() < 10


def test_float64():
  with jax.enable_x64(True):
    rng = np.random.default_rng(8)
    L = jnp.asarray(kernels(rng, 2, 70, 30, np.float64))
    (ai, av), (bi, bv) = both(L, 40)
    assert np.asarray(greedy_map(L, 40, impl="native")[0]).dtype == np.int32
    np.testing.assert_array_equal(av, bv)
    np.testing.assert_array_equal(np.where(av, ai, -1), np.where(bv, bi, -1))
    assert av.sum() == 2 * 30  # rank 30 stops at 30 picks in float64


def test_bad_impl():
  with pytest.raises(ValueError, match="impl"):
    greedy_map(jnp.eye(4), 2, impl="fortran")


CHILD = """
import json, sys, warnings
import numpy as np, jax.numpy as jnp
from recjax.rerank import native
from recjax.rerank.dpp import greedy_map, greedy_map_impl
L = jnp.asarray(np.diag(np.arange(1.0, 6.0)).astype(np.float32))
out = {"reason": native.reason()}
with warnings.catch_warnings(record=True) as w:
  warnings.simplefilter("always")
  out["auto"] = np.asarray(greedy_map(L, 3)[0]).tolist()
  out["warnings"] = [str(x.message) for x in w]
  out["warned_at"] = [x.filename for x in w]  # the caller's line, not recjax's
out["impl"] = greedy_map_impl()
try:
  greedy_map(L, 3, impl="native")
  out["native_error"] = None
except RuntimeError as e:
  out["native_error"] = str(e)
print(json.dumps(out))
"""


def run_child(tmp_path, **env):
  full = {**os.environ, "RECJAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu", **env}
  res = subprocess.run([sys.executable, "-c", CHILD], env=full, capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env,why", [({"RECJAX_NATIVE": "0"}, "RECJAX_NATIVE"),
                                     ({"CXX": "/nonexistent/c++"}, "nonexistent")])
def test_fallback_without_native(tmp_path, env, why):
  """Disabled or unbuildable: "auto" warns once and gives the XLA result; "native" raises, saying why."""
  out = run_child(tmp_path, **env)
  assert why in out["reason"]
  assert out["auto"] == [4, 3, 2]
  assert len(out["warnings"]) == 1 and why in out["warnings"][0]
  assert out["warned_at"] == ["<string>"]
  assert out["impl"] == "xla"
  assert why in out["native_error"]


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler on this machine")
def test_built_once_then_loaded_from_cache(tmp_path):
  out = run_child(tmp_path)
  assert out["reason"] is None and out["auto"] == [4, 3, 2] and out["native_error"] is None
  assert out["impl"] == "native"
  libs = list((tmp_path / "cache" / "native").glob("greedy_map-*.so"))
  assert len(libs) == 1
  mtime = libs[0].stat().st_mtime_ns
  out = run_child(tmp_path)
  assert out["reason"] is None
  assert [p.stat().st_mtime_ns for p in (tmp_path / "cache" / "native").glob("greedy_map-*.so")] == [mtime]
  assert not list((tmp_path / "cache" / "native").glob("*.tmp"))  # no leftovers from the atomic write


def test_gain_clamped_at_zero():
  """d² is clamped at 0 after cancellation, so with eps = 0 every step of a rank-4 kernel is valid (gain
  0 >= 0) until the candidates run out, instead of stopping at a slightly negative d². Only the first
  rank-many picks are determined by the kernel; the zero-gain picks after them are rounding noise."""
  rng = np.random.default_rng(11)
  L = jnp.asarray(kernels(rng, 2, 30, 4))
  i, v = (np.asarray(a) for a in greedy_map(L, 12, eps=0.0, impl="native"))
  assert v.all()
  np.testing.assert_array_equal(i[:, :4], np.asarray(greedy_map(L, 4, impl="xla")[0]))


@pytest.mark.parametrize("where", ["diagonal", "row"])
def test_non_finite_kernel_is_an_error(where):
  """A NaN or infinity the native kernel reads is an error naming the request and item, not garbage."""
  rng = np.random.default_rng(2)
  L = kernels(rng, 3, 40, 10)
  first = int(np.argmax(np.diagonal(L[1])))
  if where == "diagonal":
    L[1, 7, 7] = np.nan
    match = "diagonal at item 7 of request 1"
  else:
    L[1, first, 5] = np.inf  # the first pick's row
    match = f"row of picked item {first} of request 1"
  with pytest.raises(Exception, match=match):
    jax.block_until_ready(greedy_map(jnp.asarray(L), 5, impl="native"))
  ok = np.array([True] * 40)
  ok[7 if where == "diagonal" else 5] = False  # a masked item's entries are never used
  mask = np.broadcast_to(ok, (3, 40))
  jax.block_until_ready(greedy_map(jnp.asarray(L), 5, candidate_mask=jnp.asarray(mask), impl="native"))


def test_half_precision_runs_in_float32_and_complex_is_rejected():
  rng = np.random.default_rng(4)
  L = kernels(rng, 2, 60, 60)
  want = np.asarray(greedy_map(jnp.asarray(L, jnp.bfloat16).astype(jnp.float32), 20, impl="xla")[0])
  for impl in ("native", "xla"):
    for dt in (jnp.bfloat16, jnp.float16):
      np.testing.assert_array_equal(np.asarray(greedy_map(jnp.asarray(L, dt), 20, impl=impl)[0]), want)
  with pytest.raises(ValueError, match="must be real"):
    greedy_map(jnp.asarray(L, jnp.complex64), 5)
