"""Criteo Display Advertising Challenge (Kaggle) CSV: 13 integer + 26 categorical fields, no sequences.

File: `<data_dir>/<folder>/<file>`, CSV with header `label,I1..I13,C1..C26` (comma-separated; an empty field
is missing). The shared sample is `criteo_sample/deepctr_criteo_sample.txt` (200 random rows). Columns are
found by header name, so their order does not matter; other columns are ignored. Source: Criteo AI Lab,
Kaggle Display Advertising Challenge (2014).

Dense features (26, in this order):
- `I1..I13`: log(1 + x) for x >= 0. Negative values (I2 has -1/-2/-3 in the full data) are clamped to 0
  before the log (our choice; the usual `log(x+1)` pipelines would give NaN or -inf there). Missing → 0.
- `I1_missing..I13_missing`: 1.0 where the field is empty, else 0.0 (issue 3).

Sparse features `C1..C26` (one table each), mode `dataset.categorical`:
- "vocab" (default): per field, the values seen at least `min_count` times in the *train* split, in sorted
  order, get ids 2..V+1; other values → 1 (OOV bucket); missing → 0. vocab_size = V + 2.
- "hash": id = 1 + (md5(field name + "=" + value) mod `hash_buckets`); missing → 0; vocab_size =
  hash_buckets + 1. Needs no fitting, so valid/test never change the ids.

No sequence features (the schema has none; models must accept that). No time. `group_id`: Criteo has no
user, so every row gets group 0 (our choice): gAUC equals AUC on this dataset.

Split: a seeded permutation (`dataset.seed`) of the data rows: the first round(0.8 N) train, the next
round(0.1 N) valid, the rest test; rows keep file order within each split.
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np

from recjax.data.schema import Schema, SparseFeature
from recjax.data.sources import _common as C
from recjax.errors import DataError

DEFAULTS: dict = dict(
    name="criteo",
    folder="criteo_sample",
    file="deepctr_criteo_sample.txt",
    data_dir="",
    categorical="vocab",     # "vocab" (min-count vocabulary + OOV id 1) | "hash"
    min_count=1,             # vocab mode: keep values seen >= min_count times in train (BARS Criteo_x4 uses 10)
    hash_buckets=1 << 20,    # hash mode: ids 1..hash_buckets
    seed=0,                  # split seed
    features=(),
    use_cache=True,
)

INT_FIELDS = tuple(f"I{k}" for k in range(1, 14))
CAT_FIELDS = tuple(f"C{k}" for k in range(1, 27))
HOW = ("Get the Criteo Kaggle Display Advertising Challenge data from the Criteo AI Lab download page "
       "(accepting its terms) and write it as a CSV with header label,I1..I13,C1..C26, or set dataset.file.")


def _check_cfg(cfg):
  folder, file = C.folder_and_file(cfg, DEFAULTS)
  mode = C.check_choice("categorical", C.get(cfg, "categorical", DEFAULTS), ("vocab", "hash"))
  mc = C.check_int("min_count", C.get(cfg, "min_count", DEFAULTS), 1)
  hb = C.check_int("hash_buckets", C.get(cfg, "hash_buckets", DEFAULTS), 1)
  seed = C.check_int("seed", C.get(cfg, "seed", DEFAULTS))
  return folder, file, mode, mc, hb, seed


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  folder, file, *_ = _check_cfg(cfg)
  return {"csv": C.require_files(data_dir, folder, (file,), HOW) / file}


def preprocess_options(cfg) -> dict:
  _, _, mode, mc, hb, seed = _check_cfg(cfg)
  return {"categorical": mode, "min_count": mc if mode == "vocab" else None,
          "hash_buckets": hb if mode == "hash" else None, "seed": seed}


def parse(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Parses the CSV.

  Returns:
    (label [N] f32, ints [N, 13] f64 with NaN = missing, cats [N, 26] str ("" = missing), line [N] int64).

  Raises:
    DataError: file, 1-based line and field for a missing header column, a wrong field count, a label other
      than 0/1, or a non-numeric integer field.
  """
  lines = C.read_lines(path)
  if not lines:
    raise DataError(f"{path}: empty file; expected a header label,I1..I13,C1..C26")
  header = lines[0].split(",")
  missing = [c for c in ("label", *INT_FIELDS, *CAT_FIELDS) if c not in header]
  if missing:
    raise C.bad(path, 1, missing[0], f"header lacks columns {missing}")
  col = {c: header.index(c) for c in ("label", *INT_FIELDS, *CAT_FIELDS)}
  keep = [i for i in range(1, len(lines)) if lines[i].strip()]
  parts = [lines[i].split(",") for i in keep]
  for j, p in enumerate(parts):
    if len(p) != len(header):
      raise C.bad(path, keep[j] + 1, "columns", f"expected {len(header)} fields, got {len(p)}")
  a = np.array(parts, dtype=object).reshape(len(parts), len(header))
  line = np.array(keep, np.int64) + 1
  lab = a[:, col["label"]]
  bad = np.flatnonzero(~np.isin(lab.astype(str), ("0", "1", "0.0", "1.0")))
  if bad.size:
    raise C.bad(path, int(line[bad[0]]), "label", f"expected 0 or 1, got {lab[bad[0]]!r}")
  label = lab.astype(np.float64).astype(np.float32)
  ints = np.full((len(parts), len(INT_FIELDS)), np.nan)
  for k, f in enumerate(INT_FIELDS):
    s = a[:, col[f]].astype(str)
    present = np.char.str_len(np.char.strip(s)) > 0
    try:
      ints[present, k] = s[present].astype(np.float64)
    except ValueError:
      for j in np.flatnonzero(present):
        try:
          float(s[j])
        except ValueError:
          raise C.bad(path, int(line[j]), f, f"expected a number or empty, got {s[j]!r}") from None
      raise
    bad = np.flatnonzero(present & ~np.isfinite(ints[:, k]))
    if bad.size:
      raise C.bad(path, int(line[bad[0]]), f, f"expected a finite number, got {s[bad[0]]!r}")
  cats = np.stack([np.char.strip(a[:, col[f]].astype(str)) for f in CAT_FIELDS], axis=1) if len(parts) else \
      np.zeros((0, len(CAT_FIELDS)), str)
  return label, ints, cats, line


