"""Preprocessed-array cache: hits equal misses, keys follow files and options, damage is rebuilt, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recjax.data import cache as cache_lib
from recjax.data.dataset import load_dataset
from recjax.data.sources import movielens


def cfg(data_dir, **kw):
  return {**movielens.DEFAULTS, "data_dir": str(data_dir), **kw}


def assert_same(a, b):
  assert a.schema == b.schema
  for s in ("train", "valid", "test"):
    x, y = a.split(s), b.split(s)
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype
      np.testing.assert_array_equal(x[k], y[k])


def test_second_load_hits_and_equals_first(ml_dir, cache_dir):
  first = load_dataset(cfg(ml_dir))
  assert first.meta["cache"] == "miss"
  path = first.meta["cache_path"]
  assert os.path.dirname(path) == str(cache_dir) and os.path.isfile(path)
  assert os.path.isfile(path[:-4] + ".json")
  second = load_dataset(cfg(ml_dir))
  assert second.meta["cache"] == "hit" and second.meta["cache_path"] == path
  assert_same(first, second)
  assert second.meta["num_ratings"] == first.meta["num_ratings"] == 40
  assert load_dataset(cfg(ml_dir, use_cache=False)).meta["cache"] == "off"


def test_key_changes_with_options_and_file_content(ml_dir):
  p50 = load_dataset(cfg(ml_dir)).meta["cache_path"]
  p7 = load_dataset(cfg(ml_dir, max_seq_len=7))
  assert p7.meta["cache"] == "miss" and p7.meta["cache_path"] != p50
  assert p7.train["seq/hist_item"].shape[1] == 7
  with open(ml_dir / "ml-100k" / "u.data", "a") as f:
    f.write("3\t6\t5\t999\n")
  changed = load_dataset(cfg(ml_dir))
  assert changed.meta["cache"] == "miss" and changed.meta["cache_path"] != p50
  assert changed.train["label"].shape[0] == 17 + 8 + 8             # user 3 now has 10 ratings → 8 train


def test_large_members_are_memory_mapped(ml_dir, cache_dir, monkeypatch):
  first = load_dataset(cfg(ml_dir))
  monkeypatch.setattr(cache_lib, "MMAP_MIN_BYTES", 0)               # every member counts as large
  hit = load_dataset(cfg(ml_dir))
  assert hit.meta["cache"] == "hit"
  assert all(isinstance(v, np.memmap) and not v.flags.writeable for s in ("train", "valid", "test")
             for v in hit.split(s).values())
  assert_same(first, hit)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_cache_is_rebuilt(ml_dir, damage, mmap, monkeypatch):
  if mmap:
    monkeypatch.setattr(cache_lib, "MMAP_MIN_BYTES", 0)
  first = load_dataset(cfg(ml_dir))
  path = first.meta["cache_path"]
  with open(path, "rb") as f:
    data = f.read()
  if damage == "truncate":
    data = data[:len(data) // 2]
  elif damage == "flip":
    i = len(data) // 2
    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
  else:
    data = b"not a zip"
  with open(path, "wb") as f:
    f.write(data)
  rebuilt = load_dataset(cfg(ml_dir))
  assert rebuilt.meta["cache"] == "miss"
  assert_same(first, rebuilt)
  assert load_dataset(cfg(ml_dir)).meta["cache"] == "hit"          # rewritten whole


def test_killed_write_leaves_no_cache(ml_dir, cache_dir, monkeypatch):
  def dies(f, **arrays):
    f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt                                        # the run is killed mid-write

  monkeypatch.setattr(np, "savez", dies)
  with pytest.raises(KeyboardInterrupt):
    load_dataset(cfg(ml_dir))
  assert os.listdir(cache_dir) == []                               # neither the file nor a temp remains
  monkeypatch.undo()
  os.environ["RECJAX_CACHE_DIR"] = str(cache_dir)
  assert load_dataset(cfg(ml_dir)).meta["cache"] == "miss"


def test_cache_dir_resolution(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_CACHE_DIR", str(tmp_path / "env"))
  assert cache_lib.cache_dir(tmp_path / "data") == tmp_path / "env"
  monkeypatch.delenv("RECJAX_CACHE_DIR")
  assert cache_lib.cache_dir(tmp_path / "data") == tmp_path / "data" / ".recjax_cache"
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  writable = cache_lib.writable
  monkeypatch.setattr(cache_lib, "writable", lambda d, create: False)    # e.g. a read-only shared data dir
  assert cache_lib.cache_dir(tmp_path / "ro") == tmp_path / "home" / ".cache" / "recjax" / "cache"
  # A lookup (create=False) names the same folder without creating it; save() creates it.
  monkeypatch.setattr(cache_lib, "writable", writable)
  d = cache_lib.cache_dir(tmp_path / "fresh", create=False)
  assert d == tmp_path / "fresh" / ".recjax_cache" and not d.exists()
  cache_lib.save(d / "x.npz", "k", {"train": {"label": np.ones(2, np.float32)}}, {})
  assert (d / "x.npz").is_file()


def test_load_rejects_other_key(tmp_path):
  p = tmp_path / "x.npz"
  cache_lib.save(p, "k1", {"train": {"label": np.ones(3, np.float32)}}, {"schema": {}, "meta": {}})
  splits, info = cache_lib.load(p, "k1")
  np.testing.assert_array_equal(splits["train"]["label"], np.ones(3))
  assert info == {"schema": {}, "meta": {}}
  assert cache_lib.load(p, "k2") is None and cache_lib.load(tmp_path / "absent.npz", "k1") is None
