"""Training-step throughput and MFU of a model config, as one JSON line.

  python experiments/bench/train_throughput.py --config experiments/configs/interformer.py:medium \
      --batch 2048 --steps 20

Measures the jitted train step on in-memory batches already on the device (the input pipeline is timed
separately by scale.py): the median step time of `--steps` steps after `--warmup` warm-up steps, FLOPs per
example from XLA's cost analysis of the compiled step, achieved GFLOP/s, and MFU = achieved FLOP/s over the
FLOP/s of a large float32 matmul timed in the same process (XLA's, through jit). Because XLA's matmul is not
the fastest on every CPU (on a 2-core AVX2 EPYC, 112-174 GFLOP/s against 135-194 for numpy's OpenBLAS), the
line also gives `matmul_gflops_blas`, numpy's float32 matmul of the same size in the same process, and
`mfu_vs_fastest_matmul`, against the faster of the two. For a model computing in bfloat16
(`--config.model.dtype=bfloat16`; params stay float32) it also reports `mfu_vs_compute_dtype`, against a
bfloat16 matmul (AMX/AVX512-BF16 units where the CPU has them). Peak host memory is the process's max RSS.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from recjax import cli, host_memory, xla_cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file `path.py:variant`.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch", 2048, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PROFILE = flags.DEFINE_string("profile", None, "If set, write a jax.profiler trace of the timed steps here "
                                "(and print the 15 costliest XLA ops as JSON lines on stderr).")
_MATMUL = flags.DEFINE_integer("matmul_n", 2048, "Size n of the n×n×n matmul that defines peak FLOP/s.")


def matmul_flops_per_sec(n: int, dtype=jnp.float32, reps: int = 10) -> float:
  """Peak FLOP/s of an n×n @ n×n matmul in `dtype` (f32 accumulation) on the default device: the fastest
  of `reps` timed calls (the median moved by up to 2× between processes on a shared host)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  return 2 * n**3 / _fastest_seconds(lambda: f(a).block_until_ready(), reps)


def blas_matmul_flops_per_sec(n: int, reps: int = 10) -> float:
  """Peak FLOP/s of numpy's float32 n×n @ n×n matmul (the BLAS numpy was built with, e.g. OpenBLAS, on
  its own threads): the fastest of `reps` timed calls. A second reference for MFU, since XLA's own
  matmul is not the fastest on every CPU (our choice)."""
  a = np.asarray(jax.random.normal(jax.random.key(0), (n, n), jnp.float32))
  return 2 * n**3 / _fastest_seconds(lambda: a @ a, reps)


def _fastest_seconds(call, reps: int) -> float:
  """The fastest of `reps` timed calls of `call()`, after one untimed call (compilation, warm caches)."""
  call()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    call()
    times.append(time.perf_counter() - t)
  return min(times)


def _print_top_ops(trace_dir: str, steps: int, top: int = 15) -> None:
  """Sums the XLA op events of the newest trace under trace_dir (not the runtime's own spans: thunk executor,
  Python frames, jit dispatch, thread-pool waits); prints ms per step."""
  import collections
  import pathlib

  from jax._src.lib import _profile_data
  path = max(pathlib.Path(trace_dir).rglob("*.xplane.pb"), key=lambda q: q.stat().st_mtime)
  totals = collections.Counter()
  for plane in _profile_data.ProfileData.from_file(str(path)).planes:
    for line in plane.lines:
      for ev in line.events:
        if not ev.name.startswith(("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool")):
          totals[ev.name] += ev.duration_ns
  for name, ns in totals.most_common(top):
    print(json.dumps({"op": name, "ms_per_step": round(ns / steps / 1e6, 3)}), file=sys.stderr)


