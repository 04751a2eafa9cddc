"""MovieLens 100K (GroupLens) as a CTR dataset with behaviour sequences.

Files (official zip, extracted to `<data_dir>/ml-100k/`): `u.data` (user \\t item \\t rating \\t unix time),
`u.item` (id|title|release date|video release date|IMDb URL|19 genre flags), `u.user`
(id|age|gender|occupation|zip). Source: Harper & Konstan, "The MovieLens Datasets" (2015).

Label: 1 if rating >= 4 else 0 (issue 2).

Split (issue 2, exactly): per user, ratings sorted stably by (timestamp, file order); the last floor(n/10)
are test, the floor(n/10) before them validation, the rest train. Reference counts: train 80,808
(positive rate 0.5720), valid 9,596 (0.4813), test 9,596 (0.4722).

Features (id 0 = padding / unknown in every table; our choices where marked):

| name            | kind     | vocab | meaning                                                                  |
|-----------------|----------|-------|--------------------------------------------------------------------------|
| user_id         | sparse   | max id + 1 (944) | raw user id                                                   |
| item_id         | sparse   | max id + 1 (1683) | raw movie id                                                 |
| gender          | sparse   | 3     | M=1, F=2                                                                 |
| age             | sparse   | 8     | buckets of MovieLens-1M: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ → 1..7 |
| occupation      | sparse   | 22    | index in `OCCUPATIONS` (the 21 of u.occupation) + 1                      |
| zip_prefix      | sparse   | 12    | our choice: first digit d of a numeric zip → d+1 (US ZIP zone); non-numeric (Canadian) → 11 |
| first_genre     | sparse   | 20    | our choice: first set genre flag (u.genre order) + 1; none → 0           |
| release_year    | sparse   | 14    | our choice: buckets `YEAR_EDGES` (decades, then single years 1993..1998) → 1..13 |
| genre_<g> ×19   | dense    |       | the 19 genre flags (multi-hot), 0/1                                      |
| release_year_norm | dense  |       | our choice: (year − mean) / std over movies with a date; missing → 0      |
| hist_item       | sequence | = item_id | items the user rated strictly earlier, left-padded, most recent last (table item_id) |
| hist_genre      | sequence | = first_genre | first genre of each hist item (table first_genre)              |
| hist_rating     | sequence | 6     | the rating 1..5 of each earlier rating (our choice; `history_ratings`)   |

"Strictly earlier" means earlier in the user's (timestamp, file order) order, so ties in time are broken
by file order; an example's history never contains itself or anything after it, and a test example's
history may contain the user's train and validation ratings.

Batch extras: `group_id` [N] i32 = user id; `time` [N] i64 = unix seconds.
"""

from __future__ import annotations

import datetime
import logging
import pathlib

import numpy as np

from recjax.data.datadir import ensure_files
from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# config.dataset fields of this source (experiment configs start from a copy of this dict).
DEFAULTS: dict = {
    "name": "movielens",
    "variant": "ml-100k",       # only ml-100k is implemented
    "data_dir": "",             # "" = resolve: $RECJAX_DATA_DIR, then ~/.cache/recjax
    "max_seq_len": 50,          # T of the "hist" group (issue 2)
    "history_ratings": True,    # our choice: add hist_rating (ratings of earlier items, no leakage)
    "features": (),             # feature names to keep; () = all
    "use_cache": True,          # cache the preprocessed arrays (see recjax.data.cache)
}


def default_config():
  """`DEFAULTS` as an ml_collections.ConfigDict (for `config.dataset`)."""
  import ml_collections
  return ml_collections.ConfigDict(dict(DEFAULTS))

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
FOLDER = "ml-100k"
FILES = ("u.data", "u.item", "u.user")
MD5S = {"u.data": "6e47046882bad158b0efbb84cd5cb987"}

