"""`dataset.name = "synthetic"`: in-memory synthetic TaobaoAd_x1 rows (see `recjax.data.synthetic`).

For tests and smoke runs only; never a substitute for real data in results. Rows come from
`synthetic.iter_chunks(n_rows, chunk_rows=65536, seed)`; split by row order: the first round(0.8 N) train,
the next round(0.1 N) valid, the rest test (rows are i.i.d., so order is as good as random). Reads no
files. Large N should use the streaming `iter_chunks` API instead.
"""

from __future__ import annotations

import pathlib

import numpy as np

from recjax.data import synthetic
from recjax.data.sources import _common as C

DEFAULTS: dict = dict(
    name="synthetic",
    n_rows=20_000,          # rows held in memory
    vocab="small",          # "small" (tables capped at 1,000) | "bars" (TaobaoAd_x1 sizes)
    max_seq_len=50,
    seed=0,
    data_dir="",
    features=(),
    use_cache=False,        # regenerating is as fast as reading a cache
)
CHUNK = 65536


def _check_cfg(cfg):
  n = C.check_int("n_rows", C.get(cfg, "n_rows", DEFAULTS), 3)
  vocab = C.check_choice("vocab", C.get(cfg, "vocab", DEFAULTS), ("small", "bars"))
  t = C.check_int("max_seq_len", C.get(cfg, "max_seq_len", DEFAULTS), 1)
  seed = C.check_int("seed", C.get(cfg, "seed", DEFAULTS))
  return n, vocab, t, seed


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """No files; validates the config (ConfigError)."""
  _check_cfg(cfg)
  return {}


def preprocess_options(cfg) -> dict:
  n, vocab, t, seed = _check_cfg(cfg)
  return {"n_rows": n, "vocab": vocab, "max_seq_len": t, "seed": seed}


def build(cfg, files):
  n, vocab, t, seed = _check_cfg(cfg)
  chunks = list(synthetic.iter_chunks(n, CHUNK, seed, t=t, vocab=vocab))
  arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  n_tr, n_va = int(round(0.8 * n)), int(round(0.1 * n))
  which = np.r_[np.zeros(n_tr, np.int8), np.ones(n_va, np.int8), np.full(n - n_tr - n_va, 2, np.int8)]
  meta = {"synthetic": True, "n_rows": n, "vocab": vocab,
          "note": "synthetic rows with a planted signal; not real data, never for result tables"}
  return synthetic.schema(vocab, t), C.take_splits(arrays, which), meta
