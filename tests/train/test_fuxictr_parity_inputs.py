"""The arrays `experiments/analysis/fuxictr_parity.py` hands FuxiCTR are exactly the ones recjax trains on.

Only the numpy half of the script runs here (export, reload, per-field columns, DIN pairing); the FuxiCTR
half needs PyTorch and runs outside CI.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import ROOT, ml100k_available


def _script():
  spec = importlib.util.spec_from_file_location("fuxictr_parity",
                                                ROOT / "experiments" / "analysis" / "fuxictr_parity.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_din_pairs_each_history_with_the_sparse_feature_owning_its_table():
  schema = {"sparse": [{"name": "user_id", "vocab_size": 5, "table": None},
                       {"name": "item_id", "vocab_size": 9, "table": None},
                       {"name": "cat", "vocab_size": 4, "table": None}],
            "dense": ["price"],
            "sequences": [{"name": "hist_item", "vocab_size": 9, "max_len": 3, "group": "hist", "table": "item_id"},
                          {"name": "hist_cat", "vocab_size": 4, "max_len": 3, "group": "hist", "table": "cat"},
                          {"name": "hist_rating", "vocab_size": 6, "max_len": 3, "group": "hist", "table": None}]}
  assert _script()._din_fields(schema) == (("item_id", "cat"), ("hist_item", "hist_cat"))
  arrays = {"sparse": np.array([[1, 2, 3], [4, 5, 0]], np.int32), "dense": np.array([[0.5], [1.5]], np.float32),
            "seq/hist_item": np.array([[0, 7, 8], [0, 0, 1]], np.int32),
            "seq/hist_cat": np.array([[0, 2, 3], [0, 0, 1]], np.int32),
            "seq/hist_rating": np.array([[0, 4, 5], [0, 0, 3]], np.int32), "label": np.array([1.0, 0.0], np.float32)}
  cols = _script()._columns(schema, arrays)
  assert list(cols) == ["user_id", "item_id", "cat", "price", "hist_item", "hist_cat", "hist_rating", "label"]
  np.testing.assert_array_equal(cols["cat"], [3, 0])
  np.testing.assert_array_equal(cols["price"], [0.5, 1.5])
  np.testing.assert_array_equal(cols["hist_rating"], [[0, 4, 5], [0, 0, 3]])
  assert cols["item_id"].dtype == np.int64 and cols["label"].dtype == np.float32


@pytest.mark.skipif(not ml100k_available(), reason="ml-100k not found (set RECJAX_DATA_DIR)")
def test_export_round_trips_the_ml100k_split(tmp_path, ml100k):
  mod = _script()
  mod.export(tmp_path, "movielens")
  schema, splits = mod._load(tmp_path)
  assert {s: len(splits[s]["label"]) for s in mod.SPLITS} == {"train": 80808, "valid": 9596, "test": 9596}
  assert schema["dense"] == list(ml100k.schema.dense)
  for s in mod.SPLITS:
    for key, value in ml100k.split(s).items():
      np.testing.assert_array_equal(splits[s][key], value, err_msg=f"{s}/{key}")
  with pytest.raises(SystemExit, match="missing"):
    mod._load(tmp_path / "nowhere")


def test_bad_arguments_are_refused_before_anything_is_loaded_or_written(tmp_path):
  mod = _script()
  out = tmp_path / "sub" / "rows.jsonl"
  for argv, msg in ((["--models", "dnn,foo"], r"unknown model\(s\) \['foo'\]"),
                    (["--seeds", "0,x"], "--seeds: expected comma-separated integers")):
    with pytest.raises(SystemExit, match=msg):
      mod.main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(out), *argv])
  assert not out.parent.exists()
  out.parent.mkdir()
  out.write_text('{"model": "dnn"}\n')
  with pytest.raises(SystemExit, match="exists: pass --append"):
    mod.main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(out)])
  assert out.read_text() == '{"model": "dnn"}\n'
  with pytest.raises(SystemExit, match="unknown model"):
    mod.main(["speed", "--data", str(tmp_path / "nowhere"), "--models", "foo"])
