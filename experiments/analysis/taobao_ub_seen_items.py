"""Taobao UserBehavior: validation AUC of finished runs on all rows, and split by whether the row's target
item ever appears as a training target.

The negative sampler draws items the user never touched, while 21 % of the validation positives are items
that never appear as a training target (6 % of the negatives). A model can score "unseen item" as positive
without learning anything about users. This script measures how much of each model's validation AUC comes
from that, by restoring the best parameters from the run directories of `experiments/results_table.py`.

  RECJAX_DATA_DIR=../shared/data python experiments/analysis/taobao_ub_seen_items.py \
      dnn_taobao_ub_s0 dnn_taobao_ub_s1 dcnv2_taobao_ub_s0 din_taobao_ub_s0 interformer_taobao_ub_s0

Prints one JSON line per run (the latest checkpoint's best parameters; `best_step` says which step), plus a
first line for the "unseen item" indicator used alone as a score.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_table import load_config

from recjax import sharding
from recjax.data import pipeline
from recjax.data.dataset import load_dataset
from recjax.metrics import auc
from recjax.models import build_model
from recjax.train.checkpoint import Checkpointer, abstract_with_shardings
from recjax.train.loop import Evaluator, build_state


def main(run_names: list[str], runs_dir: pathlib.Path = ROOT / "results" / "ctr" / "runs") -> None:
  data = None
  for name in run_names:
    model_name, _, _ = name.partition("_taobao_ub_s")
    cfg = load_config(model_name, "taobao_ub")
    if data is None:
      data = load_dataset(cfg.dataset)
      col = [f.name for f in data.schema.sparse].index("item_id")
      train_items = np.unique(data.train["sparse"][:, col])
      valid = data.valid
      seen = np.isin(valid["sparse"][:, col], train_items)
      y = valid["label"]
      print(json.dumps({"run": "unseen-item indicator alone", "auc_all": round(auc(y, (~seen).astype(float)), 4),
                        "seen_frac_positives": round(float(seen[y == 1].mean()), 4),
                        "seen_frac_negatives": round(float(seen[y == 0].mean()), 4)}))
    model = build_model(data.schema, cfg.model)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.model)
    state, sh = build_state(model, cfg, mesh, next(iter(pipeline.eval_batches(data.train, 64))))
    ckpt = Checkpointer(runs_dir / name, keep=2)
    step = ckpt.latest_step()
    if step is None:
      raise SystemExit(f"error: no checkpoint in {runs_dir / name}")
    _, best, meta = ckpt.restore(step, abstract_with_shardings(state, sh),
                                 abstract_with_shardings(state.params, sh.params))
    ckpt.close()
    logits = Evaluator(model, mesh, sh.params, cfg, data.train_positive_rate).logits(best, valid)
    print(json.dumps({"run": name, "checkpoint_step": step, "best_step": meta["best_step"],
                      "auc_all": round(auc(y, logits), 4),
                      "auc_seen_items": round(auc(y[seen], logits[seen]), 4),
                      "auc_unseen_items": round(auc(y[~seen], logits[~seen]), 4),
                      "rows_seen": int(seen.sum()), "rows_unseen": int((~seen).sum())}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