def _hash_ids(field: str, values: np.ndarray, buckets: int) -> np.ndarray:
  u, inv = np.unique(values, return_inverse=True)
  h = np.array([0 if v == "" else 1 + int.from_bytes(hashlib.md5(f"{field}={v}".encode()).digest()[:8], "little")
                % buckets for v in u], np.int64)
  return h[inv].astype(np.int32)


def build(cfg, files: dict[str, pathlib.Path]):
  """Parses, splits, encodes. Returns (schema, {"train", "valid", "test": arrays}, meta)."""
  _, _, mode, mc, hb, seed = _check_cfg(cfg)
  label, ints, cats, _ = parse(files["csv"])
  n = len(label)
  if n == 0:
    raise DataError(f"{files['csv']}: no data rows after the header")
  which = C.random_split(n, seed)
  miss = np.isnan(ints)
  dense = np.concatenate([np.log1p(np.maximum(np.where(miss, 0.0, ints), 0.0)), miss.astype(np.float64)],
                         axis=1).astype(np.float32)
  sparse = np.zeros(cats.shape, np.int32)
  sizes = []
  for k, f in enumerate(CAT_FIELDS):
    v = cats[:, k]
    if mode == "hash":
      sparse[:, k] = _hash_ids(f, v, hb)
      sizes.append(hb + 1)
    else:
      vocab = C.fit_vocab(v[which == 0], mc, ignore="")
      sparse[:, k] = C.apply_vocab(v, vocab, offset=2, oov=1, pad="")
      sizes.append(len(vocab) + 2)
  arrays = {"sparse": sparse, "dense": dense, "label": label, "group_id": np.zeros(n, np.int32)}
  splits = C.take_splits(arrays, which)
  schema = Schema(sparse=tuple(SparseFeature(f, s) for f, s in zip(CAT_FIELDS, sizes)),
                  dense=(*INT_FIELDS, *(f"{f}_missing" for f in INT_FIELDS)))
  meta = {
      "num_rows": n, "categorical": mode, "min_count": mc, "hash_buckets": hb,
      "missing_rate": {f: float(miss[:, k].mean()) for k, f in enumerate(INT_FIELDS)},
      "group_id": "0 for every row (no user in Criteo): gAUC equals AUC",
      "split": f"seeded random 80/10/10 (seed {seed})",
  }
  return schema, splits, meta
