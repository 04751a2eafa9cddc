"""MovieLens-100K source: split counts, label rule, leak-free left-padded histories, features, bad inputs."""

from __future__ import annotations

import os
import pathlib
from collections import defaultdict

import numpy as np
import pytest
from mlfixture import ITEMS, USERS, ratings_rows, write_ml

from recjax.data import schema as schema_mod
from recjax.data.dataset import load_dataset
from recjax.data.sources import movielens
from recjax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


def cfg(data_dir, **kw):
  return {**movielens.DEFAULTS, "data_dir": str(data_dir), **kw}


def oracle(rows, t):
  """Pure-Python reference: per split, rows as (user, item, rating, time, hist_items, hist_ratings) in
  (user, time, file order) order; histories of length t, left-padded with 0, most recent last."""
  by_user = defaultdict(list)
  for line, (u, i, r, ts) in enumerate(rows):
    by_user[u].append((ts, line, i, r))
  out = {s: [] for s in SPLITS}
  for u in sorted(by_user):
    seq = sorted(by_user[u])                       # (time, file line): the tie rule
    n, k = len(seq), len(seq) // 10
    for p, (ts, _, i, r) in enumerate(seq):
      split = "test" if p >= n - k else "valid" if p >= n - 2 * k else "train"
      prev = seq[max(0, p - t):p]
      hi = [x[2] for x in prev]
      hr = [x[3] for x in prev]
      out[split].append((u, i, r, ts, [0] * (t - len(hi)) + hi, [0] * (t - len(hr)) + hr))
  return out


def check_against_oracle(ds, rows, t):
  want = oracle(rows, t)
  for s in SPLITS:
    a, w = ds.split(s), want[s]
    assert len(a["label"]) == len(w), s
    if not w:
      continue
    u, i, r, ts, hi, hr = (np.array(x) for x in zip(*w))
    np.testing.assert_array_equal(a["group_id"], u)
    np.testing.assert_array_equal(a["sparse"][:, 0], u)
    np.testing.assert_array_equal(a["sparse"][:, 1], i)
    np.testing.assert_array_equal(a["time"], ts)
    np.testing.assert_array_equal(a["label"], (r >= 4).astype(np.float32))
    np.testing.assert_array_equal(a["seq/hist_item"], hi)
    np.testing.assert_array_equal(a["seq/hist_rating"], hr)
    np.testing.assert_array_equal(a["seq_len/hist"], (hi > 0).sum(1))


def test_fixture_split_counts_per_user(ml_dir):
  ds = load_dataset(cfg(ml_dir))
  counts = {s: np.bincount(ds.split(s)["group_id"], minlength=5)[1:].tolist() for s in SPLITS}
  assert counts == {"train": [17, 8, 9, 0], "valid": [2, 1, 0, 0], "test": [2, 1, 0, 0]}
  # user 1: ties at 3 times; the last in (time, file order) are i = 17, 20 (test) and 11, 14 (valid).
  u1 = lambda s: ds.split(s)["group_id"] == 1
  np.testing.assert_array_equal(ds.test["sparse"][u1("test"), 1], [17 % 6 + 1, 20 % 6 + 1])
  np.testing.assert_array_equal(ds.valid["sparse"][u1("valid"), 1], [11 % 6 + 1, 14 % 6 + 1])
  # user 2: test is (item 4, t=1000, rating 5), valid (item 2, t=900, rating 4).
  assert ds.test["sparse"][ds.test["group_id"] == 2, 1].tolist() == [4]
  assert ds.test["time"][ds.test["group_id"] == 2].tolist() == [1000]
  assert ds.valid["sparse"][ds.valid["group_id"] == 2, 1].tolist() == [2]
  assert ds.train_positive_rate == pytest.approx(ds.train["label"].mean())
  assert ds.test["time"].dtype == np.int64 and ds.test["group_id"].dtype == np.int32


