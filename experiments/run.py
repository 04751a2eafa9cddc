"""Train and evaluate a recjax model.

  python experiments/run.py --config experiments/configs/interformer.py:movielens --workdir runs/ml100k

Override any config field with `--config.<field>=<value>`, e.g. `--config.train.lr=3e-3`. Re-running with
the same `--workdir` resumes from its last checkpoint. Bad input (missing or malformed data, an unknown or
ill-typed config field, a bad value) is reported as one paragraph and exit status 2.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, `path.py:variant`.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics, results.json).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar; --noprogress hides it (logs, CI).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax/grain log every save at INFO
  logging.getLogger("recjax").setLevel(logging.INFO)
  try:
    config = _CONFIG.value
    config.keys()  # config_flags loads the file lazily; fail here, not mid-run
  except OSError:
    path = flags.FLAGS["config"].serialize().split("=", 1)[-1]
    print(f"error: cannot load the config file {path!r} (it must exist and define get_config(variant)); "
          f"the configs are experiments/configs/<model>.py, e.g. interformer.py:movielens", file=sys.stderr)
    sys.exit(2)
  import jax
  if config.get("distributed", False):
    jax.distributed.initialize()
  from recjax.errors import RecjaxError
  from recjax.train.loop import train_and_evaluate
  try:
    res = train_and_evaluate(config, _WORKDIR.value, progress=_PROGRESS.value)
  except RecjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  t, v = res["test"], res["valid"] or {}
  eps = res["train_examples_per_sec"]
  print(f"{res['model']} on {res['dataset']}: best step {res['best_step']} | valid AUC {v.get('auc', float('nan')):.4f} "
        f"| test AUC {t['auc']:.4f} gAUC {t['gauc']:.4f} LogLoss {t['logloss']:.4f} NE {t['ne']:.4f} "
        f"| {f'{eps:.0f}' if eps else 'n/a'} train ex/s | {_WORKDIR.value}/results.json")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with unknown or ill-typed `--config.*` fields reported in one paragraph."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError, ImportError) as e:
    msg = str(e.args[0] if e.args and isinstance(e.args[0], str) else e)
    if "Traceback" in msg:  # config_flags wraps errors raised while loading the config file
      msg = msg.rsplit("Error: ", 1)[-1]
    msg = msg.replace("\\n", " ").replace("\n", " ").replace("\\", "").replace("'", "").strip().strip('"')
    msg = msg.rstrip(".")
    kind = "unknown config field" if isinstance(e, (AttributeError, KeyError)) else "bad flag value"
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    given = f" Config overrides given: {overrides}." if overrides else ""
    end = "" if msg.endswith("?") else "."
    print(f"error: {kind}: {msg}{end}{given} Usage: python experiments/run.py "
          f"--config experiments/configs/<model>.py:<variant> --workdir DIR [--config.<field>=<value> ...]",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
