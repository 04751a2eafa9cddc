"""Feature schema: what a dataset feeds a model, by name.

A `Schema` lists three kinds of features, each read by models through its name:

- sparse: one categorical id per example, looked up in an embedding table;
- dense: float features, concatenated into one vector per example;
- sequences: id sequences of fixed max length T, left-padded with 0 so that the most recent item is last.
  Sequences in the same `group` are time-aligned (same length per example) and are stacked by MaskNet;
  each group has one length array.

The `Batch` is a plain dict of arrays with these names (B = batch size, T = the group's max length):

| key                  | shape / dtype       | meaning                                                     |
|----------------------|---------------------|-------------------------------------------------------------|
| `dense`              | [B, n_dense] f32    | dense features in `schema.dense` order (absent if none)     |
| `sparse`             | [B, n_sparse] i32   | sparse ids in `schema.sparse` order, each in [0, vocab)     |
| `seq/<name>`         | [B, T] i32          | sequence ids, 0 = padding, left-padded (most recent last)   |
| `seq_len/<group>`    | [B] i32             | number of valid (non-padding) positions of the group        |
| `label`              | [B] f32             | 0/1 click label                                             |
| `group_id`           | [B] i32             | user id, the gAUC group key                                 |
| `time`               | [B] i64             | unix seconds, where the dataset has time                    |
| `mask`               | [B] f32             | 1 for real examples, 0 for rows padding the last batch      |

Id 0 of every table is reserved for padding / unknown values; real values start at 1 (our choice, as in
FuxiCTR's vocabularies), so `vocab_size` counts the reserved 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from recjax.errors import DataError

_VALIDATE_ROWS = 1 << 20   # rows checked at once by Schema.validate


@dataclasses.dataclass(frozen=True)
class SparseFeature:
  """A categorical feature: one id per example in [0, vocab_size); 0 = padding / unknown.

  `table` names the embedding table (defaults to the feature's own name); sequences whose `table` is
  the same name share it (BARS convention).
  """
  name: str
  vocab_size: int
  table: str | None = None

  @property
  def table_name(self) -> str:
    return self.table or self.name


@dataclasses.dataclass(frozen=True)
class SequenceFeature:
  """An id sequence of length `max_len`, left-padded with 0, in time-aligned `group`."""
  name: str
  vocab_size: int
  max_len: int
  group: str = "hist"
  table: str | None = None

  @property
  def table_name(self) -> str:
    return self.table or self.name


@dataclasses.dataclass(frozen=True)
class Schema:
  """The features of one dataset, in the column order of the `Batch` arrays."""
  sparse: tuple[SparseFeature, ...] = ()
  dense: tuple[str, ...] = ()
  sequences: tuple[SequenceFeature, ...] = ()

  def __post_init__(self):
    names = [f.name for f in self.sparse] + list(self.dense) + [f.name for f in self.sequences]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
      raise ValueError(f"Schema: duplicate feature names {dup}")
    for g in self.sequence_groups:
      lens = {f.max_len for f in self.sequences if f.group == g}
      if len(lens) != 1:
        raise ValueError(f"Schema: sequences of group {g!r} have different max_len {sorted(lens)}")
    tables: dict[str, int] = {}
    for f in (*self.sparse, *self.sequences):
      v = tables.setdefault(f.table_name, f.vocab_size)
      if v != f.vocab_size:
        raise ValueError(
            f"Schema: feature {f.name!r} shares table {f.table_name!r} but has vocab_size "
            f"{f.vocab_size} != {v}")

  @property
  def sequence_groups(self) -> tuple[str, ...]:
    """Group names in first-appearance order."""
    return tuple(dict.fromkeys(f.group for f in self.sequences))

  def group_features(self, group: str) -> tuple[SequenceFeature, ...]:
    return tuple(f for f in self.sequences if f.group == group)

  def group_max_len(self, group: str) -> int:
    return self.group_features(group)[0].max_len

  @property
  def tables(self) -> dict[str, int]:
    """Embedding table name -> vocabulary size, in first-use order."""
    out: dict[str, int] = {}
    for f in (*self.sparse, *self.sequences):
      out.setdefault(f.table_name, f.vocab_size)
    return out

  def sparse_index(self, name: str) -> int:
    for i, f in enumerate(self.sparse):
      if f.name == name:
        return i
    raise KeyError(f"unknown sparse feature {name!r}; known: {[f.name for f in self.sparse]}")

  def validate(self, arrays: Mapping[str, np.ndarray], where: str = "batch") -> None:
    """Checks a Batch-format dict against the schema.

    Raises:
      DataError (a ValueError): naming `where`, the field and the first offending row, if a key is missing, an id is
        outside [0, vocab_size), a dense value is NaN/inf, or a sequence length is outside [0, T].
    """
    def _fail(field: str, msg: str):
      raise DataError(f"{where}: field {field!r}: {msg}")

    if "label" not in arrays:
      _fail("label", "missing")
    n = len(arrays["label"])
    shapes = {}
    if self.sparse:
      shapes["sparse"] = (n, len(self.sparse))
    if self.dense:
      shapes["dense"] = (n, len(self.dense))
    for f in self.sequences:
      shapes[f"seq/{f.name}"] = (n, f.max_len)
    for g in self.sequence_groups:
      shapes[f"seq_len/{g}"] = (n,)
    for key, shape in shapes.items():
      v = arrays.get(key)
      if v is None or v.shape != shape:
        _fail(key, f"expected shape {shape}, got {None if v is None else v.shape}")
    # Values, in row blocks: temporaries stay bounded for memory-mapped datasets larger than RAM.
    for lo in range(0, n, _VALIDATE_ROWS):
      blk = {k: arrays[k][lo:lo + _VALIDATE_ROWS] for k in shapes}
      for j, f in enumerate(self.sparse):
        col = blk["sparse"][:, j]
        bad = np.flatnonzero((col < 0) | (col >= f.vocab_size))
        if bad.size:
          _fail(f.name, f"id {int(col[bad[0]])} at row {lo + int(bad[0])} is outside [0, {f.vocab_size})")
      if self.dense:
        de = blk["dense"]
        bad = np.argwhere(~np.isfinite(de))
        if bad.size:
          r, c = (int(x) for x in bad[0])
          _fail(self.dense[c], f"non-finite value {de[r, c]} at row {lo + r}")
      for f in self.sequences:
        key = f"seq/{f.name}"
        sq = blk[key]
        bad = np.argwhere((sq < 0) | (sq >= f.vocab_size))
        if bad.size:
          r, c = (int(x) for x in bad[0])
          _fail(key, f"id {int(sq[r, c])} at row {lo + r} position {c} is outside [0, {f.vocab_size})")
      for g in self.sequence_groups:
        key = f"seq_len/{g}"
        ln = blk[key]
        bad = np.flatnonzero((ln < 0) | (ln > self.group_max_len(g)))
        if bad.size:
          _fail(key, f"length {int(ln[bad[0]])} at row {lo + int(bad[0])} is outside [0, {self.group_max_len(g)}]")

  @property
  def feature_names(self) -> tuple[str, ...]:
    """All feature names: sparse, then dense, then sequences (schema order)."""
    return (*(f.name for f in self.sparse), *self.dense, *(f.name for f in self.sequences))

  def to_dict(self) -> dict:
    """A JSON-serialisable description; `Schema.from_dict(s.to_dict()) == s`."""
    return {
        "sparse": [dataclasses.asdict(f) for f in self.sparse],
        "dense": list(self.dense),
        "sequences": [dataclasses.asdict(f) for f in self.sequences],
    }

  @classmethod
  def from_dict(cls, d: Mapping) -> Schema:
    """Inverse of `to_dict`."""
    return cls(
        sparse=tuple(SparseFeature(**f) for f in d.get("sparse", ())),
        dense=tuple(d.get("dense", ())),
        sequences=tuple(SequenceFeature(**f) for f in d.get("sequences", ())),
    )

  def select(self, names, arrays: Mapping[str, np.ndarray] | None = None):
    """Keeps only the features in `names` (schema order is kept; the order of `names` is ignored).

    Args:
      names: feature names to keep; empty or None keeps all.
      arrays: optional Batch-format dict whose `sparse` / `dense` columns and `seq/*` keys are cut to match;
        non-feature keys (`label`, `group_id`, `time`, `mask`) pass through. A sequence group left without
        features loses its `seq_len/<group>` key; an empty `dense` / `sparse` block loses its key.

    Returns:
      The new Schema, or `(schema, arrays)` when `arrays` is given.

    Raises:
      ConfigError: naming an unknown feature and listing the known ones.
    """
    from recjax.errors import ConfigError
    if not names:
      return self if arrays is None else (self, dict(arrays))
    keep = set(names)
    unknown = [n for n in names if n not in set(self.feature_names)]
    if unknown:
      raise ConfigError(
          f"dataset.features: unknown feature(s) {unknown}; known features: {list(self.feature_names)}")
    sp_idx = [i for i, f in enumerate(self.sparse) if f.name in keep]
    de_idx = [i for i, n in enumerate(self.dense) if n in keep]
    new = Schema(
        sparse=tuple(self.sparse[i] for i in sp_idx),
        dense=tuple(self.dense[i] for i in de_idx),
        sequences=tuple(f for f in self.sequences if f.name in keep),
    )
    if arrays is None:
      return new
    out = {}
    for k, v in arrays.items():
      if k == "sparse":
        if sp_idx:
          out[k] = v[:, sp_idx] if len(sp_idx) < v.shape[1] else v
      elif k == "dense":
        if de_idx:
          out[k] = v[:, de_idx] if len(de_idx) < v.shape[1] else v
      elif k.startswith("seq/"):
        if k[4:] in keep:
          out[k] = v
      elif k.startswith("seq_len/"):
        if k[8:] in new.sequence_groups:
          out[k] = v
      else:
        out[k] = v
    return new, out
