"""The same train steps on 1 device and on 8 simulated CPU devices give the same loss."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import ml100k_available

HERE = pathlib.Path(__file__).resolve().parent


def run_meshes(shapes: str) -> dict:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, str(HERE / "multidevice_script.py"), str(HERE), shapes],
                       env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not ml100k_available(), reason="ml-100k not in RECJAX_DATA_DIR")
def test_one_vs_eight_devices_same_loss():
  res = run_meshes("1x1,8x1")
  one, eight = res["1x1"][0], res["8x1"][0]
  assert len(one) == 3 and all(np.isfinite(one))
  np.testing.assert_allclose(eight, one, rtol=2e-5, atol=2e-6)
  assert one[0] != one[-1]  # the steps really updated the params
