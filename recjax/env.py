"""Environment switches shared by the package (our choice).

A switch is on unless its variable is set to 0, false, no, off or the empty string (any case); an unset
variable means on. Used by RECJAX_KEEP_FREED_MEMORY (`recjax.host_memory`), RECJAX_ONEDNN
(`recjax.xla_cpu`) and RECJAX_NATIVE (`recjax.rerank.native`).
"""

from __future__ import annotations

import os

__all__ = ["OFF_VALUES", "switched_on"]

OFF_VALUES = ("0", "false", "no", "off", "")


def switched_on(name: str) -> bool:
  """Whether the switch `name` is on: unset, or set to anything but 0/false/no/off/empty."""
  return os.environ.get(name, "1").strip().lower() not in OFF_VALUES
