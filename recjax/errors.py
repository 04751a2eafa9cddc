"""Exceptions for bad user input. `experiments/run.py` prints these as one paragraph, without a traceback."""


class RecjaxError(Exception):
  """Base class: an error the user can fix (bad file, bad config, bad value). The message says how."""


class DataError(RecjaxError, ValueError):
  """Bad or missing input data. The message names the file, row and field, and what was expected."""


class ConfigError(RecjaxError, ValueError):
  """An unknown or ill-typed config field, or a value outside its allowed range."""


class TrainingError(RecjaxError, RuntimeError):
  """Training cannot continue (e.g. a NaN/inf loss); the last good checkpoint is kept."""
