"""Checkpoint round trip, kill -9 resume equality, and NaN-loss handling."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import sharding
from recjax.errors import ConfigError, TrainingError
from recjax.train.checkpoint import Checkpointer, abstract_with_shardings
from recjax.train.loop import train_and_evaluate

from conftest import ROOT, ml100k_available


def test_checkpoint_round_trip(tmp_path):
  mesh = sharding.make_mesh()
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = {"w": jnp.arange(12.0).reshape(3, 4), "step": jnp.array(7, jnp.int32)}
  best = {"w": jnp.full((3, 4), -1.5)}
  meta = {"best_step": 5, "data_iter": {"next_index": 123}, "best_valid": {"auc": 0.75}}
  ck = Checkpointer(tmp_path, keep=2)
  for step in (1, 2, 3):
    ck.save(step, jax.tree.map(lambda x: x + step, state), best, {**meta, "s": step})
  assert ck.latest_step() == 3
  assert sorted(int(p.name) for p in ck.directory.iterdir() if p.name.isdigit()) == [2, 3]  # keep=2
  shard = jax.tree.map(lambda _: rep, state)
  s, b, m = ck.restore(3, abstract_with_shardings(state, shard), abstract_with_shardings(best, {"w": rep}))
  np.testing.assert_array_equal(s["w"], np.arange(12.0).reshape(3, 4) + 3)
  assert int(s["step"]) == 10
  np.testing.assert_array_equal(b["w"], np.full((3, 4), -1.5))
  assert m == {**meta, "s": 3}
  ck.close()


def _run_cmd(workdir: pathlib.Path, *overrides: str) -> list[str]:
  return [sys.executable, str(ROOT / "experiments" / "run.py"),
          "--config", str(ROOT / "experiments" / "configs" / "interformer.py") + ":tiny",
          "--workdir", str(workdir), "--noprogress", *overrides]


@pytest.mark.slow
@pytest.mark.skipif(not ml100k_available(), reason="ml-100k not in RECJAX_DATA_DIR")
def test_kill_9_resume_matches_uninterrupted(tmp_path):
  overrides = ("--config.train.max_steps=12", "--config.train.eval_every=3", "--config.train.patience=100")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  full, killed = tmp_path / "full", tmp_path / "killed"
  subprocess.run(_run_cmd(full, *overrides), check=True, env=env, capture_output=True)

  proc = subprocess.Popen(_run_cmd(killed, *overrides), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = killed / "checkpoints" / "3"
  deadline = time.time() + 600
  while not first.is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps_done = [int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps_done and max(steps_done) < 12, f"the run was not interrupted mid-way: {steps_done}"
  assert not (killed / "results.json").exists()

  subprocess.run(_run_cmd(killed, *overrides), check=True, env=env, capture_output=True)
  a = json.loads((full / "results.json").read_text())
  b = json.loads((killed / "results.json").read_text())
  assert a["best_step"] == b["best_step"]
  for split in ("valid", "test"):
    for k in ("auc", "gauc", "logloss", "ne"):
      assert b[split][k] == pytest.approx(a[split][k], abs=1e-6), (split, k)
  # metrics.jsonl of the resumed run has no duplicated steps from the killed attempt.
  recs = [json.loads(ln) for ln in (killed / "metrics.jsonl").read_text().splitlines()]
  keys = [(r["step"], r["split"]) for r in recs]
  assert len(keys) == len(set(keys))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, ml100k, tiny_config):
  cfg = tiny_config
  cfg.train.max_steps, cfg.train.eval_every = 3, 3
  train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  ck_before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())

  poisoned = ml100k.train.copy()
  poisoned["label"] = np.full_like(ml100k.train["label"], np.nan)
  bad = type(ml100k)(name=ml100k.name, schema=ml100k.schema, train=poisoned, valid=ml100k.valid,
                     test=ml100k.test, meta=ml100k.meta)
  cfg.train.max_steps = 9
  with pytest.raises(TrainingError, match=r"nan at step 4.*last good checkpoint \(step 3\)"):
    train_and_evaluate(cfg, tmp_path, data=bad, progress=False)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ck_before
  # The kept checkpoint still resumes and finishes on good data.
  cfg.train.max_steps = 3
  res = train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  assert res["final_step"] == 3 and np.isfinite(res["test"]["auc"])


def test_resume_with_a_different_config_is_refused(tmp_path, ml100k, tiny_config):
  cfg = tiny_config
  cfg.train.max_steps, cfg.train.eval_every = 3, 3
  train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  cfg.train.lr = 0.5
  with pytest.raises(ConfigError, match=r"train\.lr: 0\.001 in the checkpoint, 0\.5 now"):
    train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  cfg.train.lr = 1e-3
  cfg.train.max_steps = 4   # how long to train may change: the run resumes and extends
  assert train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)["final_step"] == 4


def test_rerunning_a_finished_run_changes_nothing(tmp_path, ml100k, tiny_config):
  cfg = tiny_config
  cfg.train.max_steps, cfg.train.eval_every = 3, 3
  first = train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  log_before = (tmp_path / "metrics.jsonl").read_text()
  results_before = (tmp_path / "results.json").read_text()
  again = train_and_evaluate(cfg, tmp_path, data=ml100k, progress=False)
  assert (tmp_path / "metrics.jsonl").read_text() == log_before   # no second "test" line
  assert (tmp_path / "results.json").read_text() == results_before  # throughput not overwritten by null
  assert again["test"] == pytest.approx(first["test"], nan_ok=True)
  assert sum('"split": "test"' in line for line in log_before.splitlines()) == 1


class _SavedMeta:
  """Stands in for a Checkpointer whose step-3 meta holds `run_config`."""
  directory = pathlib.Path("/runs/x/checkpoints")

  def __init__(self, run_config):
    self.run_config = run_config

  def read_meta(self, step):
    return {"run_config": self.run_config}


def test_a_field_added_after_the_checkpoint_resumes_only_at_its_old_behaviour():
  import ml_collections

  from recjax.train.loop import _check_resumable, _run_identity
  old = ml_collections.ConfigDict({"dataset": {"name": "taobao_userbehavior"}, "train": {"lr": 1e-3}})
  saved = _run_identity(old)            # written before `dataset.negatives` existed
  now = ml_collections.ConfigDict({"dataset": {"name": "taobao_userbehavior", "negatives": "uniform"},
                                   "train": {"lr": 1e-3}})
  _check_resumable(_SavedMeta(saved), 3, now)           # "uniform" is what the old code drew: resumes
  now.dataset.negatives = "split_popularity"
  with pytest.raises(ConfigError, match=r"dataset\.negatives: None in the checkpoint, 'split_popularity' now"):
    _check_resumable(_SavedMeta(saved), 3, now)
  now.dataset.negatives = "uniform"
  now.train.lr = 0.5                                     # other fields are still compared
  with pytest.raises(ConfigError, match=r"train\.lr"):
    _check_resumable(_SavedMeta(saved), 3, now)
