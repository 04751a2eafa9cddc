"""Helpers shared by the dataset sources of issue 3 (config access, errors, vocabularies, histories, splits).

Private to `recjax.data.sources`; the movielens source predates it and keeps its own copies.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from recjax.errors import ConfigError, DataError


def get(cfg, key: str, defaults: Mapping):
  """`cfg.key` (ConfigDict attribute or dict item), falling back to `defaults[key]` when absent or None."""
  try:
    v = cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)
  except (KeyError, AttributeError):
    return defaults[key]
  return defaults[key] if v is None else v


def folder_and_file(cfg, defaults: Mapping) -> tuple[str, str]:
  """`dataset.folder` and `dataset.file`; ConfigError unless both are non-empty strings."""
  out = (get(cfg, "folder", defaults), get(cfg, "file", defaults))
  for k, v in zip(("folder", "file"), out):
    if not isinstance(v, str) or not v:
      raise ConfigError(f"dataset.{k}: expected a non-empty string, got {v!r}")
  return out


def check_int(key: str, v, lo: int | None = None) -> int:
  """`v` as int; ConfigError naming `dataset.<key>` unless an integer (not bool) >= lo."""
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (lo is not None and v < lo):
    raise ConfigError(f"dataset.{key}: expected an integer{'' if lo is None else f' >= {lo}'}, got {v!r}")
  return int(v)


def check_choice(key: str, v, choices: Sequence[str]) -> str:
  if v not in choices:
    raise ConfigError(f"dataset.{key}: {v!r} is not one of {list(choices)}")
  return v


def check_fraction(key: str, v, lo: float = 0.0, hi: float = 1.0) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not lo <= v <= hi:
    raise ConfigError(f"dataset.{key}: expected a number in [{lo}, {hi}], got {v!r}")
  return float(v)


def bad(path, line: int, field: str, msg: str) -> DataError:
  """DataError naming the file, the 1-based line and the field."""
  return DataError(f"{path}: line {line}: field {field!r}: {msg}")


def require_files(data_dir: pathlib.Path, folder: str, files: Sequence[str], how: str) -> pathlib.Path:
  """`<data_dir>/<folder>`, after checking every file in `files` is there.

  Raises:
    DataError: naming the missing files, the directory searched and `how` to obtain them (these datasets
      have no unauthenticated download, so nothing is fetched).
  """
  d = pathlib.Path(data_dir) / folder
  missing = [f for f in files if not (d / f).is_file()]
  if missing:
    raise DataError(
        f"Dataset files {missing} not found in {d} (data directory {data_dir}; set --config.dataset.data_dir "
        f"or $RECJAX_DATA_DIR). {how}")
  return d


def read_lines(path: pathlib.Path, encoding: str = "utf-8") -> list[str]:
  """All lines of a text file without their line ends (line i+1 of the file is element i)."""
  with open(path, encoding=encoding, newline="") as f:
    return f.read().splitlines()


def parse_int_matrix(path, rows: Sequence[str], first_line: int, fields: Sequence[str], sep: str = ",",
                     dtype=np.int64) -> np.ndarray:
  """Parses `rows` (one CSV line each, exactly len(fields) integer fields) into [N, F] `dtype`.

  Vectorised: one `np.array(..).astype` over all rows; only on failure are rows scanned to report the first
  bad one.

  Raises:
    DataError: file, 1-based line (`first_line` is the line of rows[0]) and field of the first row with the
      wrong number of fields or a non-integer value.
  """
  nf = len(fields)
  parts = [r.split(sep) for r in rows]
  for i, p in enumerate(parts):
    if len(p) != nf:
      raise bad(path, first_line + i, "columns", f"expected {nf} '{sep}'-separated fields {list(fields)}, "
                f"got {len(p)}: {rows[i][:200]!r}")
  try:
    return np.array(parts, dtype=object).astype(dtype) if parts else np.zeros((0, nf), dtype)
  except (ValueError, OverflowError):
    for i, p in enumerate(parts):
      for f, s in zip(fields, p):
        try:
          int(s)
        except ValueError:
          raise bad(path, first_line + i, f, f"expected an integer, got {s!r}") from None
    raise


# ---------------------------------------------------------------------------------------------- vocabularies


def fit_vocab(values: np.ndarray, min_count: int = 1, ignore=None) -> np.ndarray:
  """Sorted distinct values seen at least `min_count` times (`ignore` excluded, e.g. a padding value)."""
  v = np.asarray(values).ravel()
  if ignore is not None:
    v = v[v != ignore]
  u, c = np.unique(v, return_counts=True)
  return u[c >= min_count]


def apply_vocab(values: np.ndarray, vocab: np.ndarray, offset: int, oov: int | None, pad=None) -> np.ndarray:
  """Maps raw values to ids: vocab[j] -> offset + j; unseen -> `oov`; `pad` (if given) -> 0.

  Args:
    values: any shape, same dtype kind as `vocab` (sorted distinct).
    vocab: [V] sorted distinct values.
    offset: id of vocab[0] (1 without an OOV bucket, 2 with OOV at id 1).
    oov: id of unseen values; None means unseen values are an error (ValueError).
    pad: raw padding value, mapped to 0.

  Returns:
    int32 ids, same shape as `values`.
  """
  values = np.asarray(values)
  if len(vocab) == 0:
    j = np.zeros(values.shape, np.int64)
    found = np.zeros(values.shape, bool)
  else:
    j = np.searchsorted(vocab, values)
    jc = np.minimum(j, len(vocab) - 1)
    found = vocab[jc] == values
    j = jc
  out = np.where(found, j + offset, -1 if oov is None else oov)
  if pad is not None:
    out = np.where(values == pad, 0, out)
  if oov is None and (out < 0).any():
    raise ValueError("apply_vocab: value not in vocabulary")
  return out.astype(np.int32)


# ---------------------------------------------------------------------------------------------- sequences


def user_positions(user_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Position of each row within its user and the user's row count, for rows sorted by user.

  Returns:
    (pos [N] int64, count [N] int64).
  """
  n = len(user_sorted)
  if n == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
  counts = np.diff(np.r_[starts, n])
  return np.arange(n) - np.repeat(starts, counts), np.repeat(counts, counts)


