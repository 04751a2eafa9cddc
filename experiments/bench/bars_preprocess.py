"""BARS TaobaoAd_x1 preprocessing at scale: rows/s and peak memory of the chunked CSV reader and the cache.

The full benchmark (21.9M train + 3.1M test rows) does not fit in memory as Python objects; the reader
streams the CSVs in `BARS_CHUNK_ROWS`-row chunks into disk-backed arrays, and the cache memory-maps them on
the next load. This script writes BARS-format CSVs of `--rows` train rows (and rows // 8 test rows) with
random ids and histories of 0..T steps into a scratch directory, then times two loads, each in a fresh
process:
- `build`: cache miss (parse twice, encode, write the cache);
- `hit`: cache load (CRC check + memory map).

  python experiments/bench/bars_preprocess.py --rows 2000000 --workdir /tmp/bars_bench

Prints one JSON line per phase with rows, seconds, rows/s and the child's peak anonymous memory (MB; see
`AnonPeak`) and peak RSS (which includes mapped file pages). Compare the peak anonymous memory at two sizes
to check that memory does not grow with rows. `--keep` keeps the CSVs for another run. The generated files are not a dataset: ids
are uniform random, so most fall under the min-count and map to OOV.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recjax.data.sources.taobao_ad import CATEGORICAL

_ROWS = flags.DEFINE_integer("rows", 200_000, "train.csv rows (test.csv gets rows // 8).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/recjax_bars_bench", "Scratch directory (CSVs and cache).")
_T = flags.DEFINE_integer("max_seq_len", 50, "History length T.")
_PHASE = flags.DEFINE_string("phase", "", "Internal: run one load in this process.")
_KEEP = flags.DEFINE_bool("keep", False, "Reuse CSVs of the same size already in --workdir; keep them after.")

# Id ranges of the real TaobaoAd_x1 columns, roughly (our choice; only the width of the text matters here).
RANGES = {"userid": 1_140_000, "adgroup_id": 850_000, "campaign_id": 420_000, "customer": 250_000,
          "brand": 460_000, "cate_id": 6_800}
HEAD = ["clk", "btag_his", "cate_his", "brand_his", *CATEGORICAL, "price"]


def write_csv(path: pathlib.Path, rows: int, t: int, seed: int, chunk: int = 50_000) -> None:
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    f.write(",".join(HEAD) + "\n")
    for start in range(0, rows, chunk):
      n = min(chunk, rows - start)
      steps = rng.integers(0, t + 1, n)
      cols = {c: rng.integers(1, RANGES.get(c, 20), n) for c in CATEGORICAL}
      label = (rng.random(n) < 0.05).astype(int)
      price = np.round(rng.random(n), 4)
      lines = []
      for j in range(n):
        k = int(steps[j])
        his = ["^".join(map(str, rng.integers(1, r, k))) for r in (5, RANGES["cate_id"], RANGES["brand"])]
        lines.append(",".join([str(label[j]), *his, *(str(cols[c][j]) for c in CATEGORICAL), str(price[j])]))
      f.write("\n".join(lines) + "\n")


class AnonPeak:
  """Samples this process's anonymous resident memory (RssAnon, /proc/self/status) every 20 ms; keeps the max.

  ru_maxrss also counts the memory-mapped dataset's file pages, which the kernel can drop at will; RssAnon is
  the memory the process actually holds (heap, Python objects, numpy temporaries). Linux only.
  """

  def __init__(self):
    self.peak_kb, self._stop = 0, threading.Event()
    self._t = threading.Thread(target=self._run, daemon=True)
    self._t.start()

  def _sample(self):
    with open("/proc/self/status") as f:
      for ln in f:
        if ln.startswith("RssAnon:"):
          self.peak_kb = max(self.peak_kb, int(ln.split()[1]))

  def _run(self):
    while not self._stop.wait(0.02):
      self._sample()

  def stop_mb(self) -> float:
    self._stop.set()
    self._t.join()
    self._sample()
    return round(self.peak_kb / 1024, 1)


def load_once(workdir: pathlib.Path, t: int) -> dict:
  from recjax.data.dataset import load_dataset
  from recjax.data.sources import taobao_ad

  anon = AnonPeak()
  t0 = time.perf_counter()
  ds = load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(workdir), "variant": "bars", "max_seq_len": t})
  rows = sum(len(ds.split(s)["label"]) for s in ("train", "test"))
  checksum = int(sum(int(np.asarray(ds.split(s)["seq_len/hist"]).sum()) for s in ("train", "test")))
  dt = time.perf_counter() - t0
  return {"cache": ds.meta["cache"], "rows": rows, "seconds": round(dt, 1), "rows_per_sec": round(rows / dt),
          "peak_anon_mb": anon.stop_mb(),
          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
          "seq_len_sum": checksum}


def main(_):
  workdir = pathlib.Path(_WORKDIR.value)
  if _PHASE.value:
    print(json.dumps(load_once(workdir, _T.value)))
    return
  d = workdir / "TaobaoAd_x1"
  d.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  stamp = d / f".rows-{_ROWS.value}-t{_T.value}"
  if not (_KEEP.value and stamp.exists()):
    write_csv(d / "train.csv", _ROWS.value, _T.value, 0)
    write_csv(d / "test.csv", _ROWS.value // 8, _T.value, 1)
    stamp.touch()
  shutil.rmtree(workdir / "cache", ignore_errors=True)
  mb = sum((d / n).stat().st_size for n in ("train.csv", "test.csv")) / 2**20
  print(json.dumps({"bench": "bars_preprocess", "phase": "write_csv", "train_rows": _ROWS.value,
                    "csv_mb": round(mb), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
  env = {**os.environ, "RECJAX_CACHE_DIR": str(workdir / "cache")}
  for phase in ("build", "hit"):
    out = subprocess.run([sys.executable, __file__, f"--workdir={workdir}", f"--max_seq_len={_T.value}",
                          f"--phase={phase}"], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
      raise SystemExit(f"{phase} failed:\n{out.stderr[-3000:]}")
    line = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"bench": "bars_preprocess", "phase": phase, "train_rows": _ROWS.value, **line}), flush=True)
  if not _KEEP.value:
    shutil.rmtree(workdir)


if __name__ == "__main__":
  app.run(main)
