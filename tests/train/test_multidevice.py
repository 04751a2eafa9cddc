"""Sharding on 8 simulated CPU devices: the same train steps on meshes (data, model) = (1,1), (8,1), (4,2)
and (2,4) give the same loss; embedding tables shrink per device by the model-axis size; a checkpoint
written on mesh (4,2) restores onto (2,4) and onto one device with identical values."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from conftest import ml100k_available

HERE = pathlib.Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not ml100k_available(), reason="ml-100k not in RECJAX_DATA_DIR")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory, run_json_on_cpu_devices):
  workdir = tmp_path_factory.mktemp("mesh")
  return run_json_on_cpu_devices([str(HERE / "multidevice_script.py"), str(HERE), str(workdir),
                                  "4x2,1x1,8x1,2x4"], devices=8)


def test_same_loss_on_every_mesh(meshes):
  one = meshes["1x1"]["losses"]
  assert len(one) == 3 and all(np.isfinite(one)) and one[0] != one[-1]
  for shape in ("8x1", "4x2", "2x4"):
    np.testing.assert_allclose(meshes[shape]["losses"], one, rtol=2e-5, atol=2e-6, err_msg=shape)


def test_table_bytes_per_device_shrink_by_model_axis(meshes):
  full = meshes["1x1"]["table_bytes"]
  assert meshes["8x1"]["table_bytes"] == full          # data parallel: tables replicated
  assert meshes["4x2"]["table_bytes"] == full // 2
  assert meshes["2x4"]["table_bytes"] == full // 4


def test_checkpoint_from_4x2_restores_on_2x4_and_one_device(meshes):
  for shape in ("2x4", "1x1", "8x1"):
    assert meshes[shape]["restored_identical"], shape
    assert meshes[shape]["restored_sharding_ok"], shape
