"""Train and evaluate a recjax model.

  python experiments/run.py --config experiments/configs/interformer.py:movielens --workdir runs/ml100k

Override any config field with `--config.<field>=<value>`, e.g. `--config.train.lr=3e-3`. Re-running with
the same `--workdir` resumes from its last checkpoint. Bad input (missing or malformed data, an unknown or
ill-typed config field, a bad value) is reported as one paragraph and exit status 2.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from recjax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, `path.py:variant`.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics, results.json).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar; --noprogress hides it (logs, CI).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = cli.load_config(_CONFIG)  # config_flags loads the file lazily; fail here, not mid-run
  import jax
  if config.get("distributed", False):
    jax.distributed.initialize()
  from recjax.train.loop import train_and_evaluate
  res = train_and_evaluate(config, _WORKDIR.value, progress=_PROGRESS.value)
  t, v = res["test"], res["valid"] or {}
  eps = res["train_examples_per_sec"]
  print(f"{res['model']} on {res['dataset']}: best step {res['best_step']} | valid AUC {v.get('auc', float('nan')):.4f} "
        f"| test AUC {t['auc']:.4f} gAUC {t['gauc']:.4f} LogLoss {t['logloss']:.4f} NE {t['ne']:.4f} "
        f"| {f'{eps:.0f}' if eps else 'n/a'} train ex/s | {_WORKDIR.value}/results.json")


if __name__ == "__main__":
  cli.run(main, "experiments/run.py", " --workdir DIR")
