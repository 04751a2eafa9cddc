"""Registry of dataset sources: `dataset.name` -> module path.

Adding a dataset is one line here plus a module that defines:

- `DEFAULTS: dict` — its `config.dataset` fields and their defaults (documented in the module);
- `prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]` — makes sure the raw files exist
  (downloading via `recjax.data.datadir.ensure_files`) and returns them; their content hashes key the cache;
- `preprocess_options(cfg) -> dict` — the JSON-serialisable config values that change the arrays;
- `build(cfg, files) -> (Schema, {"train": arrays, "valid": arrays, "test": arrays}, meta: dict)` — parse
  and split, arrays in the `Batch` format of `recjax.data.schema` (without `mask`).

Modules are imported lazily, so a source's optional dependencies are only needed when it is used.
"""

from __future__ import annotations

import importlib
import types

from recjax.errors import ConfigError

SOURCES: dict[str, str] = {
    "movielens": "recjax.data.sources.movielens",
    "amazon": "recjax.data.sources.amazon",
    "taobao_userbehavior": "recjax.data.sources.taobao_userbehavior",
    "criteo": "recjax.data.sources.criteo",
    "taobao_ad": "recjax.data.sources.taobao_ad",
    "synthetic": "recjax.data.sources.synthetic",
}


def get_source(name: str) -> types.ModuleType:
  """The source module registered under `name`.

  Raises:
    ConfigError: if `name` is not registered; the message lists the known names.
  """
  if name not in SOURCES:
    raise ConfigError(f"dataset.name: unknown dataset {name!r}; known datasets: {sorted(SOURCES)}")
  return importlib.import_module(SOURCES[name])