def main(argv):
  del argv
  from recjax import sharding
  from recjax.data import pipeline
  from recjax.data.dataset import load_dataset
  from recjax.models import build_model
  from recjax.train import steps
  from recjax.train.loop import build_state, param_count

  cfg = cli.load_config(_CONFIG)
  data = load_dataset(cfg.dataset)
  model = build_model(data.schema, cfg.model)
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.model)
  it = pipeline.train_iterator(data.train, _BATCH.value, seed=0)
  batches = [sharding.shard_batch(next(it), mesh) for _ in range(4)]
  host_example = {k: np.asarray(v) for k, v in batches[0].items()}
  state, sh = build_state(model, cfg, mesh, host_example)
  step = jax.jit(steps.make_train_step(model, cfg.seed), in_shardings=(sh, sharding.batch_sharding(mesh)),
                 out_shardings=(sh, None), donate_argnums=(0,))
  peak_before = matmul_flops_per_sec(_MATMUL.value)
  t0 = time.perf_counter()
  compiled = step.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops_step = float(cost.get("flops", 0.0))

  prev = None
  for i in range(_WARMUP.value):  # as the training loop: wait for the step before, so two are in flight
    state, m = compiled(state, batches[i % 4])
    host_memory.release_after(prev)
    prev = m
  jax.block_until_ready(m)
  if _PROFILE.value:
    jax.profiler.start_trace(_PROFILE.value)
  times = []
  for i in range(_STEPS.value):
    t = time.perf_counter()
    state, m = compiled(state, batches[i % 4])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
    host_memory.release_after(m)
  step_s = statistics.median(times)
  if _PROFILE.value:
    jax.profiler.stop_trace()
    _print_top_ops(_PROFILE.value, _STEPS.value)
  # The reference is timed before and after the steps and the faster kept: one timing alone moved by up to
  # 1.4x between processes on this host.
  peak_after = matmul_flops_per_sec(_MATMUL.value)
  peak = max(peak_before, peak_after)
  peak_blas = blas_matmul_flops_per_sec(_MATMUL.value)
  compute_dtype = str(cfg.model.get("dtype", "float32"))
  peak_same = peak if compute_dtype == "float32" else matmul_flops_per_sec(_MATMUL.value, jnp.dtype(compute_dtype))
  achieved = flops_step / step_s
  print(json.dumps({
      "bench": "train_throughput",
      "config": sys.argv[sys.argv.index("--config") + 1].rsplit("/", 1)[-1] if "--config" in sys.argv else None,
      "model": cfg.model.name, "dataset": data.name, "batch": _BATCH.value,
      "params": param_count(state.params),
      "examples_per_sec": round(_BATCH.value / step_s, 1),
      "step_ms": round(step_s * 1e3, 2),
      "step_ms_min": round(min(times) * 1e3, 2),
      "step_ms_max": round(max(times) * 1e3, 2),
      "gflops_per_example": round(flops_step / _BATCH.value / 1e9, 5),
      "gbytes_per_step": round(float(cost.get("bytes accessed", 0.0)) / 1e9, 3),
      "achieved_gflops": round(achieved / 1e9, 2),
      "matmul_gflops": round(peak / 1e9, 2),
      "matmul_gflops_before_after": [round(peak_before / 1e9, 2), round(peak_after / 1e9, 2)],
      "mfu": round(achieved / peak, 4),
      "matmul_gflops_blas": round(peak_blas / 1e9, 2),
      "mfu_vs_fastest_matmul": round(achieved / max(peak, peak_blas), 4),
      "compute_dtype": compute_dtype,
      "matmul_gflops_compute_dtype": round(peak_same / 1e9, 2),
      "mfu_vs_compute_dtype": round(achieved / peak_same, 4),
      "compile_s": round(compile_s, 1),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "allocator": host_memory.allocator_in_use(),
      "keep_freed_memory": host_memory.kept(),
      "host_memory_releases": host_memory.releases(),
      "onednn_dots": xla_cpu.onednn_dots(),
      "loss_finite": bool(np.isfinite(float(m["loss"]))),
      "device": jax.devices()[0].platform, "num_devices": jax.device_count(), "jax": jax.__version__,
  }), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run(main, "experiments/bench/train_throughput.py", " --batch 2048")
