"""Benchmark of pallas_kernels.gdpa and sliding_window_attention: one JSON line per (case, implementation).

Grid (kernels issue): B ∈ {8, 32}, T ∈ {256, 1024, 4096}, H = 4, D ∈ {64, 128}, window ∈ {None, 128},
activation silu, Tq = Tk = T, no padding. Implementations:
  * pallas        the platform's Pallas kernel. On CPU it runs in *interpret mode* (lowered to XLA loops):
                  its absolute speed is meaningless, but its window/no-window ratio still shows block
                  skipping, because skipped kv blocks are not even iterated.
  * xla           the plain reference (materialises [B, H, T, T]).
  * dpa_xla       (SWA only) jax.nn.dot_product_attention(local_window_size=(w, w), implementation="xla").
  * dpa_cudnn     (SWA only, GPU only) the same with implementation="cudnn"; failures are reported as such.
Per line: fwd_ms, bwd_ms (= fwd+bwd minus fwd), useful TFLOP/s (visible pairs only: fwd 4·pairs·D,
bwd 10·pairs·D per (b, h); spec §9) and speedups of the pallas line vs xla / dpa_*. A final
"window_speedup" line per (op, B, T, D, impl) gives time(no window) / time(window=128).

Usage:
  python experiments/bench/kernels.py                      # full grid (accelerator)
  python experiments/bench/kernels.py --quick              # CPU-sized subset, a few minutes
  python experiments/bench/kernels.py --batch 8 --seq 4096 --dim 64 --ops swa --impls pallas
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import pallas_kernels as pk
from pallas_kernels.gdpa import reference as gdpa_ref
from pallas_kernels.sliding_window import reference as swa_ref


def visible_pairs(t: int, window) -> int:
  """Number of (i, j) pairs with |i − j| ≤ w in a T×T square (all T² when window is None)."""
  if window is None:
    return t * t
  i = np.arange(t)
  return int(np.sum(np.minimum(t - 1, i + window) - np.maximum(0, i - window) + 1))


def _time(fn, args, reps):
  out = fn(*args)
  jax.block_until_ready(out)
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best * 1e3


def _make(op, impl, window):
  if op == "gdpa":
    if impl == "pallas":
      return lambda q, k, v: pk.gdpa(q, k, v, activation="silu", window=window, implementation="pallas",
                                     pre_scale=q.shape[-1] ** -0.5)
    if impl == "xla":
      return lambda q, k, v: gdpa_ref.gdpa(q, k, v, activation="silu", window=window,
                                           pre_scale=q.shape[-1] ** -0.5)
  else:
    if impl == "pallas":
      return lambda q, k, v: pk.sliding_window_attention(q, k, v, window=window, implementation="pallas")
    if impl == "xla":
      return lambda q, k, v: swa_ref.sliding_window_attention(q, k, v, window=window)
    if impl in ("dpa_xla", "dpa_cudnn"):
      lws = None if window is None else (window, window)
      return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, local_window_size=lws,
                                                          implementation=impl.split("_")[1])
  return None


def run_case(op, impl, b, t, h, d, window, dtype, reps, do_bwd):
  fn = _make(op, impl, window)
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v, do = (jax.random.normal(kk, (b, t, h, d), jnp.float32).astype(dtype) for kk in ks)
  fwd = jax.jit(fn)
  fwd_ms = _time(fwd, (q, k, v), reps)
  bwd_ms = None
  if do_bwd:
    def fb(q, k, v, do):
      o, vjp = jax.vjp(fn, q, k, v)
      return vjp(do)
    total_ms = _time(jax.jit(fb), (q, k, v, do), reps)
    bwd_ms = total_ms - fwd_ms if total_ms > fwd_ms else None  # noisy timing: report nothing, not ~0
  pairs = visible_pairs(t, window) * b * h
  rec = dict(bench="kernels", op=op, impl=impl, B=b, T=t, H=h, D=d, window=window, activation="silu"
             if op == "gdpa" else None, dtype=jnp.dtype(dtype).name, fwd_ms=round(fwd_ms, 3),
             bwd_ms=None if bwd_ms is None else round(bwd_ms, 3),
             fwd_tflops=round(4 * pairs * d / fwd_ms / 1e9, 4),
             bwd_tflops=None if bwd_ms is None else round(10 * pairs * d / bwd_ms / 1e9, 4),
             interpret=impl == "pallas" and jax.default_backend() == "cpu",
             device=jax.devices()[0].device_kind, backend=jax.default_backend(), jax=jax.__version__)
  return rec


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="CPU-sized subset: B=8, T in {256, 4096}, D=64")
  ap.add_argument("--batch", type=int, nargs="*", default=None)
  ap.add_argument("--seq", type=int, nargs="*", default=None)
  ap.add_argument("--dim", type=int, nargs="*", default=None)
  ap.add_argument("--windows", type=str, nargs="*", default=["none", "128"])
  ap.add_argument("--ops", type=str, default="gdpa,swa")
  ap.add_argument("--impls", type=str, default=None, help="comma list; default depends on the backend")
  ap.add_argument("--dtype", type=str, default=None, help="default bfloat16 on GPU/TPU, float32 on CPU")
  ap.add_argument("--reps", type=int, default=None)
  ap.add_argument("--no-bwd", action="store_true")
  ap.add_argument("--max-cases", type=int, default=None, help="stop after this many (case, impl) lines")
  ap.add_argument("--max-pairs", type=float, default=None,
                  help="skip xla/dpa cases whose B·H·T² exceeds this (the reference materialises it)")
  args = ap.parse_args(argv)
  cpu = jax.default_backend() == "cpu"
  batches = args.batch or ([8] if args.quick else [8, 32])
  seqs = args.seq or ([256, 4096] if args.quick else [256, 1024, 4096])
  dims = args.dim or ([64] if args.quick else [64, 128])
  windows = [None if w == "none" else int(w) for w in args.windows]
  dtype = jnp.dtype(args.dtype or ("float32" if cpu else "bfloat16"))
  reps = args.reps or (3 if cpu else 10)
  max_pairs = args.max_pairs if args.max_pairs is not None else (2.0 ** 27 if cpu else float("inf"))
  ops = args.ops.split(",")
  default_impls = ["pallas", "xla", "dpa_xla"] + ([] if cpu else ["dpa_cudnn"])
  impls = args.impls.split(",") if args.impls else default_impls
  n = 0
  times = {}
  for op in ops:
    for b in batches:
      for t in seqs:
        for d in dims:
          for w in windows:
            row = {}
            for impl in impls:
              if impl.startswith("dpa") and op != "swa":
                continue
              if args.max_cases is not None and n >= args.max_cases:
                break
              if impl != "pallas" and b * 4 * t * t > max_pairs:
                print(json.dumps(dict(bench="kernels", op=op, impl=impl, B=b, T=t, D=d, window=w,
                                      skipped=f"B·H·T² > --max-pairs={max_pairs:g}")), flush=True)
                continue
              try:
                rec = run_case(op, impl, b, t, 4, d, w, dtype, reps, not args.no_bwd)
              except Exception as e:  # noqa: BLE001 -- report, e.g. cuDNN rejecting a window
                rec = dict(bench="kernels", op=op, impl=impl, B=b, T=t, D=d, window=w,
                           error=f"{type(e).__name__}: {str(e)[:200]}")
              n += 1
              row[impl] = rec
              if "fwd_ms" in rec:
                times[(op, b, t, d, w, impl)] = rec
            p = row.get("pallas")
            if p is not None and "fwd_ms" in p:
              for other in row:
                o = row[other]
                if other != "pallas" and "fwd_ms" in o:
                  p[f"fwd_speedup_vs_{other}"] = round(o["fwd_ms"] / p["fwd_ms"], 3)
                  if p["bwd_ms"] and o["bwd_ms"]:
                    p[f"fwdbwd_speedup_vs_{other}"] = round(
                        (o["fwd_ms"] + o["bwd_ms"]) / (p["fwd_ms"] + p["bwd_ms"]), 3)
            for rec in row.values():
              print(json.dumps(rec), flush=True)
  for (op, b, t, d, w, impl), rec in times.items():
    if w is None:
      continue
    base = times.get((op, b, t, d, None, impl))
    if base is not None:
      line = dict(bench="kernels_window_speedup", op=op, impl=impl, B=b, T=t, D=d, window=w,
                  fwd_speedup=round(base["fwd_ms"] / rec["fwd_ms"], 2), interpret=rec.get("interpret"),
                  backend=jax.default_backend())
      if base.get("bwd_ms") and rec.get("bwd_ms"):
        total = lambda r: r["fwd_ms"] + r["bwd_ms"]
        line["fwdbwd_speedup"] = round(total(base) / total(rec), 2)
      print(json.dumps(line), flush=True)


if __name__ == "__main__":
  main()
