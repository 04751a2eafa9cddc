"""Fixtures for training tests: the real ml-100k splits (skipped when absent) and tiny configs."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_config(name: str, variant: str):
  """`experiments/configs/<name>.py:get_config(variant)`, as run.py loads it."""
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "experiments" / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def ml100k_available() -> bool:
  d = os.environ.get("RECJAX_DATA_DIR")
  return bool(d) and (pathlib.Path(d) / "ml-100k" / "u.data").is_file()


@pytest.fixture(scope="session")
def ml100k():
  if not ml100k_available():
    pytest.skip("ml-100k not found: set RECJAX_DATA_DIR to a directory holding ml-100k/u.data")
  from recjax.data.dataset import load_dataset
  return load_dataset(load_config("interformer", "tiny").dataset)


@pytest.fixture
def tiny_config():
  return load_config("interformer", "tiny")