def test_fixture_hand_worked_user3(ml_dir):
  ds = load_dataset(cfg(ml_dir, max_seq_len=3))
  m = ds.train["group_id"] == 3
  # sorted: items 3,1,2,4,6,5,3,1,2; ratings 1,3,5,4,4,2,4,5,2 (see mlfixture)
  assert ds.train["sparse"][m, 1].tolist() == [3, 1, 2, 4, 6, 5, 3, 1, 2]
  assert ds.train["label"][m].tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 0]   # rating 3 → 0, 4 → 1
  assert ds.train["seq/hist_item"][m].tolist() == [
      [0, 0, 0], [0, 0, 3], [0, 3, 1], [3, 1, 2], [1, 2, 4], [2, 4, 6], [4, 6, 5], [6, 5, 3], [5, 3, 1]]
  assert ds.train["seq/hist_rating"][m].tolist()[3] == [1, 3, 5]
  assert ds.train["seq_len/hist"][m].tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3]
  # hist_genre is the first genre of each hist item: item 3 → thriller (16) + 1, 1 → animation 4, 2 → action 2
  assert ds.train["seq/hist_genre"][m].tolist()[3] == [17, 4, 2]


def test_fixture_histories_match_oracle_and_never_leak(ml_dir):
  for t in (2, 5, 50):
    ds = load_dataset(cfg(ml_dir, max_seq_len=t))
    check_against_oracle(ds, ratings_rows(), t)
  # A test example's history holds the user's earlier (train + valid) items, most recent last.
  ds = load_dataset(cfg(ml_dir, max_seq_len=50))
  last = ds.test["seq/hist_item"][ds.test["group_id"] == 2][0]
  assert last[-9:].tolist() == [2, 4, 1, 3, 6, 5, 1, 3, 2] and not last[:-9].any()


def test_fixture_static_features(ml_dir):
  ds = load_dataset(cfg(ml_dir))
  names = [f.name for f in ds.schema.sparse]
  rows = {}
  for s in SPLITS:
    a = ds.split(s)
    for r, d in zip(a["sparse"], a["dense"]):
      rows[(int(r[0]), int(r[1]))] = (dict(zip(names, r.tolist())), d)
  # user features: 1 = M, 24 → 18-24 (2), technician (20), zip 8xxxx (9); 2 = F, 53 → 50-55 (6), other
  # (14), zip 9 (10); 3 = M, 17 → <18 (1), writer (21), Canadian zip (11)
  want_user = {1: (1, 2, 20, 9), 2: (2, 6, 14, 10), 3: (1, 1, 21, 11)}
  # item features: first genre id, release-year bucket (1995 → 10, 1939 → 1, missing → 0, 1998 → 13)
  want_item = {1: (4, 10), 2: (2, 10), 3: (17, 10), 4: (9, 1), 5: (1, 0), 6: (0, 13)}
  for (u, i), (f, d) in rows.items():
    assert (f["gender"], f["age"], f["occupation"], f["zip_prefix"]) == want_user[u]
    assert (f["first_genre"], f["release_year"]) == want_item[i]
    assert d.shape == (20,) and d[:19].sum() == {1: 3, 2: 3, 3: 1, 4: 1, 5: 1, 6: 0}[i]
  years = np.array([1995, 1995, 1995, 1939, 1998], float)   # items with a date
  mu, sd = years.mean(), years.std()
  assert rows[(3, 4)][1][19] == pytest.approx((1939 - mu) / sd, rel=1e-5)
  assert rows[(3, 5)][1][19] == 0.0   # missing date → 0


def test_parse_users_unknowns_map_to_zero(tmp_path, caplog):
  write_ml(tmp_path)
  with caplog.at_level("WARNING"):
    u = movielens.parse_users(tmp_path / "u.user")
  assert (u["gender"][3], u["occupation"][3], u["zip_prefix"][3]) == (0, 0, 0)   # X, astronaut, empty zip
  # One warning for the file, counting both unknown values and naming the first.
  msgs = [r.getMessage() for r in caplog.records if r.name == movielens.log.name]
  assert len(msgs) == 1 and "2 unknown" in msgs[0] and "line 4" in msgs[0] and "'X'" in msgs[0], msgs


