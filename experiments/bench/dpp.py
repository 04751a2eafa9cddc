"""Benchmark: batched JAX greedy MAP (recjax.rerank.dpp) vs a plain NumPy per-request loop.

Prints one JSON line per case. Baselines are written here (not the official code): Algorithm 1 (and the
recompute form of Algorithm 2 for window cases) as a per-request NumPy loop in the kernel's dtype, and the
naive greedy (one slogdet per candidate per step) for small M.

  python experiments/bench/dpp.py --preset target      # R=256, M=1000, k=50 (the issue's 10x target)
  python experiments/bench/dpp.py --preset scaling     # time vs k and vs M (O(k^2 M))
  python experiments/bench/dpp.py --preset grid        # R x M x k x window grid + low-rank + naive
  python experiments/bench/dpp.py --R 64 --M 500 --k 20 --window 10   # one case
  python experiments/bench/dpp.py --preset target --impl xla           # the XLA-ops implementation

`--impl` picks the greedy_map implementation: `auto` (default) is the native CPU kernel
(recjax/rerank/native/greedy_map.cc, through XLA's FFI; it spreads requests over XLA's intra-op threads),
`xla` the XLA-ops one. With `--impl xla` the process starts one XLA CPU device per core
(`--xla_force_host_platform_device_count`) and splits the requests over them with `greedy_map(...,
mesh=...)`, so each core runs its own chunks of requests with their Cholesky rows in its own L2 cache;
otherwise it starts one device. `--devices N` overrides either.

Kernels: L_r = diag(q_r) P_r S P_rᵀ diag(q_r), with S = F Fᵀ of D = min(M, 1000) unit Gaussian features
(rank >= k, so no early stop), P_r a random permutation and q_r = exp(0.01·N(0,1) + 0.2) (spec §9).
Bytes model per request (float32 itemsize b): b·M·(k(k−1)/2 + 4k): the filled Cholesky rows read at each
step plus the L row, e and d² traffic. `gbytes_per_s` divides that by the measured time, and `copy_gbytes_per_s`
is a large-array copy (read + write) timed in the same process for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _flag_from_argv(argv, name):
  for i, a in enumerate(argv):
    if a == name and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith(name + "="):
      return a.split("=", 1)[1]
  return None


def _default_devices(argv) -> int:
  """One XLA CPU device per core for the XLA implementation (each runs its own request stream), one for
  the native kernel (it spreads requests over the intra-op threads itself)."""
  return (os.cpu_count() or 1) if _flag_from_argv(argv, "--impl") == "xla" else 1


def _devices_from_argv(argv) -> int:
  """--devices N (default: `_default_devices`). Read before jax is imported: XLA reads the flag once."""
  n = _flag_from_argv(argv, "--devices")
  return int(n) if n is not None else _default_devices(argv)


if __name__ == "__main__" and "jax" not in sys.modules:
  _n = _devices_from_argv(sys.argv[1:])
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_n}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from recjax.rerank.dpp import greedy_map, greedy_map_impl, greedy_map_lowrank, greedy_map_window  # noqa: E402

MAX_KERNEL_BYTES = 3 * 2**30  # skip batched full-kernel cases that do not fit comfortably in RAM


def numpy_greedy(L, k, eps=1e-10):
  """Algorithm 1, one request, NumPy (baseline)."""
  m = L.shape[0]
  c = np.zeros((k, m), L.dtype)
  d2 = np.diag(L).copy()
  j = int(np.argmax(d2))
  out = [j]
  for t in range(k - 1):
    e = (L[j] - c[:t, j] @ c[:t]) / np.sqrt(d2[j])
    c[t] = e
    d2 -= e * e
    d2[j] = -np.inf
    j = int(np.argmax(d2))
    if d2[j] < eps:
      break
    out.append(j)
  return out


def numpy_greedy_window(L, k, window, eps=1e-10):
  """Algorithm 2 by exact recompute of the window factor, one request, NumPy (baseline)."""
  diag = np.diag(L).copy()
  avail = np.ones(L.shape[0], bool)
  out = []
  for t in range(k):
    w = out[max(0, len(out) - (window - 1)):] if window > 1 else []
    if w:
      v = np.linalg.cholesky(L[np.ix_(w, w)])
      cw = np.linalg.solve(v, L[w])  # triangular system; solve is fine for a baseline
      d2 = diag - np.sum(cw * cw, axis=0)
    else:
      d2 = diag.copy()
    d2[~avail] = -np.inf
    j = int(np.argmax(d2))
    if t > 0 and d2[j] < eps:
      break
    out.append(j)
    avail[j] = False
  return out


def naive_greedy(L, k, eps=1e-10):
  """Greedy with one slogdet per candidate per step: O(k·M·k³)."""
  m = L.shape[0]
  out = []
  for t in range(k):
    best, bj = -np.inf, -1
    for i in range(m):
      if i in out:
        continue
      sub = out + [i]
      s, ld = np.linalg.slogdet(L[np.ix_(sub, sub)])
      g = ld if s > 0 else -np.inf
      if g > best:
        best, bj = g, i
    out.append(bj)
  return out


def make_kernels(r, m, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  d = min(m, 1000)
  f = rng.normal(size=(m, d)).astype(np.float32)
  f /= np.linalg.norm(f, axis=1, keepdims=True)
  s = f @ f.T
  out = np.empty((r, m, m), dtype)
  for i in range(r):
    p = rng.permutation(m)
    q = np.exp(0.01 * rng.normal(size=m) + 0.2).astype(np.float32)
    out[i] = q[:, None] * s[np.ix_(p, p)] * q[None, :]
  return out


def copy_bandwidth(nbytes=256 * 2**20, reps=5):
  a = np.ones(nbytes // 4, np.float32)
  b = np.empty_like(a)
  np.copyto(b, a)
  best = min(_timeit(lambda: np.copyto(b, a)) for _ in range(reps))
  return 2 * nbytes / best / 1e9


def _timeit(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def bytes_model(m, k, itemsize=4):
  return itemsize * m * (k * (k - 1) / 2 + 4 * k)


def _mesh_for(r):
  """All local devices on one request axis, or None when there is one device or R does not divide."""
  n = jax.local_device_count()
  if n == 1 or r % n:
    return None
  return jax.make_mesh((n,), ("requests",))


def run_case(r, m, k, window, reps, np_requests, copy_gbs, lowrank_d=None, impl="auto"):
  mesh = _mesh_for(r)
  rec = dict(bench="dpp_greedy", R=r, M=m, k=k, window=window, dtype="float32",
             device=jax.devices()[0].platform, devices_used=mesh.size if mesh else 1, jax=jax.__version__,
             cpu=platform.processor() or platform.machine())
  if lowrank_d is None and window is None:  # the only case with a native kernel
    rec["impl"] = greedy_map_impl(impl)
  if lowrank_d is not None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(r, m, lowrank_d)).astype(np.float32)
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    q = np.exp(0.01 * rng.normal(size=(r, m)) + 0.2).astype(np.float32)
    rec.update(form="lowrank", D=lowrank_d)
    fj, qj = jnp.asarray(f), jnp.asarray(q)
    jfn = lambda: greedy_map_lowrank(fj, qj, k, mesh=mesh)  # noqa: E731
    def np_one(i):
      return numpy_greedy(q[i][:, None] * (f[i] @ f[i].T) * q[i][None, :], k)
    np_note = "numpy materialises L per request (included in time)"
  else:
    if r * m * m * 4 > MAX_KERNEL_BYTES:
      rec.update(skipped=f"R·M²·4 = {r * m * m * 4 / 2**30:.1f} GiB > {MAX_KERNEL_BYTES / 2**30:.0f} GiB")
      print(json.dumps(rec), flush=True)
      return rec
    L = make_kernels(r, m)
    Lj = jnp.asarray(L)
    rec.update(form="full")
    if window is None:
      if mesh is not None:  # place once, outside the timed calls
        Lj = jax.device_put(Lj, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("requests")))
      jfn = lambda: greedy_map(Lj, k, mesh=mesh, impl=impl)  # noqa: E731
      np_one = lambda i: numpy_greedy(L[i], k)  # noqa: E731
    else:
      jfn = lambda: greedy_map_window(Lj, k, window)  # noqa: E731
      np_one = lambda i: numpy_greedy_window(L[i], k, window)  # noqa: E731
    np_note = None
  t0 = time.perf_counter()
  idx, valid = jax.block_until_ready(jfn())
  rec["compile_s"] = round(time.perf_counter() - t0, 3)
  n_np = min(r, np_requests)
  jt, nt = [], []
  for _ in range(reps):  # interleaved, so machine load affects both alike
    jt.append(_timeit(lambda: jax.block_until_ready(jfn())))
    nt.append(_timeit(lambda: [np_one(i) for i in range(n_np)]))
  j_ms = min(jt) / r * 1e3
  n_ms = min(nt) / n_np * 1e3
  # Same picks as the baseline on the first requests (sanity; float32 near-ties may differ in rare cases).
  idx, valid = np.asarray(idx), np.asarray(valid)
  agree = np.mean([list(idx[i][valid[i]]) == np_one(i) for i in range(min(n_np, 4))])
  rec.update(jax_ms_per_request=round(j_ms, 4), numpy_ms_per_request=round(n_ms, 4),
             speedup_vs_numpy=round(n_ms / j_ms, 2), numpy_requests_timed=n_np, agree_first4=float(agree))
  if window is None:
    gbs = bytes_model(m, k) / (j_ms * 1e-3) / 1e9
    rec.update(model_bytes_per_request=int(bytes_model(m, k)), gbytes_per_s=round(gbs, 2),
               copy_gbytes_per_s=round(copy_gbs, 2))
  if np_note:
    rec["note"] = np_note
  print(json.dumps(rec), flush=True)
  return rec


def run_naive(m, k, reps, impl="auto"):
  L = make_kernels(1, m, dtype=np.float64)[0]
  t_naive = min(_timeit(lambda: naive_greedy(L, k)) for _ in range(reps))
  t_fast = min(_timeit(lambda: numpy_greedy(L, k)) for _ in range(reps))
  Lj = jnp.asarray(L, jnp.float32)
  jax.block_until_ready(greedy_map(Lj, k, impl=impl))
  t_jax = min(_timeit(lambda: jax.block_until_ready(greedy_map(Lj, k, impl=impl))) for _ in range(reps))
  rec = dict(bench="dpp_naive", R=1, M=m, k=k, impl=greedy_map_impl(impl), naive_ms=round(t_naive * 1e3, 2),
             numpy_alg1_ms=round(t_fast * 1e3, 3), jax_alg1_ms=round(t_jax * 1e3, 3),
             alg1_speedup_vs_naive=round(t_naive / t_fast, 1),
             same_picks=naive_greedy(L, k) == numpy_greedy(L, k))
  print(json.dumps(rec), flush=True)
  return rec


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", choices=["target", "scaling", "grid", "naive"], default=None)
  p.add_argument("--R", type=int, nargs="*", default=None)
  p.add_argument("--M", type=int, nargs="*", default=None)
  p.add_argument("--k", type=int, nargs="*", default=None)
  p.add_argument("--window", type=int, nargs="*", default=None, help="0 means no window")
  p.add_argument("--lowrank_d", type=int, default=None, help="run the low-rank form with this D")
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--np_requests", type=int, default=32, help="requests timed in the NumPy loop (cap)")
  p.add_argument("--impl", choices=["auto", "native", "xla"], default="auto",
                 help="greedy_map implementation (auto: the native CPU kernel when it builds)")
  p.add_argument("--devices", type=int, default=_default_devices(sys.argv[1:] if argv is None else argv),
                 help="XLA CPU devices to split requests over (read before jax starts; default: 1, or the "
                      "number of cores with --impl xla)")
  a = p.parse_args(argv)
  copy_gbs = copy_bandwidth()
  print(json.dumps(dict(bench="copy_bandwidth", bytes=256 * 2**20, gbytes_per_s=round(copy_gbs, 2))), flush=True)
  cases = []
  if a.preset == "target":
    cases = [(256, 1000, 50, None)]
  elif a.preset == "scaling":
    cases = [(64, 1000, k, None) for k in (10, 20, 40, 80, 160)]
    cases += [(64, m, 50, None) for m in (250, 500, 1000, 2000, 4000)]
  elif a.preset == "grid":
    cases = [(r, m, k, w) for r in (1, 64, 256) for m in (500, 2000, 6000) for k in (20, 100)
             for w in (None, 10)]
  elif a.preset == "naive":
    pass
  else:
    wins = [None if w == 0 else w for w in (a.window or [0])]
    cases = [(r, m, k, w) for r in (a.R or [256]) for m in (a.M or [1000]) for k in (a.k or [50])
             for w in wins]
  for r, m, k, w in cases:
    run_case(r, m, k, w, a.reps, a.np_requests, copy_gbs, lowrank_d=a.lowrank_d, impl=a.impl)
  if a.preset == "grid":
    for r in (1, 64, 256):
      for k in (20, 100):
        run_case(r, 6000, k, None, a.reps, min(a.np_requests, 4), copy_gbs, lowrank_d=64)
  if a.preset in ("grid", "naive"):
    for m in (50, 100, 200):
      run_naive(m, 10, max(1, a.reps - 1), impl=a.impl)


if __name__ == "__main__":
  main()
