"""Taobao display-ad CTR (Ali_Display_Ad_Click + behavior_log): two readers, one TaobaoAd_x1 schema.

`dataset.variant` picks the reader:

- "dmr": the DMR paper's preprocessing (Lyu et al., AAAI 2020), 267 comma-separated columns per row:
  `cont_btag×50, his_cate×50, his_brand×50, mask×50, match_mask×50, uid, cms_segid, cms_group_id,
  final_gender_code, age_level, pvalue_level, shopping_level, occupation, new_user_class_level, mid, cate_id,
  campaign_id, customer, brand, price, pid, target`. Files in `<data_dir>/taobao_ad_dmr/`:
  `deepctr_alimama_sample.txt` (header + 99 rows) and `paddlerec_alimama_sampled_train.txt` (no header).
  Rows are read in that order and exact duplicate rows are dropped (first occurrence kept).
  What we found in the shared files: 599 rows, 324 distinct (the shared-data README says 520: the PaddleRec
  file repeats rows internally, 500 lines / 304 distinct, and 79 distinct rows occur in both files); every
  history with mask < 50 has its mask zeros at the start, i.e. the data is left-padded, and the values are 0
  exactly where mask = 0. The reader nevertheless moves the mask-1 positions (keeping their order) to the
  end, so right-padded input would also come out left-padded; `seq_len` = the mask sum. We assume the DMR
  order is oldest first, most recent last (the files have no timestamps to check it). `match_mask` (history
  category == target category) is derivable and dropped, as BARS does. `btag` (behaviour type of the target)
  is not in the DMR files: it is 1 for every row, as in the BARS conversion script
  (reczoo/Datasets Taobao/TaobaoAd_x1/convert_taobaoad_x1.py, `part_df["btag"] = [1] * len(data_df)`).
  Label balance found: the 599 rows have 212 positives (CTR 0.35; the README's 0.42 is the PaddleRec file
  alone, 210/500), but the positives are mostly repeats: the 324 distinct rows hold only 15 positives
  (CTR 0.046). De-duplication is kept (a repeated row would otherwise sit in train and test at once).
  Split (our choice; tiny data): stratified by label, so each split has positives: positives and negatives
  are each permuted with `dataset.seed` and cut round(0.8 n) train, round(0.1 n) valid, the rest test.
- "bars": the BARS `TaobaoAd_x1` CSVs (`train.csv`, `test.csv` with a header; reczoo/TaobaoAd_x1 on the
  Hugging Face hub) in `<data_dir>/TaobaoAd_x1/`. Columns (by header name, order free): `clk` (label),
  `btag_his`, `cate_his`, `brand_his` ('^'-separated ids, oldest first, possibly empty), the 16 categorical
  columns below, `price`. Sequences keep their last T ids (FuxiCTR pads and truncates at the front, "pre").
  Protocol (`dataset.protocol`):
  - "bars" (default): valid = test, exactly as the BARS/FuxiCTR configs (`valid_data: test.csv`), so early
    stopping and model selection see the test set; results on it must say so (specs/interformer.md §10).
  - "honest": the last 10% of train.csv rows (file order; train.csv is time-sorted by its conversion, from
    `train_sorted.csv`) become valid and are removed from train (our choice); test unchanged.

Features (the same for both readers; names of the BARS config; id 0 = padding):

| name | kind | table | meaning |
|---|---|---|---|
| userid, cms_segid, cms_group_id, final_gender_code, age_level, pvalue_level, shopping_level, occupation, new_user_class_level | sparse | own | user profile |
| adgroup_id (DMR `mid`), cate_id, campaign_id, customer, brand, pid, btag | sparse | own | ad / context |
| price | dense | | as in the files (already normalised by the DMR preprocessing) |
| btag_his, cate_his, brand_his | sequence, group `hist`, T = max_seq_len | btag, cate_id, brand | behaviour history |

Vocabularies (our choice of layout, BARS rule of counting): per table, the raw values of the *train* rows
(the id column and, for a shared table, the non-zero history tokens together) seen at least `min_count`
times get ids 2.. in sorted raw order; any other value → 1 (OOV); history padding (raw 0) → 0. A raw 0 in a
categorical column is a real value (BARS reads columns as strings, "0" included). `min_count` defaults to
10 for "bars" (BARS `min_categr_count`) and 1 for "dmr".

Batch extras: `group_id` = raw userid. No `time` (neither format carries it).
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

from recjax.data import cache as cache_lib
from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.data.sources import _common as C
from recjax.errors import ConfigError, DataError

DEFAULTS: dict = dict(
    name="taobao_ad",
    variant="dmr",          # "dmr" (shared sample) | "bars" (TaobaoAd_x1 train.csv/test.csv)
    folder="",              # "" = taobao_ad_dmr (dmr) | TaobaoAd_x1 (bars)
    data_dir="",
    max_seq_len=50,         # T of the "hist" group (both formats have 50)
    min_count=None,         # None = 10 for bars (BARS min_categr_count), 1 for dmr
    protocol="bars",        # bars variant: "bars" (valid = test, as BARS) | "honest" (last 10% of train)
    seed=0,                 # dmr split seed
    features=(),
    use_cache=True,
)

CATEGORICAL = ("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
               "shopping_level", "occupation", "new_user_class_level", "adgroup_id", "cate_id", "campaign_id",
               "customer", "brand", "pid", "btag")
SEQUENCES = (("btag_his", "btag"), ("cate_his", "cate_id"), ("brand_his", "brand"))
DMR_FILES = ("deepctr_alimama_sample.txt", "paddlerec_alimama_sampled_train.txt")
DMR_TAIL = ("uid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
            "shopping_level", "occupation", "new_user_class_level", "mid", "cate_id", "campaign_id", "customer",
            "brand", "price", "pid", "target")
DMR_T = 50
DMR_COLS = 5 * DMR_T + len(DMR_TAIL)     # 267
BARS_FILES = ("train.csv", "test.csv")
BARS_CHUNK_ROWS = 100_000   # rows the BARS reader parses at once (about 0.2 GB of Python strings); our choice
HOW = {"dmr": "The DMR-format sample comes from the DeepCTR / PaddleRec example data (alimama sample).",
       "bars": "Download train.csv and test.csv of reczoo/TaobaoAd_x1 (Hugging Face hub) and check their md5 "
               "(train eaabfc8629f23519b04593e26c7522fc, test f5ae6197e52385496d46e2867c1c8da1)."}


def _check_cfg(cfg):
  variant = C.check_choice("variant", C.get(cfg, "variant", DEFAULTS), ("dmr", "bars"))
  folder = C.get(cfg, "folder", DEFAULTS)
  if not isinstance(folder, str):
    raise ConfigError(f"dataset.folder: expected a string, got {folder!r}")
  folder = folder or {"dmr": "taobao_ad_dmr", "bars": "TaobaoAd_x1"}[variant]
  t = C.check_int("max_seq_len", C.get(cfg, "max_seq_len", DEFAULTS), 1)
  mc = C.get(cfg, "min_count", DEFAULTS)
  mc = C.check_int("min_count", {"dmr": 1, "bars": 10}[variant] if mc is None else mc, 1)
  protocol = C.check_choice("protocol", C.get(cfg, "protocol", DEFAULTS), ("bars", "honest"))
  seed = C.check_int("seed", C.get(cfg, "seed", DEFAULTS))
  return variant, folder, t, mc, protocol, seed


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  variant, folder, *_ = _check_cfg(cfg)
  names = DMR_FILES if variant == "dmr" else BARS_FILES
  d = C.require_files(data_dir, folder, names, HOW[variant])
  return {n: d / n for n in names}


def preprocess_options(cfg) -> dict:
  variant, _, t, mc, protocol, seed = _check_cfg(cfg)
  return {"variant": variant, "max_seq_len": t, "min_count": mc,
          "protocol": protocol if variant == "bars" else None, "seed": seed if variant == "dmr" else None}


# ---------------------------------------------------------------------------------------------- readers


def _left_pad(vals: np.ndarray, valid: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
  """Moves the valid positions of each row (order kept) to the end, zero-fills the rest, keeps the last t."""
  order = np.argsort(valid, axis=1, kind="stable")          # invalid first, then valid, each in order
  out = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(vals, order, 1), 0)
  n = valid.sum(1)
  if t <= out.shape[1]:
    return out[:, out.shape[1] - t:], np.minimum(n, t)
  return np.pad(out, ((0, 0), (t - out.shape[1], 0))), n


def read_dmr(files: dict[str, pathlib.Path], t: int) -> tuple[dict, dict]:
  """Reads and de-duplicates the DMR-format files.

  Returns:
    (raw, facts): raw = {"cat": {name: [N] int64}, "price": [N] f64, "his": {name: [N, t] int64, 0 = pad},
    "len": [N] int64, "label": [N] f32}; facts = counts of what was found (rows, duplicates, padding sides).

  Raises:
    DataError: file, 1-based line and field for a wrong column count, a non-numeric value, a mask other than
      0/1, a non-zero value where mask = 0 or a zero where mask = 1, a target other than 0/1, a
      non-finite price, or a header that does not match the DMR layout.
  """
  names = [f"cont_btag[{k}]" for k in range(DMR_T)] + [f"his_cate[{k}]" for k in range(DMR_T)] + \
      [f"his_brand[{k}]" for k in range(DMR_T)] + [f"mask[{k}]" for k in range(DMR_T)] + \
      [f"match_mask[{k}]" for k in range(DMR_T)] + list(DMR_TAIL)
  rows, where = [], []
  for fname in DMR_FILES:
    path = files[fname]
    lines = C.read_lines(path)
    start = 0
    if lines and lines[0].split(",")[0].strip() == "cont_btag":
      head = lines[0].split(",")
      if len(head) != DMR_COLS or head[-len(DMR_TAIL):] != list(DMR_TAIL):
        raise C.bad(path, 1, "header", f"expected the {DMR_COLS}-column DMR header ending in {list(DMR_TAIL)}")
      start = 1
    for i in range(start, len(lines)):
      if lines[i].strip():
        rows.append(lines[i].strip())
        where.append((path, i + 1))
  if not rows:
    raise DataError(f"no rows in {[str(files[f]) for f in DMR_FILES]}")
  _, first = np.unique(np.array(rows), return_index=True)
  first = np.sort(first)
  rows_u = [rows[i] for i in first]
  where_u = [where[i] for i in first]
  parts = [r.split(",") for r in rows_u]
  for (path, ln), p in zip(where_u, parts):
    if len(p) != DMR_COLS:
      raise C.bad(path, ln, "columns", f"expected {DMR_COLS} comma-separated fields, got {len(p)}")
  try:
    a = np.array(parts, dtype=object).astype(np.float64)
  except ValueError:
    for (path, ln), p in zip(where_u, parts):
      for f, s in zip(names, p):
        try:
          float(s)
        except ValueError:
          raise C.bad(path, ln, f, f"expected a number, got {s!r}") from None
    raise

  def fail(r, col, msg):
    path, ln = where_u[r]
    raise C.bad(path, ln, names[col], msg)

  bad = np.argwhere(~np.isfinite(a))
  if bad.size:
    fail(int(bad[0, 0]), int(bad[0, 1]), f"non-finite value {a[bad[0, 0], bad[0, 1]]}")
  int_cols = [c for c in range(DMR_COLS) if c != 5 * DMR_T + DMR_TAIL.index("price")]
  bad = np.argwhere(a[:, int_cols] != np.round(a[:, int_cols]))
  if bad.size:
    fail(int(bad[0, 0]), int_cols[bad[0, 1]], f"expected an integer, got {a[bad[0, 0], int_cols[bad[0, 1]]]}")
  mask = a[:, 3 * DMR_T:4 * DMR_T]
  bad = np.argwhere((mask != 0) & (mask != 1))
  if bad.size:
    fail(int(bad[0, 0]), 3 * DMR_T + int(bad[0, 1]), f"mask must be 0 or 1, got {mask[bad[0, 0], bad[0, 1]]}")
  valid = mask == 1
  his = {}
  for k, (name, _) in enumerate(SEQUENCES):
    v = a[:, k * DMR_T:(k + 1) * DMR_T].astype(np.int64)
    bad = np.argwhere(valid != (v != 0))
    if bad.size:
      r, c = (int(x) for x in bad[0])
      fail(r, k * DMR_T + c, f"value {v[r, c]} disagrees with mask {int(mask[r, c])} (0 must mark padding)")
    his[name], length = _left_pad(v, valid, t)
  tail = {n: a[:, 5 * DMR_T + j] for j, n in enumerate(DMR_TAIL)}
  label = tail["target"]
  bad = np.flatnonzero((label != 0) & (label != 1))
  if bad.size:
    fail(int(bad[0]), DMR_COLS - 1, f"expected 0 or 1, got {label[bad[0]]}")
  rename = {"uid": "userid", "mid": "adgroup_id"}
  cat = {rename.get(n, n): tail[n].astype(np.int64) for n in DMR_TAIL if n not in ("price", "target")}
  cat["btag"] = np.ones(len(label), np.int64)          # as the BARS conversion script
  n_valid = valid.sum(1)
  partial = n_valid < DMR_T
  left = np.array([(~valid[r, :DMR_T - n_valid[r]]).all() for r in range(len(valid))])
  right = np.array([(~valid[r, n_valid[r]:]).all() for r in range(len(valid))])
  facts = {"rows_read": len(rows), "rows_distinct": len(rows_u),
           "histories_partial": int(partial.sum()), "partial_left_padded": int((partial & left).sum()),
           "partial_right_padded": int((partial & right).sum()), "histories_empty": int((n_valid == 0).sum())}
  raw = {"cat": cat, "price": tail["price"], "his": his, "len": length, "label": label.astype(np.float32)}
  return raw, facts


def _bars_header(path: pathlib.Path) -> dict[str, int]:
  """{column name: index} of the columns we read, from the header line. Raises DataError if any is missing."""
  with open(path, encoding="utf-8", newline="") as f:
    first = f.readline().rstrip("\r\n")
  if not first.strip():
    raise DataError(f"{path}: empty file; expected a header with clk, {', '.join(CATEGORICAL)}, price, ...")
  head = [h.strip() for h in first.split(",")]
  need = ("clk", *CATEGORICAL, "price", *(s for s, _ in SEQUENCES))
  miss = [c for c in need if c not in head]
  if miss:
    raise C.bad(path, 1, miss[0], f"header lacks columns {miss}")
  return {"__width__": len(head), **{c: head.index(c) for c in need}}


def iter_bars_csv(path: pathlib.Path, t: int, chunk_rows: int | None = None):
  """Reads one TaobaoAd_x1 CSV (header required; columns found by name) in chunks of `chunk_rows` rows.

  Memory is O(chunk_rows), whatever the file's size (our choice; the full train.csv has 21.9M rows).

  Yields:
    raw dicts as `read_dmr`'s, rows in file order; blank lines are skipped.

  Raises:
    DataError: file, 1-based line and field for a missing header column, a wrong field count, a non-integer
      id or history token, a history id <= 0, histories of different lengths, a label other than 0/1, or a
      non-finite price.
  """
  col = _bars_header(path)
  chunk_rows = chunk_rows or BARS_CHUNK_ROWS
  lines, numbers = [], []
  with open(path, encoding="utf-8", newline="") as f:
    f.readline()
    for n, ln in enumerate(f, 2):
      if ln.strip():
        lines.append(ln.rstrip("\r\n"))
        numbers.append(n)
        if len(lines) == chunk_rows:
          yield _parse_bars_rows(path, col, lines, np.array(numbers, np.int64), t)
          lines, numbers = [], []
  if lines:
    yield _parse_bars_rows(path, col, lines, np.array(numbers, np.int64), t)


def count_bars_rows(path: pathlib.Path) -> int:
  """Non-blank lines after the header."""
  with open(path, encoding="utf-8", newline="") as f:
    f.readline()
    return sum(1 for ln in f if ln.strip())


def _parse_history(path, name: str, cells: np.ndarray, line: np.ndarray, t: int):
  """'^'-separated ids -> ([N, T] int64 left-padded with the last T ids, [N] full lengths), vectorised."""
  cells = [c.strip() for c in cells]
  counts = np.array([c.count("^") + 1 if c else 0 for c in cells], np.int64)
  joined = "^".join(c for c in cells if c)
  toks = None
  with warnings.catch_warnings():
    warnings.simplefilter("error")          # numpy warns (not raises) when text parsing stops early
    try:
      toks = np.fromstring(joined, np.int64, sep="^") if joined else np.zeros(0, np.int64)
    except (ValueError, DeprecationWarning):
      pass
  if toks is None or toks.size != counts.sum() or (toks == np.iinfo(np.int64).max).any():
    for j, c in enumerate(cells):
      try:
        if c and any(abs(int(x)) >= np.iinfo(np.int64).max for x in c.split("^")):
          raise ValueError
      except ValueError:
        raise C.bad(path, int(line[j]), name, f"expected '^'-separated integers, got {c[:100]!r}") from None
    raise DataError(f"{path}: field {name!r}: could not parse the histories of lines {line[0]}-{line[-1]}")
  ends = np.cumsum(counts)
  if (toks <= 0).any():
    j = int(np.searchsorted(ends, int(np.flatnonzero(toks <= 0)[0]), "right"))
    raise C.bad(path, int(line[j]), name, f"history ids must be > 0 (0 is padding), got {cells[j][:100]!r}")
  keep = np.minimum(counts, t)
  pos = np.arange(t)[None, :]
  valid = pos >= (t - keep)[:, None]
  src = ends[:, None] - t + pos
  out = np.where(valid, toks[np.clip(src, 0, max(toks.size - 1, 0))] if toks.size else 0, 0)
  return out.astype(np.int64), counts


def _parse_bars_rows(path, col: dict[str, int], lines: list[str], line: np.ndarray, t: int) -> dict:
  """One chunk of BARS CSV lines -> raw dict (see `iter_bars_csv`)."""
  width = col["__width__"]
  parts = [ln.split(",") for ln in lines]
  for j, p in enumerate(parts):
    if len(p) != width:
      raise C.bad(path, int(line[j]), "columns", f"expected {width} fields, got {len(p)}")
  a = np.array(parts, dtype=object).reshape(len(parts), width)

  def num(name, kind):
    s = a[:, col[name]]
    try:
      return s.astype(kind)
    except (ValueError, OverflowError):
      for j, x in enumerate(s):
        try:
          kind(x) if kind is float else int(x)
        except ValueError:
          raise C.bad(path, int(line[j]), name, f"expected {'a number' if kind is float else 'an integer'}, "
                      f"got {x!r}") from None
      raise

  label = num("clk", float)
  bad = np.flatnonzero((label != 0) & (label != 1))
  if bad.size:
    raise C.bad(path, int(line[bad[0]]), "clk", f"expected 0 or 1, got {a[bad[0], col['clk']]!r}")
  price = num("price", float)
  bad = np.flatnonzero(~np.isfinite(price))
  if bad.size:
    raise C.bad(path, int(line[bad[0]]), "price", f"expected a finite number, got {a[bad[0], col['price']]!r}")
  cat = {c: num(c, int).astype(np.int64) for c in CATEGORICAL}
  his, length = {}, None
  for name, _ in SEQUENCES:
    his[name], ln = _parse_history(path, name, a[:, col[name]], line, t)
    if length is None:
      length = ln
    elif not np.array_equal(length, ln):
      j = int(np.flatnonzero(length != ln)[0])
      raise C.bad(path, int(line[j]), name, f"length {ln[j]} differs from btag_his length {length[j]} "
                  "(the three histories are aligned)")
  return {"cat": cat, "price": price, "his": his, "len": np.minimum(length, t), "label": label.astype(np.float32)}


def stratified_split(label: np.ndarray, seed: int) -> np.ndarray:
  """0/1/2 per row: `C.random_split` (80/10/10, rounding) applied to the positives and to the negatives
  separately, with seeds (seed, 1) and (seed, 0), so every split gets round(0.1 P) of the P positives."""
  which = np.zeros(len(label), np.int8)
  for cls in (0, 1):
    idx = np.flatnonzero(label == cls)
    which[idx] = C.random_split(idx.size, np.random.SeedSequence([seed, cls]).generate_state(1)[0])
  return which


# ---------------------------------------------------------------------------------------------- encoding


def _table_values(raw: dict, rows) -> dict[str, np.ndarray]:
  """Per categorical table, the raw values counted for its vocabulary: the id column's `rows` and, for a table
  shared with a history, that history's non-zero tokens of `rows`."""
  shared = {table: name for name, table in SEQUENCES}
  out = {}
  for c in CATEGORICAL:
    vals = raw["cat"][c][rows]
    if c in shared:
      h = raw["his"][shared[c]][rows]
      vals = np.concatenate([vals, h[h != 0]])
    out[c] = vals
  return out


