"""Model registry: `build_model(schema, model_cfg)` picks the model class by `model_cfg.name`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from recjax.data.schema import Schema
from recjax.errors import ConfigError
from recjax.models.baselines import DIN, DNN, DCNv2, dcnv2_config, din_config, dnn_config
from recjax.models.interformer import InterFormer
from recjax.models.interformer import default_config as interformer_config

REGISTRY = {"interformer": InterFormer, "dnn": DNN, "dcnv2": DCNv2, "din": DIN}
DEFAULT_CONFIGS = {"interformer": interformer_config, "dnn": dnn_config, "dcnv2": dcnv2_config,
                   "din": din_config}


def build_model(schema: Schema, model_cfg: Any) -> nn.Module:
  """Builds the model named `model_cfg.name` for `schema`.

  Args:
    schema: the dataset's feature schema.
    model_cfg: a ConfigDict with `name` and the model's fields (see each model's `default_config()`).
  Returns:
    An unbound linen Module; call `init(rngs, batch, train=False)` / `apply(...)`.
  Raises:
    ConfigError: unknown model name, or an invalid knob value.
  """
  name = model_cfg.get("name") if hasattr(model_cfg, "get") else getattr(model_cfg, "name", None)
  if name not in REGISTRY:
    raise ConfigError(f"model.name={name!r} is not one of {sorted(REGISTRY)}")
  if name == "interformer":
    from recjax.models.interformer import validate_config
  else:
    from recjax.models.baselines import validate_config
  validate_config(model_cfg)  # here, not first at init: scripts fail before any data work
  return REGISTRY[name](schema=schema, config=model_cfg)


__all__ = ["DEFAULT_CONFIGS", "DIN", "DNN", "REGISTRY", "DCNv2", "InterFormer", "build_model"]
