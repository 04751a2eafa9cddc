"""Fixtures: the hand-written ml-100k-format dataset (`mlfixture`) in tmp_path, an isolated cache dir."""

from __future__ import annotations

import pytest
from mlfixture import write_ml


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
  d = tmp_path / "cache"
  monkeypatch.setenv("RECJAX_CACHE_DIR", str(d))
  return d


@pytest.fixture
def ml_dir(tmp_path, cache_dir):
  """A data dir holding ml-100k/{u.data,u.item,u.user} of the hand-written fixture."""
  write_ml(tmp_path / "data" / "ml-100k")
  return tmp_path / "data"
