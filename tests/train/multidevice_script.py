"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: losses of the same train steps on
several (data, model) meshes, printed as one JSON line. Used by test_multidevice.py."""

import json
import sys

import jax
import numpy as np

from recjax import sharding
from recjax.data import pipeline
from recjax.models import build_model
from recjax.train import steps
from recjax.train.loop import build_state

sys.path.insert(0, sys.argv[1])
from conftest import load_config  # noqa: E402


def losses_on(mesh_shape, cfg, data, n_steps=3):
  devs = jax.devices()[: mesh_shape[0] * mesh_shape[1]]
  mesh = sharding.make_mesh(*mesh_shape, devices=devs)
  model = build_model(data.schema, cfg.model)
  batches = list(pipeline.eval_batches(data.train, cfg.train.batch_size))[:n_steps]
  state, sh = build_state(model, cfg, mesh, batches[0])
  step = jax.jit(steps.make_train_step(model, cfg.seed), in_shardings=(sh, sharding.batch_sharding(mesh)),
                 out_shardings=(sh, None))
  out = []
  for b in batches:
    state, m = step(state, sharding.shard_batch(b, mesh))
    out.append(float(m["loss"]))
  table_bytes = max(sharding.per_device_bytes(state.params).values())
  return out, table_bytes


def main():
  from recjax.data.dataset import load_dataset
  cfg = load_config("interformer", "tiny")
  cfg.model.dropout = 0.0
  data = load_dataset(cfg.dataset)
  res = {}
  for shape in [tuple(int(x) for x in s.split("x")) for s in sys.argv[2].split(",")]:
    res["x".join(map(str, shape))] = losses_on(shape, cfg, data)
  print(json.dumps(res))


if __name__ == "__main__":
  main()
