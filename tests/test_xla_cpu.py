"""recjax.xla_cpu: oneDNN dot fusions switched on through XLA_FLAGS before JAX's first backend.

Each case runs in a child process (XLA reads its flags once per process) and reports whether a compiled
matrix product is a oneDNN fusion, and that its value equals numpy's.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

_CHILD = r"""
import json, os, sys
import numpy as np
import jax, jax.numpy as jnp
from recjax import xla_cpu
if sys.argv[1] == "late":
  jnp.ones(2).block_until_ready()  # the backend exists before the call
applied = xla_cpu.use_onednn_dots()
a = np.random.default_rng(0).normal(size=(64, 48)).astype(np.float32)
b = np.random.default_rng(1).normal(size=(48, 32)).astype(np.float32)
f = jax.jit(lambda a, b: a @ b)
hlo = f.lower(a, b).compile().as_text()
err = float(np.abs(np.asarray(f(a, b)) - a.astype(np.float64) @ b).max())
print(json.dumps({"applied": applied, "reported": xla_cpu.onednn_dots(), "onednn": "onednn" in hlo,
                  "err": err, "flags": os.environ.get("XLA_FLAGS", "")}))
"""

_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _child(mode: str, **env) -> dict:
  base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "RECJAX_ONEDNN")}
  res = subprocess.run([sys.executable, "-c", _CHILD, mode], env={**base, "JAX_PLATFORMS": "cpu", **env},
                       capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return {**json.loads(res.stdout.strip().splitlines()[-1]), "stderr": res.stderr}


@pytest.mark.skipif(not _X86, reason="oneDNN dots are switched on only on x86-64")
def test_flags_turn_the_product_into_a_onednn_fusion_with_the_same_value():
  got = _child("early")
  assert got["applied"] and got["reported"] and got["onednn"]
  assert got["err"] < 1e-4


def test_switch_off_leaves_xla_defaults():
  got = _child("early", RECJAX_ONEDNN="0")
  assert not got["applied"] and not got["reported"] and not got["onednn"]
  assert got["flags"] == "" and got["err"] < 1e-4


def test_users_own_xla_flag_wins():
  got = _child("early", XLA_FLAGS="--xla_cpu_use_onednn=false")
  assert not got["applied"] and not got["onednn"]
  assert got["flags"] == "--xla_cpu_use_onednn=false"


def test_too_late_call_changes_nothing_and_says_so():
  got = _child("late")
  assert not got["applied"] and not got["onednn"] and got["flags"] == ""
  assert "backends already exist" in got["stderr"]
