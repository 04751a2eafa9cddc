"""`load_dataset(config.dataset)`: raw public files → validated, split, Batch-format numpy arrays.

The `config.dataset` fields every source understands (sources add their own; see each module's `DEFAULTS`):

- `name`: registry key in `recjax.data.sources.SOURCES` (e.g. "movielens").
- `data_dir`: "" or None = resolve (`$RECJAX_DATA_DIR`, then `~/.cache/recjax`; see `datadir`).
- `features`: names of features to keep (sparse, dense column or sequence names); empty = all.
- `use_cache`: read/write the preprocessed-array cache (`recjax.data.cache`); default True.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from recjax.data import cache as cache_lib
from recjax.data.datadir import resolve_data_dir
from recjax.data.schema import Schema
from recjax.data.sources import get_source
from recjax.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class DatasetSplits:
  """One dataset, split. Each split is a Batch-format dict (see `recjax.data.schema`) without `mask`.

  Attributes:
    name: dataset name (config `dataset.name`).
    schema: the features, after `dataset.features` selection.
    train / valid / test: {key: [N, ...] np.ndarray}.
    meta: source-specific facts (counts, preprocessing notes) plus "cache": "hit" | "miss" | "off" and
      "cache_path".
  """
  name: str
  schema: Schema
  train: dict[str, np.ndarray]
  valid: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  meta: dict

  @property
  def train_positive_rate(self) -> float:
    """Mean of the train labels, the NE base rate."""
    return float(np.mean(self.train["label"]))

  def split(self, name: str) -> dict[str, np.ndarray]:
    if name not in SPLITS:
      raise KeyError(f"unknown split {name!r}; known: {list(SPLITS)}")
    return getattr(self, name)


def _field(cfg, key, default=None):
  try:
    v = cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)
  except (KeyError, AttributeError):
    return default
  return default if v is None else v


def load_dataset(dataset_cfg) -> DatasetSplits:
  """Loads `dataset_cfg.name` from the data directory, through the cache.

  Args:
    dataset_cfg: `config.dataset` (ml_collections.ConfigDict or dict); fields in the module docstring.

  Returns:
    DatasetSplits with every split checked by `schema.validate`.

  Raises:
    ConfigError: unknown dataset name (lists the known ones), unknown feature name in `features` (lists the
      known ones), or a bad source-specific value.
    DataError: missing files (names them, the directory and the download URL), malformed rows (file, line,
      field), ids out of range or non-finite dense values (split, field, row).
  """
  name = _field(dataset_cfg, "name")
  if not name:
    raise ConfigError("dataset.name: not set")
  source = get_source(name)
  data_dir = resolve_data_dir(_field(dataset_cfg, "data_dir"))
  features = _field(dataset_cfg, "features", ())
  if isinstance(features, str):
    features = [f for f in features.split(",") if f]
  features = list(features)
  files = source.prepare(dataset_cfg, data_dir)
  options = source.preprocess_options(dataset_cfg)

  status, path = "off", None
  loaded = None
  if _field(dataset_cfg, "use_cache", True):
    key = cache_lib.cache_key(files, {"source": name, **options})
    path = cache_lib.cache_path(cache_lib.cache_dir(data_dir, create=False), name, key)
    loaded = cache_lib.load(path, key)
    status = "hit" if loaded is not None else "miss"
  if loaded is not None:
    splits, info = loaded
    schema, meta = Schema.from_dict(info["schema"]), info["meta"]
  else:
    schema, splits, meta = source.build(dataset_cfg, files)
    if path is not None:
      try:
        cache_lib.save(path, key, splits, {"schema": schema.to_dict(), "meta": meta})
      except OSError as e:
        log.warning("could not write dataset cache %s: %s", path, e)

  full_schema = schema
  out = {}
  for s in SPLITS:
    full_schema.validate(splits[s], where=f"{name} {s} split")
    schema, out[s] = full_schema.select(features, splits[s])
  meta = {**meta, "cache": status, "cache_path": str(path) if path else None, "data_dir": str(data_dir)}
  return DatasetSplits(name=name, schema=schema, train=out["train"], valid=out["valid"], test=out["test"],
                       meta=meta)
