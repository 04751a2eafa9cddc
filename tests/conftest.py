"""Fixtures shared by every test directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _run_json_on_cpu_devices(argv: list[str], devices: int) -> dict:
  """Runs `python *argv` with `devices` simulated XLA CPU devices; returns its last stdout line as JSON."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  res = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def run_json_on_cpu_devices():
  """`run(argv, devices) -> dict`: a child Python process on simulated CPU devices (multi-device tests need
  the XLA flag before jax starts), its last stdout line parsed as JSON."""
  return _run_json_on_cpu_devices