GENRES = ("unknown", "action", "adventure", "animation", "childrens", "comedy", "crime", "documentary",
          "drama", "fantasy", "film_noir", "horror", "musical", "mystery", "romance", "sci_fi", "thriller",
          "war", "western")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer")
AGE_EDGES = (18, 25, 35, 45, 50, 56)
YEAR_EDGES = (1940, 1950, 1960, 1970, 1980, 1990, 1993, 1994, 1995, 1996, 1997, 1998)
RATING_VOCAB = 6


def _get(cfg, key):
  try:
    v = cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)
  except (KeyError, AttributeError):
    return DEFAULTS[key]
  return DEFAULTS[key] if v is None else v


def _check_cfg(cfg) -> tuple[int, bool]:
  variant = _get(cfg, "variant")
  if variant != "ml-100k":
    raise ConfigError(f"dataset.variant: {variant!r} is not supported by movielens; supported: ['ml-100k']")
  t = _get(cfg, "max_seq_len")
  if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
    raise ConfigError(f"dataset.max_seq_len: expected an integer >= 1, got {t!r}")
  hr = _get(cfg, "history_ratings")
  if not isinstance(hr, (bool, np.bool_)):
    raise ConfigError(f"dataset.history_ratings: expected a bool, got {hr!r}")
  return int(t), bool(hr)


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Ensures u.data, u.item, u.user exist under `<data_dir>/ml-100k/` (downloading if possible).

  Raises:
    DataError: files missing and not downloadable (names the files, the directory and the URL).
    ConfigError: unsupported `variant`.
  """
  _check_cfg(cfg)
  folder = ensure_files(data_dir, FOLDER, FILES, URL, MD5S)
  return {f: folder / f for f in FILES}


def preprocess_options(cfg) -> dict:
  """Config values that change the preprocessed arrays (part of the cache key)."""
  t, hr = _check_cfg(cfg)
  return {"variant": _get(cfg, "variant"), "max_seq_len": t, "history_ratings": hr}


# ---------------------------------------------------------------------------------------------- parsing


def _lines(path: pathlib.Path) -> list[tuple[int, str]]:
  """(1-based line number, line) for non-blank lines; latin-1 (u.item has accented titles). Blank lines
  other than trailing ones are skipped with one warning naming the first."""
  with open(path, encoding="latin-1") as f:
    lines = [(i, ln.rstrip("\r\n")) for i, ln in enumerate(f, 1)]
  while lines and not lines[-1][1].strip():
    lines.pop()
  blank = [i for i, ln in lines if not ln.strip()]
  if blank:
    log.warning("%s: skipped %d blank line(s), the first at line %d", path, len(blank), blank[0])
  return [(i, ln) for i, ln in lines if ln.strip()]


def _bad(path, line: int, field: str, msg: str) -> DataError:
  return DataError(f"{path}: line {line}: field {field!r}: {msg}")


def _to_int(path, line, field, s: str) -> int:
  try:
    v = int(s)
  except ValueError:
    raise _bad(path, line, field, f"expected an integer, got {s!r}") from None
  if not -2**63 <= v < 2**63:
    raise _bad(path, line, field, f"value {s} is outside the 64-bit integer range")
  return v


def _unique_id(path, line: int, field: str, s: str, seen: dict[int, int]) -> int:
  """An id >= 1 not seen on an earlier line; records it in `seen` (id -> line). DataError otherwise."""
  v = _to_int(path, line, field, s)
  if v < 1:
    raise _bad(path, line, field, f"value {v} must be >= 1")
  if v in seen:
    raise _bad(path, line, field, f"duplicate id {v} (first on line {seen[v]})")
  seen[v] = line
  return v


def parse_ratings(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Parses u.data.

  Returns:
    {"user", "item", "rating", "time", "line"}: [N] int64 each, in file order; `line` is the 1-based line
    number in the file.

  Raises:
    DataError: naming the file, line and field for a wrong column count (4 tab-separated fields expected),
      a non-integer value, a rating outside 1..5, a negative timestamp, or an empty file.
  """
  fields = ("user_id", "item_id", "rating", "timestamp")
  rows = _lines(path)
  if not rows:
    raise DataError(f"{path}: no ratings (empty file); expected lines 'user_id\\titem_id\\trating\\ttimestamp'")
  parts = [ln.split("\t") for _, ln in rows]
  for (i, ln), p in zip(rows, parts):
    if len(p) != 4:
      raise _bad(path, i, "columns",
                 f"expected 4 tab-separated fields {list(fields)}, got {len(p)}: {ln!r}")
  try:
    a = np.array(parts).astype(np.int64)
  except (ValueError, OverflowError):
    for (i, _), p in zip(rows, parts):
      for f, s in zip(fields, p):
        _to_int(path, i, f, s.strip())
    raise
  line = np.array([i for i, _ in rows], dtype=np.int64)
  out = {"user": a[:, 0], "item": a[:, 1], "rating": a[:, 2], "time": a[:, 3], "line": line}
  for key, field, lo, hi in (("rating", "rating", 1, 5), ("time", "timestamp", 0, None),
                             ("user", "user_id", 1, None), ("item", "item_id", 1, None)):
    v = out[key]
    bad = np.flatnonzero((v < lo) | ((v > hi) if hi is not None else False))
    if bad.size:
      want = f"must be in {lo}..{hi}" if hi is not None else f"must be >= {lo}"
      raise _bad(path, int(line[bad[0]]), field, f"value {int(v[bad[0]])} {want}")
  return out


