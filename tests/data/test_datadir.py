"""Data directory resolution and the download path (a local zip over a file:// URL; no network)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
from mlfixture import write_ml

from recjax.data import datadir
from recjax.data.dataset import load_dataset
from recjax.data.sources import movielens
from recjax.errors import DataError


def test_resolve_order(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_DATA_DIR", str(tmp_path / "env"))
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert datadir.resolve_data_dir(str(tmp_path / "cli")) == tmp_path / "cli"
  assert datadir.resolve_data_dir("") == tmp_path / "env"
  assert datadir.resolve_data_dir(None) == tmp_path / "env"
  monkeypatch.delenv("RECJAX_DATA_DIR")
  assert datadir.resolve_data_dir("") == tmp_path / "home" / ".cache" / "recjax"


def make_zip(tmp_path, extra=()) -> tuple[str, str]:
  """A zip laid out like the official ml-100k.zip; returns (file:// URL, md5 of its u.data)."""
  src = write_ml(tmp_path / "src" / "ml-100k")
  z = tmp_path / "ml-100k.zip"
  with zipfile.ZipFile(z, "w") as f:
    for name in ("u.data", "u.item", "u.user"):
      f.write(src / name, f"ml-100k/{name}")
    for name, text in extra:
      f.writestr(name, text)
  return z.as_uri(), hashlib.md5((src / "u.data").read_bytes()).hexdigest()


def test_download_extracts_and_verifies(tmp_path):
  url, md5 = make_zip(tmp_path, extra=[("ml-100k/README", "readme"), ("../evil", "x")])
  dest = tmp_path / "data"
  folder = datadir.ensure_files(dest, "ml-100k", movielens.FILES, url, {"u.data": md5})
  assert folder == dest / "ml-100k"
  assert sorted(p.name for p in folder.iterdir()) == ["README", "u.data", "u.item", "u.user"]
  assert datadir.file_md5(folder / "u.data") == md5
  assert not (tmp_path / "evil").exists()
  assert [p.name for p in dest.iterdir()] == ["ml-100k"]          # no temp files left behind


def test_download_checksum_mismatch_extracts_nothing(tmp_path):
  url, _ = make_zip(tmp_path)
  dest = tmp_path / "data"
  with pytest.raises(DataError) as e:
    datadir.ensure_files(dest, "ml-100k", movielens.FILES, url, {"u.data": "0" * 32})
  assert "md5" in str(e.value) and "0" * 32 in str(e.value) and url in str(e.value)
  assert list(dest.iterdir()) == []


def test_offline_error_names_files_dir_and_url(tmp_path):
  url = (tmp_path / "no" / "ml-100k.zip").as_uri()
  with pytest.raises(DataError) as e:
    datadir.ensure_files(tmp_path / "data", "ml-100k", movielens.FILES, url, movielens.MD5S)
  msg = str(e.value)
  assert "['u.data', 'u.item', 'u.user']" in msg and str(tmp_path / "data" / "ml-100k") in msg and url in msg


def test_load_dataset_downloads_when_missing(tmp_path, cache_dir, monkeypatch):
  url, md5 = make_zip(tmp_path)
  monkeypatch.setattr(movielens, "URL", url)
  monkeypatch.setattr(movielens, "MD5S", {"u.data": md5})
  ds = load_dataset({**movielens.DEFAULTS, "data_dir": str(tmp_path / "fresh")})
  assert (len(ds.train["label"]), len(ds.valid["label"]), len(ds.test["label"])) == (34, 3, 3)
  assert (tmp_path / "fresh" / "ml-100k" / "u.user").is_file()


def test_official_md5_constant():
  assert movielens.MD5S == {"u.data": "6e47046882bad158b0efbb84cd5cb987"}
  assert movielens.URL == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