def test_history_ratings_off_and_feature_selection(ml_dir):
  ds = load_dataset(cfg(ml_dir, history_ratings=False))
  assert [f.name for f in ds.schema.sequences] == ["hist_item", "hist_genre"]
  assert "seq/hist_rating" not in ds.train
  ds = load_dataset(cfg(ml_dir, features=["item_id", "user_id", "hist_item", "release_year_norm"]))
  assert [f.name for f in ds.schema.sparse] == ["user_id", "item_id"]
  assert ds.schema.dense == ("release_year_norm",)
  assert ds.train["sparse"].shape[1] == 2 and ds.train["dense"].shape[1] == 1
  assert sorted(k for k in ds.train if k.startswith("seq")) == ["seq/hist_item", "seq_len/hist"]
  ds = load_dataset(cfg(ml_dir, features=["user_id"]))
  assert "dense" not in ds.train and "seq_len/hist" not in ds.train and not ds.schema.sequences


# ---------------------------------------------------------------------------------------------- bad inputs


def _bad_data(tmp_path, lines):
  folder = write_ml(tmp_path / "d" / "ml-100k")
  (folder / "u.data").write_text("".join(ln + "\n" for ln in lines))
  return tmp_path / "d"


@pytest.mark.parametrize("bad_line, field, text", [
    ("1\t2\tfour\t881250949", "rating", "expected an integer, got 'four'"),
    ("1\t2\t3", "columns", "expected 4 tab-separated fields"),
    ("1\t2\t7\t881250949", "rating", "value 7 must be in 1..5"),
    ("1\t99\t3\t881250949", "item_id", "id 99 is not in"),
    ("9\t1\t3\t881250949", "user_id", "id 9 is not in"),
    ("12345678901234567890\t1\t3\t881250949", "user_id", "outside the 64-bit integer range"),
    ("1099511627776\t1\t3\t881250949", "user_id", "id 1099511627776 is not in"),  # no id-sized array
])
def test_malformed_rating_row(tmp_path, cache_dir, bad_line, field, text):
  good = ["1\t1\t4\t100", "2\t2\t3\t200", "", "3\t3\t5\t300"]
  d = _bad_data(tmp_path, good + [bad_line, "1\t3\t4\t400"])
  with pytest.raises(DataError) as e:
    load_dataset(cfg(d))
  msg = str(e.value)
  assert str(d / "ml-100k" / "u.data") in msg and "line 5" in msg and f"field {field!r}" in msg and text in msg


def test_malformed_item_and_user_rows(tmp_path, cache_dir):
  folder = write_ml(tmp_path / "ml-100k", items=ITEMS.replace("01-Jan-1939", "1939-01-01"))
  with pytest.raises(DataError, match=r"u\.item: line 4: field 'release_date': expected dd-Mon-yyyy"):
    load_dataset(cfg(tmp_path))
  write_ml(folder, users=USERS.replace("2|53|F", "2|fifty|F"))
  with pytest.raises(DataError, match=r"u\.user: line 2: field 'age': expected an integer, got 'fifty'"):
    load_dataset(cfg(tmp_path))


def test_missing_file_names_files_dir_and_url(tmp_path, cache_dir, monkeypatch):
  folder = write_ml(tmp_path / "ml-100k")
  os.remove(folder / "u.user")
  url = (tmp_path / "nowhere" / "ml-100k.zip").as_uri()   # offline: an unreachable URL, no network use
  monkeypatch.setattr(movielens, "URL", url)
  with pytest.raises(DataError) as e:
    load_dataset(cfg(tmp_path))
  msg = str(e.value)
  assert "['u.user']" in msg and str(folder) in msg and url in msg and "RECJAX_DATA_DIR" in msg


def test_unknown_feature_and_dataset_and_bad_config(ml_dir):
  with pytest.raises(ConfigError) as e:
    load_dataset(cfg(ml_dir, features=["item_id", "colour"]))
  assert "'colour'" in str(e.value) and "'hist_item'" in str(e.value) and "'zip_prefix'" in str(e.value)
  with pytest.raises(ConfigError, match=r"unknown dataset 'movielen'; known datasets: \[.*'movielens'"):
    load_dataset(cfg(ml_dir, name="movielen"))
  with pytest.raises(ConfigError, match="max_seq_len"):
    load_dataset(cfg(ml_dir, max_seq_len=0))
  with pytest.raises(ConfigError, match="variant"):
    load_dataset(cfg(ml_dir, variant="ml-1m"))