class _VocabCounter:
  """Distinct values and their counts per table, accumulated over chunks (merged every few chunks)."""

  def __init__(self):
    self.parts: dict[str, list] = {c: [] for c in CATEGORICAL}

  def add(self, values: dict[str, np.ndarray]) -> None:
    for c, v in values.items():
      self.parts[c].append(np.unique(v, return_counts=True))
      if len(self.parts[c]) > 8:
        self.parts[c] = [self._merge(self.parts[c])]

  @staticmethod
  def _merge(parts):
    u = np.concatenate([p[0] for p in parts])
    n = np.concatenate([p[1] for p in parts])
    uu, inv = np.unique(u, return_inverse=True)
    return uu, np.bincount(inv, weights=n, minlength=uu.size).astype(np.int64)

  def vocabs(self, min_count: int) -> dict[str, np.ndarray]:
    """Sorted raw values seen at least `min_count` times, per table (`C.fit_vocab` over all chunks)."""
    out = {}
    for c, parts in self.parts.items():
      u, n = self._merge(parts) if parts else (np.zeros(0, np.int64), np.zeros(0, np.int64))
      out[c] = u[n >= min_count]
    return out


def _encode_rows(raw: dict, vocabs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Raw rows -> Batch-format arrays: vocab[j] -> 2 + j, unseen -> 1 (OOV), history padding -> 0."""
  return {
      "sparse": np.stack([C.apply_vocab(raw["cat"][c], vocabs[c], offset=2, oov=1) for c in CATEGORICAL],
                         axis=1).astype(np.int32),
      "dense": raw["price"].astype(np.float32)[:, None],
      **{f"seq/{name}": C.apply_vocab(raw["his"][name], vocabs[table], offset=2, oov=1, pad=0).astype(np.int32)
         for name, table in SEQUENCES},
      "seq_len/hist": raw["len"].astype(np.int32),
      "label": raw["label"].astype(np.float32),
      "group_id": raw["cat"]["userid"].astype(np.int32),
  }


def _schema(vocabs: dict[str, np.ndarray], t: int) -> Schema:
  return Schema(
      sparse=tuple(SparseFeature(c, len(vocabs[c]) + 2) for c in CATEGORICAL),
      dense=("price",),
      sequences=tuple(SequenceFeature(name, len(vocabs[table]) + 2, t, group="hist", table=table)
                      for name, table in SEQUENCES),
  )


def encode(raw: dict, which: np.ndarray, min_count: int, t: int):
  """Fits vocabularies on rows with which == 0 and encodes every row (in memory; the DMR sample).

  Returns:
    (schema, arrays) in the Batch format (all rows; split with `which` afterwards).
  """
  counter = _VocabCounter()
  counter.add(_table_values(raw, which == 0))
  vocabs = counter.vocabs(min_count)
  return _schema(vocabs, t), _encode_rows(raw, vocabs)


def _build_bars(files: dict[str, pathlib.Path], t: int, min_count: int, protocol: str, chunk_rows=None):
  """The BARS CSVs, streamed twice in chunks: pass 1 counts the vocabulary of the train rows, pass 2 encodes
  every row into disk-backed arrays (`C.disk_array`), so memory stays flat in the number of rows.

  Returns:
    (schema, splits, n_train_rows, n_test_rows); the splits are row ranges (views) of the same arrays.
  """
  n_tr, n_te = count_bars_rows(files["train.csv"]), count_bars_rows(files["test.csv"])
  if n_tr == 0:
    raise DataError(f"{files['train.csv']}: no data rows after the header")
  fit_end = n_tr - n_tr // 10 if protocol == "honest" else n_tr
  counter, seen = _VocabCounter(), 0
  for raw in iter_bars_csv(files["train.csv"], t, chunk_rows):
    k = len(raw["label"])
    if seen < fit_end:
      counter.add(_table_values(raw, slice(0, min(k, fit_end - seen))))
    seen += k
  vocabs = counter.vocabs(min_count)
  schema = _schema(vocabs, t)
  scratch = cache_lib.cache_dir(files["train.csv"].parents[1])   # writable; the data directory may not be
  n = n_tr + n_te
  arrays, at = {}, 0
  for name in BARS_FILES:
    for raw in iter_bars_csv(files[name], t, chunk_rows):
      enc = _encode_rows(raw, vocabs)
      k = len(enc["label"])
      for key, v in enc.items():
        if key not in arrays:                 # layout (dtype, trailing shape) as `_encode_rows` makes it
          arrays[key] = C.disk_array((n, *v.shape[1:]), v.dtype, scratch)
        arrays[key][at:at + k] = v
      at += k
  rows = {"train": slice(0, fit_end), "valid": slice(fit_end, n_tr) if protocol == "honest" else slice(n_tr, n),
          "test": slice(n_tr, n)}
  return schema, {s: {k: v[r] for k, v in arrays.items()} for s, r in rows.items()}, n_tr, n_te


def build(cfg, files: dict[str, pathlib.Path]):
  """Reads the chosen format, splits, fits vocabularies on train, encodes.

  Returns:
    (schema, {"train", "valid", "test": arrays}, meta).
  """
  variant, _, t, mc, protocol, seed = _check_cfg(cfg)
  if variant == "dmr":
    raw, facts = read_dmr(files, t)
    which = stratified_split(raw["label"], seed)
    schema, arrays = encode(raw, which, mc, t)
    splits = C.take_splits(arrays, which)
    meta = {**facts, "variant": "dmr", "min_count": mc,
            "positives_distinct": int(raw["label"].sum()),
            "split": f"seeded random 80/10/10 over distinct rows, stratified by label (seed {seed})",
            "padding_found": "left (mask zeros first) in every partial history"
            if facts["partial_left_padded"] == facts["histories_partial"] else "mixed; converted to left"}
    return schema, splits, meta
  schema, splits, n_tr, n_te = _build_bars(files, t, mc, protocol)
  meta = {"variant": "bars", "min_count": mc, "protocol": protocol, "train_rows": n_tr, "test_rows": n_te,
          "protocol_note": ("BARS protocol: valid = test (model selection sees the test set); say so in results"
                            if protocol == "bars" else "honest: valid = last 10% of train.csv rows, test untouched")}
  return schema, splits, meta
