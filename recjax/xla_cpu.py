"""XLA:CPU compiler options for training on x86 hosts [our choice; measured in experiments/bench].

XLA:CPU's default library path for float32 matrix products ran the tall-skinny products of InterFormer
(`[102400, 384] x [384, 384]` and the like) at 180-250 GFLOP/s on a 2-core AVX-512 Xeon whose 2048³
reference matmul reaches about 420 GFLOP/s. XLA's oneDNN dot fusions (`--xla_cpu_use_onednn`, fusion type
`dot`) run the same products at 380-430 GFLOP/s; `interformer.py:medium` at batch 2048 went from 543 to
626 examples/s with no other change.

`use_onednn_dots()` adds those two options to the `XLA_FLAGS` environment variable. XLA reads it once,
when JAX creates its first backend, so the call must come before the first computation. It applies only
on x86-64 (oneDNN's CPU kernels target it) and is skipped when RECJAX_ONEDNN is 0, false, no, off or
empty, or when `XLA_FLAGS` already names either option (the user's setting wins).
"""

from __future__ import annotations

import logging
import os
import platform

from recjax import env

_ENV = "RECJAX_ONEDNN"
FLAGS = ("--xla_cpu_use_onednn=true", "--xla_cpu_experimental_onednn_fusion_type=dot")
log = logging.getLogger(__name__)


def _backends_started() -> bool:
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def use_onednn_dots() -> bool:
  """Appends `FLAGS` to `XLA_FLAGS` so XLA:CPU runs matrix products as oneDNN fusions.

  Logs one INFO line (logger `recjax.xla_cpu`) when the flags are added, and a WARNING when JAX's
  backends already exist (the flags would then have no effect, so nothing is changed).

  Returns:
    True if the flags are in effect for this process's backends (added now, or already in
    `XLA_FLAGS` before the first backend was created); False otherwise.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if any(f.split("=")[0] in current for f in FLAGS):
    return onednn_dots()
  if not env.switched_on(_ENV) or platform.machine().lower() not in ("x86_64", "amd64"):
    return False
  if _backends_started():
    log.warning("oneDNN dots not enabled: JAX's backends already exist (call use_onednn_dots() before "
                "the first computation)")
    return False
  os.environ["XLA_FLAGS"] = " ".join([current, *FLAGS]).strip()
  log.info("XLA:CPU: matrix products as oneDNN fusions (%s=0 turns this off)", _ENV)
  return True


def onednn_dots() -> bool:
  """Whether this process's XLA_FLAGS asks for oneDNN dot fusions (reported by the benches)."""
  current = os.environ.get("XLA_FLAGS", "")
  return all(f in current for f in FLAGS)