def histories(values_by_row: Sequence[np.ndarray], user_sorted: np.ndarray, select: np.ndarray | None,
              t: int) -> tuple[list[np.ndarray], np.ndarray]:
  """Left-padded histories over the strictly earlier selected rows of the same user.

  Rows are sorted by (user, time, file order). For row r the history is the last (at most `t`) rows r' < r of
  the same user with `select[r']`, oldest first, most recent last.

  Args:
    values_by_row: arrays [N] int, the channels to gather (e.g. item, category, behaviour type).
    user_sorted: [N] user ids, non-decreasing.
    select: [N] bool, which rows can appear in histories (None = all).
    t: history length T.

  Returns:
    ([N, T] int32 per channel, 0 = padding; length [N] int32 = number of valid positions).
  """
  n = len(user_sorted)
  sel = np.ones(n, bool) if select is None else np.asarray(select, bool)
  sel_idx = np.flatnonzero(sel)                         # rows that can be history items, in order
  before = np.cumsum(sel) - sel                         # selected rows strictly before r (global)
  starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]]) if n else np.zeros(0, int)
  counts = np.diff(np.r_[starts, n])
  user_start = np.repeat(starts, counts)
  length = np.minimum(before - before[user_start], t)   # selected rows of the same user before r
  offsets = np.arange(t, 0, -1)                          # T..1, most recent last
  valid = offsets[None, :] <= length[:, None]
  idx = np.clip(before[:, None] - offsets[None, :], 0, None)
  out = []
  for v in values_by_row:
    src = np.asarray(v)[sel_idx]
    if src.size == 0:
      out.append(np.zeros((n, t), np.int32))
      continue
    out.append(np.where(valid, src[np.minimum(idx, src.size - 1)], 0).astype(np.int32))
  return out, length.astype(np.int32)


def disk_array(shape: tuple[int, ...], dtype, directory: pathlib.Path) -> np.ndarray:
  """A zero-filled array backed by a temporary file in `directory`, for arrays larger than memory.

  The file is unlinked as soon as it is mapped (POSIX), so its space is freed when the array is garbage
  collected, even if the process is killed; where an open file cannot be unlinked it is removed at exit.
  Pages are written back to the file instead of swapping, so resident memory stays bounded.
  """
  fd, path = tempfile.mkstemp(dir=directory, prefix=".recjax-scratch-", suffix=".npy")
  os.close(fd)
  arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
  try:
    os.unlink(path)
  except OSError:
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
  return arr


