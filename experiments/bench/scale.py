"""Scale run: stream N synthetic TaobaoAd_x1-schema rows through preprocessing and training.

  python experiments/bench/scale.py --rows 20000000 --config experiments/configs/dnn.py:synthetic_stream

Prints JSON lines:
- `{"phase": "pipeline", ...}`: rows/s of the input pipeline alone (generate → validate → batch → device),
  over `--pipeline_rows` rows;
- `{"phase": "train_progress", "rows": ..., "peak_rss_mb": ...}` at 2M rows and every `--report_every` rows;
- `{"phase": "train", ...}`: rows/s of training with the pipeline overlapped (a prefetch thread), peak memory
  at 2M rows and at the end, and whether the pipeline keeps up (pipeline rows/s ≥ 2 × train rows/s).

Nothing is held whole: chunks of `--chunk_rows` rows are generated, validated, cut into fixed-size batches
and dropped, so memory must stay flat as rows grow. The synthetic rows carry a planted signal; they are
for scale and speed only, never a substitute for real data in a result table.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from recjax import cli, host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config `path.py:variant` (synthetic schema).",
                                          lock_config=False)
_ROWS = flags.DEFINE_integer("rows", 20_000_000, "Rows streamed through training.")
_PIPE_ROWS = flags.DEFINE_integer("pipeline_rows", 2_000_000, "Rows for the pipeline-only measurement.")
_CHUNK = flags.DEFINE_integer("chunk_rows", 65_536, "Rows generated per chunk.")
_REPORT = flags.DEFINE_integer("report_every", 2_000_000, "Rows between progress lines.")
_PREFETCH = flags.DEFINE_integer("prefetch", 4, "Batches buffered by the prefetch thread.")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Threads generating synthetic chunks ahead.")


def rss_mb() -> float:
  """Peak resident set size of this process so far, in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096 / 2**20


def batches(n_rows: int, batch_size: int, chunk_rows: int, seed: int, schema, t: int,
            vocab: str, workers: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Generate → validate → fixed-size batches (remainder rows carried to the next chunk; the last partial
  batch dropped). Each yielded batch has a `mask` of ones."""
  from recjax.data import synthetic
  carry: dict[str, np.ndarray] | None = None
  for i, chunk in enumerate(synthetic.iter_chunks(n_rows, chunk_rows, seed, t=t, vocab=vocab,
                                                             workers=workers)):
    schema.validate(chunk, where=f"synthetic chunk {i}")
    if carry is not None:
      chunk = {k: np.concatenate([carry[k], v]) for k, v in chunk.items()}
    n = len(chunk["label"]) // batch_size * batch_size
    for s in range(0, n, batch_size):
      b = {k: v[s:s + batch_size] for k, v in chunk.items()}
      b["mask"] = np.ones(batch_size, np.float32)
      yield b
    carry = {k: v[n:] for k, v in chunk.items()}


def prefetched(it: Iterator, depth: int) -> Iterator:
  """Runs `it` in a background thread, `depth` items ahead (numpy releases the GIL in its kernels)."""
  q: queue.Queue = queue.Queue(maxsize=depth)
  done = object()

  def work():
    for x in it:
      q.put(x)
    q.put(done)

  threading.Thread(target=work, daemon=True).start()
  while (x := q.get()) is not done:
    yield x


def main(argv):
  del argv
  from recjax import sharding
  from recjax.data import synthetic
  from recjax.models import build_model
  from recjax.train import steps
  from recjax.train.loop import build_state, param_count

  cfg = cli.load_config(_CONFIG)
  ds = cfg.dataset
  schema = synthetic.schema(ds.vocab, ds.max_seq_len)
  bsz = cfg.train.batch_size
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.model)
  model = build_model(schema, cfg.model)  # a bad model config fails here, before the pipeline phase

  # 1. The input pipeline alone.
  t0 = time.perf_counter()
  n = 0
  for b in batches(_PIPE_ROWS.value, bsz, _CHUNK.value, ds.seed + 1, schema, ds.max_seq_len, ds.vocab,
                   _WORKERS.value):
    jax.block_until_ready(sharding.shard_batch(b, mesh))
    n += bsz
  pipe_rps = n / (time.perf_counter() - t0)
  print(json.dumps({"bench": "scale", "phase": "pipeline", "rows": n, "rows_per_sec": round(pipe_rps),
                    "workers": _WORKERS.value, "peak_rss_mb": round(rss_mb(), 1)}), flush=True)

  # 2. Training with the pipeline overlapped.
  it = prefetched(batches(_ROWS.value, bsz, _CHUNK.value, ds.seed, schema, ds.max_seq_len, ds.vocab, _WORKERS.value),
                  _PREFETCH.value)
  first = next(it)
  state, sh = build_state(model, cfg, mesh, first)
  step = jax.jit(steps.make_train_step(model, cfg.seed), in_shardings=(sh, sharding.batch_sharding(mesh)),
                 out_shardings=(sh, None), donate_argnums=(0,))
  state, m = step(state, sharding.shard_batch(first, mesh))
  jax.block_until_ready(m)
  rows, t_start = bsz, time.perf_counter()
  rss_at_2m, next_report, losses = None, _REPORT.value, []
  for b in it:
    prev, (state, m) = m, step(state, sharding.shard_batch(b, mesh))
    host_memory.release_after(prev)
    rows += bsz
    if rows // bsz % 50 == 0:
      losses.append(float(m["loss"]))   # also bounds how far dispatch runs ahead
    if rss_at_2m is None and rows >= 2_000_000:
      rss_at_2m = rss_mb()
    if rows >= next_report:
      el = time.perf_counter() - t_start
      print(json.dumps({"bench": "scale", "phase": "train_progress", "rows": rows,
                        "rows_per_sec": round((rows - bsz) / el), "loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
                        "peak_rss_mb": round(rss_mb(), 1), "rss_mb": round(current_rss_mb(), 1)}), flush=True)
      next_report += _REPORT.value
  jax.block_until_ready(m)
  train_rps = (rows - bsz) / (time.perf_counter() - t_start)
  print(json.dumps({
      "bench": "scale", "phase": "train", "model": cfg.model.name, "params": param_count(state.params),
      "rows": rows, "batch": bsz, "train_rows_per_sec": round(train_rps), "pipeline_rows_per_sec": round(pipe_rps),
      "pipeline_keeps_up": bool(pipe_rps >= 2 * train_rps),
      "peak_rss_mb_at_2m_rows": round(rss_at_2m, 1) if rss_at_2m else None, "peak_rss_mb_at_end": round(rss_mb(), 1),
      "first_loss": losses[0] if losses else None, "last_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
      "device": jax.devices()[0].platform, "jax": jax.__version__}), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run(main, "experiments/bench/scale.py", " --rows N")
