"""Criteo source: dense transform + missing indicators, min-count vocabularies with OOV, hashing, split."""

from __future__ import annotations

import csv
import hashlib
import math
import os
import pathlib
from collections import Counter

import numpy as np
import pytest

from recjax.data.dataset import load_dataset
from recjax.data.sources import criteo
from recjax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
HEADER = ["label", *(f"I{k}" for k in range(1, 14)), *(f"C{k}" for k in range(1, 27))]


def fixture_rows(n=20):
  """Row r: I1 = r (so rows can be found again), I2 = r - 3 (negative for r < 3), I3 missing on odd rows,
  C1 in {a, b, c, d-r}: 'a' x10, 'b' x6, 'c' x2, one-off values; C2 missing on rows divisible by 4."""
  rows = []
  for r in range(n):
    ints = [str(r), str(r - 3), "" if r % 2 else "7"] + [""] * 10
    c1 = "a" if r < 10 else "b" if r < 16 else "c" if r < 18 else f"d{r}"
    cats = [c1, "" if r % 4 == 0 else "x"] + ["z"] * 24
    rows.append([str(r % 3 == 0 and 1 or 0), *ints, *cats])
  return rows


def write(root, rows, header=HEADER, name="crit.csv"):
  d = root / "criteo_sample"
  d.mkdir(parents=True, exist_ok=True)
  (d / name).write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
  return root


def cfg(root, **kw):
  return {**criteo.DEFAULTS, "data_dir": str(root), "file": "crit.csv", **kw}


def rows_of(a):
  return np.rint(np.expm1(a["dense"][:, 0])).astype(int)     # I1 = row index


def test_dense_split_and_vocab(tmp_path, cache_dir):
  rows = fixture_rows()
  ds = load_dataset(cfg(write(tmp_path, rows), min_count=2))
  ids = {s: rows_of(ds.split(s)) for s in SPLITS}
  assert [len(ids[s]) for s in SPLITS] == [16, 2, 2]
  assert sorted(np.concatenate(list(ids.values()))) == list(range(20))
  assert ds.schema.sequences == () and len(ds.schema.dense) == 26
  train_c1 = Counter(rows[r][14] for r in ids["train"])
  vocab = sorted(v for v, c in train_c1.items() if c >= 2)
  for s in SPLITS:
    a = ds.split(s)
    for j, r in enumerate(ids[s]):
      want_dense = [math.log1p(r), math.log1p(max(r - 3, 0)), 0.0 if r % 2 else math.log1p(7)] + [0.0] * 10
      want_miss = [0, 0, float(r % 2)] + [1.0] * 10
      np.testing.assert_allclose(a["dense"][j], want_dense + want_miss, rtol=1e-6)
      c1 = rows[r][14]
      assert a["sparse"][j, 0] == (vocab.index(c1) + 2 if c1 in vocab else 1)   # OOV -> 1
      assert a["sparse"][j, 1] == (0 if r % 4 == 0 else 2)                        # missing -> 0
      assert a["label"][j] == float(r % 3 == 0)
      assert a["group_id"][j] == 0
  assert ds.schema.sparse[0].vocab_size == len(vocab) + 2
  assert ds.schema.sparse[1].vocab_size == 3 and ds.schema.dense[13] == "I1_missing"


def test_hash_mode_and_seed(tmp_path, cache_dir):
  rows = fixture_rows()
  root = write(tmp_path, rows)
  ds = load_dataset(cfg(root, categorical="hash", hash_buckets=97))
  for s in SPLITS:
    a = ds.split(s)
    for j, r in enumerate(rows_of(a)):
      for k in (0, 1):
        v = rows[r][14 + k]
        want = 0 if v == "" else 1 + int.from_bytes(hashlib.md5(f"C{k + 1}={v}".encode()).digest()[:8],
                                                     "little") % 97
        assert a["sparse"][j, k] == want
  assert {f.vocab_size for f in ds.schema.sparse} == {98}
  other = load_dataset(cfg(root, seed=5))
  assert sorted(rows_of(other.test)) != sorted(rows_of(load_dataset(cfg(root)).test))


def test_header_order_free_and_bad_inputs(tmp_path, cache_dir):
  rows = fixture_rows()
  perm = list(reversed(range(len(HEADER))))
  root = write(tmp_path, [[r[i] for i in perm] for r in rows], header=[HEADER[i] for i in perm])
  a = load_dataset(cfg(root))
  b = load_dataset(cfg(write(tmp_path / "b", rows)))
  np.testing.assert_array_equal(a.train["dense"], b.train["dense"])
  bad = [r[:] for r in rows]
  bad[4][2] = "x1"
  with pytest.raises(DataError, match=r"crit.csv: line 6: field 'I2'.*'x1'"):
    load_dataset(cfg(write(tmp_path / "c", bad)))
  bad = [r[:] for r in rows]
  bad[2][0] = "2"
  with pytest.raises(DataError, match=r"line 4: field 'label'"):
    load_dataset(cfg(write(tmp_path / "d", bad)))
  with pytest.raises(DataError, match=r"line 1: field 'C26'"):
    load_dataset(cfg(write(tmp_path / "e", [r[:-1] for r in rows], header=HEADER[:-1])))
  for kw in (dict(categorical="onehot"), dict(min_count=0), dict(hash_buckets=-1)):
    with pytest.raises(ConfigError):
      load_dataset(cfg(root, **kw))


REAL = pathlib.Path(os.environ.get("RECJAX_DATA_DIR", "/nonexistent")) / "criteo_sample"


@pytest.mark.skipif(not (REAL / "deepctr_criteo_sample.txt").is_file(),
                    reason="RECJAX_DATA_DIR has no criteo_sample/deepctr_criteo_sample.txt")
def test_real_sample(cache_dir):
  ds = load_dataset({**criteo.DEFAULTS, "data_dir": str(REAL.parent)})
  with open(REAL / "deepctr_criteo_sample.txt", newline="") as f:
    recs = list(csv.DictReader(f))
  assert [len(ds.split(s)["label"]) for s in SPLITS] == [160, 20, 20]
  assert sum(int(r["label"]) for r in recs) == 49 == sum(int(ds.split(s)["label"].sum()) for s in SPLITS)

  def dense(r):
    x = [r[f"I{k}"] for k in range(1, 14)]
    return [math.log1p(max(float(v), 0.0)) if v else 0.0 for v in x] + [float(not v) for v in x]

  def by_rows(m):   # rows in lexicographic order, so the two multisets can be compared elementwise
    return m[np.lexsort(m.T[::-1])]

  want = by_rows(np.array([dense(r) for r in recs]))
  got = by_rows(np.concatenate([ds.split(s)["dense"] for s in SPLITS]).astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert ds.schema.sequences == ()
