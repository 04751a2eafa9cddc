"""Command-line plumbing shared by `experiments/run.py` and the bench/analysis scripts: absl flag parsing
that reports a bad `--config.*` override as one paragraph, quiet logging, and one-line errors for bad input.

Every script exits with status 2 and a message naming the file, row or field instead of a traceback when
the input is bad (a `RecjaxError`, an unknown or ill-typed config field, a missing config file).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

from absl import app, flags
from absl import logging as absl_logging

from recjax import host_memory, xla_cpu


def flags_parser(script: str, extra: str = "") -> Callable[[list[str]], list[str]]:
  """An `app.run(..., flags_parser=...)` for `script`: unknown or ill-typed `--config.*` fields are
  reported as `error: <kind>: <message>` plus a usage line, exit status 2."""
  usage = (f"Usage: python {script} --config experiments/configs/<model>.py:<variant>{extra} "
           f"[--config.<field>=<value> ...]")

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError, ImportError) as e:
      msg = str(e.args[0] if e.args and isinstance(e.args[0], str) else e)
      if "Traceback" in msg:  # config_flags wraps errors raised while loading the config file
        msg = msg.rsplit("Error: ", 1)[-1]
      msg = msg.replace("\\n", " ").replace("\n", " ").replace("\\", "").replace("'", "").strip().strip('"')
      msg = msg.rstrip(".")
      if isinstance(e, (AttributeError, KeyError)):
        kind = "unknown config field"
        msg = msg.replace(" Did you mean", ". Did you mean")
      else:
        kind = "bad flag value"
      overrides = [a for a in argv[1:] if a.startswith("--config.")]
      given = f" Config overrides given: {overrides}." if overrides else ""
      end = "" if msg.endswith("?") else "."
      print(f"error: {kind}: {msg}{end}{given} {usage}", file=sys.stderr)
      sys.exit(2)

  return parse


def quiet_logs() -> None:
  """absl at WARNING (orbax/grain/jax backends log at INFO), recjax's own logger at INFO."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("recjax").setLevel(logging.INFO)


def load_config(config_flag) -> object:
  """The value of a `config_flags.DEFINE_config_file` flag, loaded now (it is lazy) with a one-line error
  and exit status 2 if the file cannot be loaded."""
  try:
    config = config_flag.value
    config.keys()
    return config
  except OSError:
    path = flags.FLAGS[config_flag.name].serialize().split("=", 1)[-1]
    print(f"error: cannot load the config file {path!r} (it must exist and define get_config(variant)); "
          f"the configs are experiments/configs/<model>.py, e.g. interformer.py:movielens", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def exit_on_bad_input() -> Iterator[None]:
  """Turns a `RecjaxError` (bad data, bad config value) into `error: <message>` and exit status 2."""
  from recjax.errors import RecjaxError
  try:
    yield
  except RecjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def setup_host() -> None:
  """The CPU-host settings of every script, before the first computation: freed memory is kept for the
  next step (`recjax.host_memory`: the script restarts with jemalloc or tcmalloc preloaded when the host
  has one, else glibc keeps its heap; RECJAX_KEEP_FREED_MEMORY=0 opts out) and XLA:CPU runs matrix products
  as oneDNN fusions on x86-64 (`recjax.xla_cpu`; RECJAX_ONEDNN=0 opts out). Only for scripts: the restart
  replaces the calling process.

  Raises:
    ConfigError: RECJAX_ALLOCATOR names a missing file.
  """
  host_memory.use_preferred_allocator()
  host_memory.keep_freed_memory()
  xla_cpu.use_onednn_dots()


def run(main: Callable[[list[str]], None], script: str, extra: str = "") -> None:
  """`app.run(main)` with `flags_parser(script, extra)`, quiet logs, `setup_host()`, and
  `exit_on_bad_input` around main."""
  def wrapped(argv: list[str]) -> None:
    quiet_logs()
    with exit_on_bad_input():
      setup_host()
      main(argv)
  app.run(wrapped, flags_parser=flags_parser(script, extra))
