"""Taobao UserBehavior: how much of a model's validation AUC comes from item identity, and why it can fall
below chance.

Every pair of rows (a positive and its sampled negative) shares the user and the histories, so only the
target item (and, for 3 % of pairs, its category) tells them apart. This script measures two item-level
signals on the validation split, with no model:
- **in-history**: the positive's item is in the user's history; a negative never is (the sampler excludes
  every item the user touches).
- **item prior**: how often the item was a training positive (`train_pos_count`), and its training positive
  rate (0.5 for items absent from training). A model that memorises item identity learns these.

Then, for each finished run of `experiments/results_table.py`, it restores the best parameters and reports
validation AUC overall, on rows whose target item is / is not a training target, and the share of pairs
whose positive outscores its negative ("pair accuracy"), split by the two signals.

  RECJAX_DATA_DIR=../shared/data python experiments/analysis/taobao_ub_item_prior.py \\
      --runs dnn_taobao_ub_s0,interformer_taobao_ub_s0            # runs under experiments/results/ctr/runs
  RECJAX_DATA_DIR=../shared/data python experiments/analysis/taobao_ub_item_prior.py \\
      --negatives split_popularity --runs_dir experiments/results/ctr_ub_split_pop/runs --runs ...

Prints one JSON line for the data (`"run": "data"`), then one per run.
"""

from __future__ import annotations

import argparse
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


def item_signals(data) -> dict[str, np.ndarray]:
  """Per validation row: target item, in-history flag, and the item's training positive count / rate."""
  col = [f.name for f in data.schema.sparse].index("item_id")
  n = data.schema.sparse[col].vocab_size
  tr_item, tr_y = data.train["sparse"][:, col], data.train["label"]
  n_pos = np.bincount(tr_item[tr_y == 1], minlength=n)
  n_neg = np.bincount(tr_item[tr_y == 0], minlength=n)
  v = data.valid
  item = v["sparse"][:, col]
  seen = n_pos[item] + n_neg[item]
  return {"label": v["label"], "item": item, "in_history": (v["seq/hist_item"] == item[:, None]).any(1),
          "train_pos_count": n_pos[item].astype(float), "train_target": seen > 0,
          "train_pos_rate": np.where(seen > 0, n_pos[item] / np.maximum(seen, 1), 0.5)}


def pair_accuracy(logits: np.ndarray, pos_rows: np.ndarray) -> float:
  """Share of pairs (rows 2i, 2i+1 = positive, negative) whose positive scores higher, over `pos_rows`."""
  return round(float(np.mean((logits[0::2] > logits[1::2])[pos_rows])), 4) if pos_rows.any() else float("nan")


def data_line(sig: dict[str, np.ndarray]) -> dict:
  y, ih = sig["label"], sig["in_history"]
  pos, neg = y == 1, y == 0
  return {"run": "data", "rows": int(y.size),
          "auc_in_history": round(auc(y, ih.astype(float)), 4),
          "auc_train_pos_count": round(auc(y, sig["train_pos_count"]), 4),
          "auc_train_pos_rate": round(auc(y, sig["train_pos_rate"]), 4),
          "frac_in_history": {"pos": round(float(ih[pos].mean()), 3), "neg": round(float(ih[neg].mean()), 3)},
          "frac_train_positive_item": {"pos": round(float((sig["train_pos_count"][pos] > 0).mean()), 3),
                                       "neg": round(float((sig["train_pos_count"][neg] > 0).mean()), 3)}}


def run_line(name: str, runs_dir: pathlib.Path, cfg, data, sig) -> dict:
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
  lg = Evaluator(model, mesh, sh.params, cfg, data.train_positive_rate).logits(best, data.valid)
  y, seen = sig["label"], sig["train_target"]
  ih_pair = sig["in_history"][0::2]
  prior_pos = sig["train_pos_count"][0::2] > 0
  prior_neg = sig["train_pos_count"][1::2] > 0
  return {"run": name, "checkpoint_step": step, "best_step": meta["best_step"],
          "auc_all": round(auc(y, lg), 4),
          "auc_train_target_items": round(auc(y[seen], lg[seen]), 4),
          "auc_new_items": round(auc(y[~seen], lg[~seen]), 4),
          "pair_acc": pair_accuracy(lg, np.ones_like(ih_pair)),
          "pair_acc_pos_in_history": pair_accuracy(lg, ih_pair),
          "pair_acc_pos_not_in_history": pair_accuracy(lg, ~ih_pair),
          "pair_acc_only_neg_item_was_train_positive": pair_accuracy(lg, ~prior_pos & prior_neg),
          "pair_acc_only_pos_item_was_train_positive": pair_accuracy(lg, prior_pos & ~prior_neg)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", default="", help="comma-separated run names <model>_taobao_ub_s<seed>")
  p.add_argument("--runs_dir", default=str(ROOT / "results" / "ctr" / "runs"))
  p.add_argument("--negatives", default="uniform", help="dataset.negatives the runs were trained with")
  a = p.parse_args(argv)
  cfg = load_config("dnn", "taobao_ub")
  cfg.dataset.negatives = a.negatives
  data = load_dataset(cfg.dataset)
  sig = item_signals(data)
  print(json.dumps({**data_line(sig), "negatives": a.negatives}), flush=True)
  for name in filter(None, a.runs.split(",")):
    cfg = load_config(name.partition("_taobao_ub_s")[0], "taobao_ub")
    cfg.dataset.negatives = a.negatives
    print(json.dumps(run_line(name, pathlib.Path(a.runs_dir), cfg, data, sig)), flush=True)


if __name__ == "__main__":
  main()
