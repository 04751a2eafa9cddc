"""Train models × dataset presets × seeds and write the results CSV and a markdown table.

  python experiments/results_table.py --models interformer,dnn,dcnv2,din \
      --presets movielens,taobao_ub,amazon_beauty,taobao_ad --seeds 0,1,2 --out experiments/results/ctr

Each (model, preset, seed) is one `train_and_evaluate` run in `<out>/runs/<model>_<preset>_s<seed>/`, so
re-running the command resumes unfinished runs and reuses finished ones (their `results.json`);
`--collect_only` trains nothing and tabulates whatever has finished. Writes
`<out>.csv` (one row per run) and `<out>.md` (test AUC / gAUC / LogLoss as mean ± std over seeds, plus
the training throughput). Any config field can be overridden for every run with `--set field=value`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import pathlib

import numpy as np
from absl import app, flags

from recjax import cli

_MODELS = flags.DEFINE_list("models", ["interformer", "dnn", "dcnv2", "din"], "Config files under experiments/configs.")
_PRESETS = flags.DEFINE_list("presets", ["movielens"], "Variants (dataset presets) of each config.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_OUT = flags.DEFINE_string("out", "experiments/results/ctr", "Output prefix (<out>.csv, <out>.md, <out>/runs/).")
_COLLECT = flags.DEFINE_bool("collect_only", False, "Train nothing: tabulate the finished runs, list the missing.")
_SET = flags.DEFINE_multi_string("set", [], "field=value overrides applied to every run (e.g. train.max_steps=400).")

ROOT = pathlib.Path(__file__).resolve().parent
METRICS = ("auc", "gauc", "logloss", "ne")


def load_config(model: str, preset: str):
  spec = importlib.util.spec_from_file_location(f"cfg_{model}", ROOT / "configs" / f"{model}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(preset)


def apply_override(cfg, assignment: str) -> None:
  key, value = assignment.split("=", 1)
  *parents, leaf = key.split(".")
  node = cfg
  for p in parents:
    node = node[p]
  old = node[leaf]
  node[leaf] = type(old)(json.loads(value)) if not isinstance(old, str) else value


def run_one(model: str, preset: str, seed: int, out: pathlib.Path) -> dict:
  from recjax.train.loop import train_and_evaluate
  workdir = out / "runs" / f"{model}_{preset}_s{seed}"
  done = workdir / "results.json"
  if done.exists():
    return json.loads(done.read_text())
  if _COLLECT.value:
    return None
  cfg = load_config(model, preset)
  cfg.seed = seed
  for a in _SET.value:
    apply_override(cfg, a)
  return train_and_evaluate(cfg, workdir, progress=True)


def main(argv):
  del argv
  with cli.exit_on_bad_input():
    cli.setup_host()  # as experiments/run.py: preferred allocator or kept heap, oneDNN matrix products
  out = pathlib.Path(_OUT.value)
  rows, missing = [], {}
  for preset in _PRESETS.value:
    for model in _MODELS.value:
      for seed in (int(s) for s in _SEEDS.value):
        r = run_one(model, preset, seed, out)
        if r is None:
          missing.setdefault(f"{model} {preset}", []).append(seed)
          continue
        rows.append({"model": model, "preset": preset, "dataset": r["dataset"], "seed": seed,
                     "best_step": r["best_step"], "num_params": r.get("num_params"),
                     "train_examples_per_sec": r["train_examples_per_sec"],
                     **{f"valid_{k}": r["valid"][k] for k in METRICS},
                     **{f"test_{k}": r["test"][k] for k in METRICS}})
        print(json.dumps(rows[-1]), flush=True)
  for name, seeds in missing.items():
    print(f"not finished: {name} seeds {seeds}", flush=True)
  if not rows:
    raise SystemExit(f"no finished runs under {out / 'runs'}; nothing to tabulate")
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(f"{out}.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  lines = ["| dataset | model | seeds | test AUC | test gAUC | test LogLoss | train ex/s |", "|---|---|---|---|---|---|---|"]
  for preset in _PRESETS.value:
    for model in _MODELS.value:
      rs = [r for r in rows if r["preset"] == preset and r["model"] == model]
      if not rs:
        continue

      def ms(key, rs=rs):
        v = np.array([np.nan if r[key] is None else r[key] for r in rs], float)
        if np.isnan(v).all():
          return "—"                                   # undefined, e.g. gAUC when no user has both labels
        return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f} (1 seed)"
      eps = [r["train_examples_per_sec"] for r in rs if r["train_examples_per_sec"]]
      eps = f"{np.mean(eps):,.0f}" if eps else "—"     # none when a run only resumed to evaluate
      lines.append(f"| {preset} | {model} | {len(rs)} | {ms('test_auc')} | {ms('test_gauc')} | "
                   f"{ms('test_logloss')} | {eps} |")
  pathlib.Path(f"{out}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
