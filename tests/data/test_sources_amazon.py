"""Amazon (S3-Rec release) source: DIN samples, leave-one-out split, negatives, category files, bad inputs."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from recjax.data.dataset import load_dataset
from recjax.data.sources import amazon
from recjax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")

# Hand-written fixture under another category name (the Toys file of the same release has this layout).
SEQS = {1: [1, 2, 3], 2: [3, 4], 3: [2, 5, 1, 4]}
ATTRS = {1: [7, 1], 2: [3], 3: [9, 2, 3], 4: [], 5: [1, 7]}


def write_fixture(root: pathlib.Path, category="Toys_and_Games", folder=None, seqs=SEQS, attrs=ATTRS):
  d = root / (folder or f"amazon_{category.lower()}")
  d.mkdir(parents=True, exist_ok=True)
  (d / f"{category}.txt").write_text("".join(f"{u} {' '.join(map(str, s))}\n" for u, s in seqs.items()))
  (d / f"{category}_item2attributes.json").write_text(json.dumps({str(k): v for k, v in attrs.items()}))
  return root


def cfg(data_dir, **kw):
  return {**amazon.DEFAULTS, "data_dir": str(data_dir), **kw}


def test_fixture_hand_computed(tmp_path, cache_dir):
  ds = load_dataset(cfg(write_fixture(tmp_path), category="Toys_and_Games", max_seq_len=2))
  # (user, target, label, hist (T=2, left-padded), len) per split, pos then neg; negatives checked below.
  want = {
      "train": [(3, 5, 1, [0, 2], 1)],
      "valid": [(1, 2, 1, [0, 1], 1), (3, 1, 1, [2, 5], 2)],
      "test": [(1, 3, 1, [1, 2], 2), (2, 4, 1, [0, 3], 1), (3, 4, 1, [5, 1], 2)],
  }
  cat = {1: 7, 2: 3, 3: 9, 4: 0, 5: 1}    # first attribute; item 4 has none -> 0
  for s in SPLITS:
    a = ds.split(s)
    assert len(a["label"]) == 2 * len(want[s])
    np.testing.assert_array_equal(a["label"], [1, 0] * len(want[s]))
    for r, (u, item, _, hist, n) in enumerate(want[s]):
      for row in (2 * r, 2 * r + 1):        # positive and its negative share user and history
        assert a["group_id"][row] == u and a["sparse"][row, 0] == u
        np.testing.assert_array_equal(a["seq/hist_item"][row], hist)
        np.testing.assert_array_equal(a["seq/hist_category"][row], [cat.get(h, 0) for h in hist])
        assert a["seq_len/hist"][row] == n
      assert a["sparse"][2 * r, 1] == item
      neg = int(a["sparse"][2 * r + 1, 1])
      assert 1 <= neg <= 5 and neg not in SEQS[u]
      if u == 3:
        assert neg == 3                      # the only item user 3 never touched
      for row in (2 * r, 2 * r + 1):
        assert a["sparse"][row, 2] == cat[int(a["sparse"][row, 1])]
  assert ds.schema.tables == {"user_id": 4, "item_id": 6, "category": 10}
  assert [f.table_name for f in ds.schema.sequences] == ["item_id", "category"]


def test_negatives_seeded(tmp_path, cache_dir):
  root = write_fixture(tmp_path, seqs={u: list(range(u, u + 4)) for u in range(1, 30)},
                       attrs={i: [i] for i in range(1, 40)})
  a = load_dataset(cfg(root, category="Toys_and_Games", seed=3, use_cache=False)).train
  b = load_dataset(cfg(root, category="Toys_and_Games", seed=3, use_cache=False)).train
  c = load_dataset(cfg(root, category="Toys_and_Games", seed=4, use_cache=False)).train
  np.testing.assert_array_equal(a["sparse"], b["sparse"])
  assert not np.array_equal(a["sparse"][1::2, 1], c["sparse"][1::2, 1])


def test_folder_configurable(tmp_path, cache_dir):
  root = write_fixture(tmp_path, category="Sports_and_Outdoors", folder="s3rec")
  ds = load_dataset(cfg(root, category="Sports_and_Outdoors", folder="s3rec"))
  assert len(ds.test["label"]) == 6
  with pytest.raises(DataError, match="Sports_and_Outdoors.txt"):
    load_dataset(cfg(root, category="Sports_and_Outdoors"))   # default folder amazon_sports_and_outdoors


def test_bad_inputs(tmp_path, cache_dir):
  root = write_fixture(tmp_path)
  f = root / "amazon_toys_and_games" / "Toys_and_Games.txt"
  f.write_text("1 1 2\n2 3 x4\n")
  with pytest.raises(DataError, match=r"Toys_and_Games.txt: line 2: field 'item_id\[2\]'.*'x4'"):
    load_dataset(cfg(root, category="Toys_and_Games"))
  f.write_text("1 1 2\n2 3 0\n")
  with pytest.raises(DataError, match=r"line 2: field 'item_id\[2\]'"):
    load_dataset(cfg(root, category="Toys_and_Games"))
  for kw in (dict(max_seq_len=0), dict(seed="a"), dict(category="")):
    with pytest.raises(ConfigError):
      load_dataset(cfg(root, **kw))


REAL = pathlib.Path(os.environ.get("RECJAX_DATA_DIR", "/nonexistent")) / "amazon_beauty"


@pytest.mark.skipif(not (REAL / "Beauty.txt").is_file(), reason="RECJAX_DATA_DIR has no amazon_beauty/Beauty.txt")
def test_real_beauty(cache_dir):
  ds = load_dataset(cfg(REAL.parent))
  seqs = {}
  for ln in (REAL / "Beauty.txt").read_text().split("\n"):
    if ln.strip():
      p = [int(x) for x in ln.split()]
      seqs[p[0]] = p[1:]
  attrs = json.loads((REAL / "Beauty_item2attributes.json").read_text())
  n_test = sum(2 for s in seqs.values() if len(s) >= 2)
  n_valid = sum(2 for s in seqs.values() if len(s) >= 3)
  n_train = sum(2 * max(0, len(s) - 3) for s in seqs.values())
  assert (len(seqs), sum(map(len, seqs.values()))) == (22363, 198502)   # README figures
  assert [len(ds.split(s)["label"]) for s in SPLITS] == [n_train, n_valid, n_test]
  for s in SPLITS:
    a = ds.split(s)
    assert a["label"].mean() == 0.5
    users, items = a["group_id"][1::2], a["sparse"][1::2, 1]
    assert all(int(i) not in set(seqs[int(u)]) for u, i in zip(users, items))     # negatives
  t = ds.test
  last = np.array([seqs[int(u)][-1] for u in t["group_id"][0::2]])
  np.testing.assert_array_equal(t["sparse"][0::2, 1], last)
  np.testing.assert_array_equal(t["sparse"][0::2, 2], [attrs[str(i)][0] for i in last])
  for r in range(0, len(t["label"]), 2 * 997):       # spot-check histories
    s = seqs[int(t["group_id"][r])][:-1][-50:]
    np.testing.assert_array_equal(t["seq/hist_item"][r], [0] * (50 - len(s)) + s)
    assert t["seq_len/hist"][r] == len(s)
