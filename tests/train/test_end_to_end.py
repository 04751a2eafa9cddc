"""A short InterFormer run on the real ml-100k beats an item-popularity score on the validation split."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from recjax import metrics
from recjax.data.schema import Schema
from recjax.errors import ConfigError, DataError
from recjax.train.loop import train_and_evaluate


def item_popularity_scores(train: dict, valid: dict, schema: Schema) -> np.ndarray:
  """Score = number of train ratings of the example's item (an independent, model-free baseline)."""
  col = schema.sparse_index("item_id")
  counts = np.bincount(train["sparse"][:, col], minlength=schema.sparse[col].vocab_size)
  return counts[valid["sparse"][:, col]].astype(np.float64)


@pytest.mark.slow
def test_short_run_beats_item_popularity(tmp_path, ml100k, tiny_config):
  cfg = tiny_config
  cfg.model.update(dim=16, head_mlp=(64, 32))
  cfg.train.update(batch_size=512, max_steps=120, eval_every=40, log_every=20, lr=3e-3)
  res = train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  pop_auc = metrics.auc(ml100k.valid["label"], item_popularity_scores(ml100k.train, ml100k.valid, ml100k.schema))
  assert 0.6 < pop_auc < 0.75  # sanity of the baseline itself
  assert res["valid"]["auc"] > pop_auc + 0.01, (res["valid"], pop_auc)
  # results.json carries the documented fields, and its test metrics match a recomputation from the
  # metrics log written by the same run.
  saved = json.loads((tmp_path / "results.json").read_text())
  for k in ("dataset", "model", "config", "best_step", "valid", "test", "train_examples_per_sec"):
    assert k in saved
  assert saved["keep_freed_memory"] is False  # only the scripts turn it on, not a library call
  assert saved["data_dir"] == ml100k.meta["data_dir"] and saved["data_dir"]
  for split in ("valid", "test"):
    assert set(saved[split]) >= {"auc", "gauc", "logloss", "ne"}
  recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  test_rec = [r for r in recs if r["split"] == "test"][-1]
  assert test_rec["auc"] == pytest.approx(saved["test"]["auc"])
  assert (tmp_path / "curves.png").stat().st_size > 1000


def test_a_data_error_leaves_no_run_directory(tmp_path, ml100k, tiny_config):
  # A malformed u.data (the other files real): the run fails before it creates its workdir or a cache folder.
  src = pathlib.Path(ml100k.meta["data_dir"]) / "ml-100k"
  bad = tmp_path / "data" / "ml-100k"
  bad.mkdir(parents=True)
  for f in ("u.item", "u.user"):
    shutil.copy(src / f, bad / f)
  (bad / "u.data").write_text("196\t242\t3\t881250949\n186\tnot-an-item\t3\t891717742\n")
  cfg = tiny_config
  cfg.dataset.data_dir = str(tmp_path / "data")
  with pytest.raises(DataError, match="u.data"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()
  assert not (tmp_path / "data" / ".recjax_cache").exists()


def test_a_config_error_leaves_no_run_directory(tmp_path, ml100k, tiny_config):
  cfg = tiny_config
  cfg.model.num_heads = 3  # does not divide dim 8: rejected when the model is built
  with pytest.raises(ConfigError, match="num_heads"):
    train_and_evaluate(cfg, tmp_path / "run", data=ml100k, progress=False)
  assert not (tmp_path / "run").exists()