def split_by_position(pos: np.ndarray, count: np.ndarray, frac: float = 0.1) -> np.ndarray:
  """0 = train, 1 = valid, 2 = test: per user the last floor(n·frac) rows test, the floor(n·frac) before valid.

  With frac = 0.1 this is the ml-100k rule of the foundation issue (floor(n/10)); computed as n // 10 exactly.
  """
  k = count // 10 if frac == 0.1 else np.floor(count * frac).astype(np.int64)
  return np.where(pos >= count - k, 2, np.where(pos >= count - 2 * k, 1, 0)).astype(np.int8)


def take_splits(arrays: Mapping[str, np.ndarray], which: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
  """{"train"|"valid"|"test": rows of `arrays` with which == 0 | 1 | 2}, contiguous copies."""
  return {name: {k: np.ascontiguousarray(v[which == s]) for k, v in arrays.items()}
          for s, name in enumerate(("train", "valid", "test"))}


def random_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
  """0/1/2 per row: a seeded permutation, the first round(n·f_train) rows train, next round(n·f_valid) valid.

  The rest is test. Deterministic for (n, seed).
  """
  perm = np.random.default_rng(seed).permutation(n)
  n_tr = int(round(n * fractions[0]))
  n_va = int(round(n * fractions[1]))
  which = np.full(n, 2, np.int8)
  which[perm[:n_tr]] = 0
  which[perm[n_tr:n_tr + n_va]] = 1
  return which


# ---------------------------------------------------------------------------------------------- negatives


def pair_keys(a: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
  """One int64 key per (a, b) pair, for b in [0, nb)."""
  return np.asarray(a, np.int64) * np.int64(nb) + np.asarray(b, np.int64)


def in_sorted(keys_sorted: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Membership of each of `q` in the sorted unique int64 array `keys_sorted`."""
  if keys_sorted.size == 0:
    return np.zeros(np.shape(q), bool)
  j = np.minimum(np.searchsorted(keys_sorted, q), keys_sorted.size - 1)
  return keys_sorted[j] == q


def sample_excluding(rng: np.random.Generator, users: np.ndarray, low: np.ndarray, high: np.ndarray,
                     pool: np.ndarray, forbidden: np.ndarray, nb: int, max_rounds: int = 64) -> np.ndarray:
  """For each row, a uniform index j in [low, high) with (users[row], pool[j]) not in `forbidden`.

  Rejection sampling, vectorised per round; rows still rejected after `max_rounds` rounds are resolved
  exactly (uniform over the allowed indices), so the result is the same distribution and deterministic
  for a given `rng` state.

  Args:
    rng: numpy Generator (seeded by the caller).
    users: [N] int user ids.
    low, high: [N] int, the index range into `pool` of each row (high > low, or the row gets -1).
    pool: [P] int items.
    forbidden: sorted unique int64 keys `pair_keys(user, item, nb)`.
    nb: key base, > every item id.

  Returns:
    [N] int64 indices into `pool`; -1 where every index in [low, high) is forbidden for that user.
  """
  users = np.asarray(users, np.int64)
  low = np.asarray(low, np.int64)
  high = np.asarray(high, np.int64)
  out = np.full(len(users), -1, np.int64)
  todo = np.flatnonzero(high > low)
  for _ in range(max_rounds):
    if todo.size == 0:
      return out
    j = low[todo] + (rng.random(todo.size) * (high[todo] - low[todo])).astype(np.int64)
    j = np.minimum(j, high[todo] - 1)
    ok = ~in_sorted(forbidden, pair_keys(users[todo], pool[j], nb))
    out[todo[ok]] = j[ok]
    todo = todo[~ok]
  for r in todo:
    cand = np.arange(low[r], high[r])
    cand = cand[~in_sorted(forbidden, pair_keys(np.full(cand.size, users[r]), pool[cand], nb))]
    if cand.size:
      out[r] = cand[rng.integers(cand.size)]
  return out