def parse_items(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Parses u.item.

  Returns:
    {"id": [M] int64, "genres": [M, 19] float32 (0/1), "year": [M] int64 (0 = no release date)}.

  Raises:
    DataError: naming file, line and field for a wrong column count (24 '|'-separated fields), a
      non-integer or non-positive id, a duplicate id, a release date not 'dd-Mon-yyyy', or a genre flag
      other than 0/1.
  """
  rows = _lines(path)
  if not rows:
    raise DataError(f"{path}: no movies (empty file)")
  ids, years, genres = [], [], []
  seen: dict[int, int] = {}
  for i, ln in rows:
    p = ln.split("|")
    if len(p) != 5 + len(GENRES):
      raise _bad(path, i, "columns",
                 f"expected {5 + len(GENRES)} '|'-separated fields (movie id|title|release date|video "
                 f"release date|URL|19 genre flags), got {len(p)}")
    mid = _unique_id(path, i, "movie_id", p[0], seen)
    date = p[2].strip()
    year = 0
    if date:
      try:
        year = datetime.datetime.strptime(date, "%d-%b-%Y").year
      except ValueError:
        raise _bad(path, i, "release_date", f"expected dd-Mon-yyyy or empty, got {date!r}") from None
    flags = p[5:]
    if any(f not in ("0", "1") for f in flags):
      j = next(k for k, f in enumerate(flags) if f not in ("0", "1"))
      raise _bad(path, i, f"genre_{GENRES[j]}", f"expected 0 or 1, got {flags[j]!r}")
    ids.append(mid)
    years.append(year)
    genres.append([f == "1" for f in flags])
  return {"id": np.array(ids, np.int64), "genres": np.array(genres, np.float32),
          "year": np.array(years, np.int64)}


def parse_users(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Parses u.user.

  Returns:
    {"id", "age", "gender", "occupation", "zip_prefix"}: [U] int64; gender/occupation/zip_prefix already
    mapped to ids (unknown → 0, the OOV id, with one warning naming the first such line), `age` in years.

  Raises:
    DataError: naming file, line and field for a wrong column count (5 '|'-separated fields), a
      non-integer or non-positive id, a duplicate id, or a non-integer age.
  """
  rows = _lines(path)
  if not rows:
    raise DataError(f"{path}: no users (empty file)")
  occ = {o: k + 1 for k, o in enumerate(OCCUPATIONS)}
  out: dict[str, list] = {k: [] for k in ("id", "age", "gender", "occupation", "zip_prefix")}
  seen: dict[int, int] = {}
  n_unknown, first_unknown = 0, None  # unknown gender/occupation values: mapped to 0, reported once
  for i, ln in rows:
    p = ln.split("|")
    if len(p) != 5:
      raise _bad(path, i, "columns",
                 f"expected 5 '|'-separated fields (user id|age|gender|occupation|zip code), got {len(p)}")
    uid = _unique_id(path, i, "user_id", p[0], seen)
    z = p[4].strip()
    out["id"].append(uid)
    out["age"].append(_to_int(path, i, "age", p[1]))
    gender = {"M": 1, "F": 2}.get(p[2].strip().upper(), 0)
    occupation = occ.get(p[3].strip().lower(), 0)
    out["gender"].append(gender)
    out["occupation"].append(occupation)
    out["zip_prefix"].append(0 if not z else (int(z[0]) + 1 if z[0].isdigit() else 11))
    for field, value, known in (("gender", p[2], gender), ("occupation", p[3], occupation)):
      if not known:
        n_unknown += 1
        first_unknown = first_unknown or (i, field, value.strip())
  if n_unknown:
    log.warning("%s: %d unknown gender/occupation value(s), mapped to the OOV id 0; first: line %d, field %s, "
                "value %r", path, n_unknown, *first_unknown)
  return {k: np.array(v, np.int64) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- building


def split_positions(user_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-row position within its user and that user's count, for rows sorted by user.

  Args:
    user_sorted: [N] int, non-decreasing.

  Returns:
    (pos [N] int64, count [N] int64).
  """
  n = len(user_sorted)
  starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
  counts = np.diff(np.r_[starts, n])
  start_of_row = np.repeat(starts, counts)
  return np.arange(n) - start_of_row, np.repeat(counts, counts)


def split_labels(pos: np.ndarray, count: np.ndarray) -> np.ndarray:
  """0 = train, 1 = valid, 2 = test for each row (issue 2 rule: last floor(n/10) test, floor(n/10) before valid)."""
  k = count // 10
  return np.where(pos >= count - k, 2, np.where(pos >= count - 2 * k, 1, 0)).astype(np.int8)


def history(values_sorted: np.ndarray, pos: np.ndarray, t: int) -> np.ndarray:
  """Left-padded histories of strictly earlier rows of the same user.

  Args:
    values_sorted: [N] int, one value per row, rows sorted by (user, time, file order).
    pos: [N] position of each row within its user.
    t: history length T.

  Returns:
    [N, T] int32; row r holds values of rows r-T..r-1 that belong to the same user (offset k <= pos[r]),
    0 elsewhere; most recent last.
  """
  n = len(values_sorted)
  offsets = np.arange(t, 0, -1)                                # T, ..., 1 (most recent last)
  idx = np.arange(n)[:, None] - offsets[None, :]
  valid = offsets[None, :] <= pos[:, None]
  return np.where(valid, values_sorted[np.clip(idx, 0, None)], 0).astype(np.int32)


def build(cfg, files: dict[str, pathlib.Path]):
  """Parses, joins, splits and builds the Batch-format arrays of each split.

  Returns:
    (schema, {"train": arrays, "valid": arrays, "test": arrays}, meta). Rows within a split are ordered by
    (user, timestamp, file order).

  Raises:
    DataError: malformed files (file, line, field), or a rating whose user/item id is not in u.user/u.item.
  """
  t, with_ratings = _check_cfg(cfg)
  r = parse_ratings(files["u.data"])
  items = parse_items(files["u.item"])
  users = parse_users(files["u.user"])

  n_item = int(items["id"].max()) + 1
  n_user = int(users["id"].max()) + 1
  for key, ids, field, src in (("item", items["id"], "item_id", "u.item"), ("user", users["id"], "user_id", "u.user")):
    bad = np.flatnonzero(~np.isin(r[key], ids))
    if bad.size:
      raise _bad(files["u.data"], int(r["line"][bad[0]]), field,
                 f"id {int(r[key][bad[0]])} is not in {files[src]}")

  # Per-id lookup tables; row 0 (padding / unknown) stays 0.
  genres = np.zeros((n_item, len(GENRES)), np.float32)
  genres[items["id"]] = items["genres"]
  has_genre = genres.any(axis=1)
  first_genre = np.where(has_genre, genres.argmax(axis=1) + 1, 0).astype(np.int32)
  year = np.zeros(n_item, np.int64)
  year[items["id"]] = items["year"]
  known_year = items["year"][items["year"] > 0]
  mu, sd = (float(known_year.mean()), float(known_year.std()) or 1.0) if known_year.size else (0.0, 1.0)
  year_norm = np.where(year > 0, (year - mu) / sd, 0.0).astype(np.float32)
  year_bucket = np.where(year > 0, np.digitize(year, YEAR_EDGES) + 1, 0).astype(np.int32)
  u_tab = {k: np.zeros(n_user, np.int32) for k in ("age", "gender", "occupation", "zip_prefix")}
  for k in ("gender", "occupation", "zip_prefix"):
    u_tab[k][users["id"]] = users[k]
  u_tab["age"][users["id"]] = np.where(users["age"] > 0, np.digitize(users["age"], AGE_EDGES) + 1, 0)

  order = np.lexsort((np.arange(len(r["user"])), r["time"], r["user"]))   # stable: ties by file order
  user, item, rating, ts = (r[k][order] for k in ("user", "item", "rating", "time"))
  pos, count = split_positions(user)
  which = split_labels(pos, count)

  sparse = np.stack([user, item, u_tab["gender"][user], u_tab["age"][user], u_tab["occupation"][user],
                     u_tab["zip_prefix"][user], first_genre[item], year_bucket[item]], axis=1).astype(np.int32)
  dense = np.concatenate([genres[item], year_norm[item][:, None]], axis=1)
  seqs = {"seq/hist_item": history(item, pos, t)}
  seqs["seq/hist_genre"] = first_genre[seqs["seq/hist_item"]]
  if with_ratings:
    seqs["seq/hist_rating"] = history(rating, pos, t)
  arrays = {
      "sparse": sparse,
      "dense": dense,
      **seqs,
      "seq_len/hist": np.minimum(pos, t).astype(np.int32),
      "label": (rating >= 4).astype(np.float32),
      "group_id": user.astype(np.int32),
      "time": ts.astype(np.int64),
  }
  splits = {name: {k: np.ascontiguousarray(v[which == s]) for k, v in arrays.items()}
            for s, name in enumerate(("train", "valid", "test"))}

  sequences = [SequenceFeature("hist_item", n_item, t, group="hist", table="item_id"),
               SequenceFeature("hist_genre", len(GENRES) + 1, t, group="hist", table="first_genre")]
  if with_ratings:
    sequences.append(SequenceFeature("hist_rating", RATING_VOCAB, t, group="hist"))
  schema = Schema(
      sparse=(SparseFeature("user_id", n_user), SparseFeature("item_id", n_item),
              SparseFeature("gender", 3), SparseFeature("age", len(AGE_EDGES) + 2),
              SparseFeature("occupation", len(OCCUPATIONS) + 1), SparseFeature("zip_prefix", 12),
              SparseFeature("first_genre", len(GENRES) + 1), SparseFeature("release_year", len(YEAR_EDGES) + 2)),
      dense=(*(f"genre_{g}" for g in GENRES), "release_year_norm"),
      sequences=tuple(sequences),
  )
  meta = {
      "num_ratings": len(user), "num_users": len(users["id"]), "num_items": len(items["id"]),
      "label": "rating >= 4", "release_year_mean": mu, "release_year_std": sd,
      "split": "per user by (timestamp, file order): last floor(n/10) test, floor(n/10) before valid",
  }
  return schema, splits, meta