@pytest.mark.parametrize("block_rows", [None, 2])
def test_validate_rejects_out_of_range_id_and_nan(ml_dir, monkeypatch, block_rows):
  if block_rows:                                           # rows checked in blocks of 2: rows 5, 2, 3 still named
    monkeypatch.setattr(schema_mod, "_VALIDATE_ROWS", block_rows)
  ds = load_dataset(cfg(ml_dir))
  a = {k: v.copy() for k, v in ds.train.items()}
  a["sparse"][5, 1] = ds.schema.sparse[1].vocab_size       # item id == vocab: out of range
  with pytest.raises(DataError, match=r"train: field 'item_id': id 7 at row 5 is outside \[0, 7\)"):
    ds.schema.validate(a, where="train")
  a = {k: v.copy() for k, v in ds.train.items()}
  a["seq/hist_item"][2, -1] = -1
  with pytest.raises(DataError, match=r"field 'seq/hist_item': id -1 at row 2 position 49"):
    ds.schema.validate(a, where="train")
  a = {k: v.copy() for k, v in ds.train.items()}
  a["dense"][3, 19] = np.nan
  with pytest.raises(DataError, match=r"field 'release_year_norm': non-finite value nan at row 3"):
    ds.schema.validate(a, where="train")


def test_load_dataset_validates_source_output(ml_dir, monkeypatch):
  real_build = movielens.build

  def nan_build(c, files):
    schema, splits, meta = real_build(c, files)
    splits["valid"]["dense"][0, 0] = np.nan
    return schema, splits, meta

  monkeypatch.setattr(movielens, "build", nan_build)
  with pytest.raises(DataError, match=r"movielens valid split: field 'genre_unknown': non-finite value nan"):
    load_dataset(cfg(ml_dir, use_cache=False))


# ---------------------------------------------------------------------------------------------- real data


def _real_dir() -> pathlib.Path | None:
  d = os.environ.get("RECJAX_DATA_DIR")
  if d and all((pathlib.Path(d) / "ml-100k" / f).is_file() for f in movielens.FILES):
    return pathlib.Path(d)
  return None


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  d = _real_dir()
  if d is None:
    pytest.skip("real ml-100k not found: set RECJAX_DATA_DIR to a directory holding ml-100k/u.data, u.item, u.user")
  mp = pytest.MonkeyPatch()
  mp.setenv("RECJAX_CACHE_DIR", str(tmp_path_factory.mktemp("real_cache")))
  yield d, load_dataset(cfg(d))
  mp.undo()


def test_real_reference_counts(real):
  _, ds = real
  got = {s: (len(ds.split(s)["label"]), round(float(ds.split(s)["label"].mean()), 4)) for s in SPLITS}
  assert got == {"train": (80808, 0.5720), "valid": (9596, 0.4813), "test": (9596, 0.4722)}
  assert [int((ds.split(s)["group_id"] == 1).sum()) for s in ("test", "valid", "train")] == [27, 27, 218]
  assert ds.schema.tables == {"user_id": 944, "item_id": 1683, "gender": 3, "age": 8, "occupation": 22,
                              "zip_prefix": 12, "first_genre": 20, "release_year": 14, "hist_rating": 6}
  assert ds.meta["num_ratings"] == 100_000 and ds.meta["num_users"] == 943 and ds.meta["num_items"] == 1682


def test_real_histories_match_oracle(real):
  d, ds = real
  raw = np.loadtxt(d / "ml-100k" / "u.data", dtype=np.int64)
  check_against_oracle(ds, [tuple(r) for r in raw.tolist()], 50)


def test_real_file_matches_official_md5(real):
  from recjax.data.datadir import file_md5
  d, _ = real
  assert file_md5(d / "ml-100k" / "u.data") == movielens.MD5S["u.data"]
