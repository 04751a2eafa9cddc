"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 by test_multidevice.py.

argv: <tests/train dir> <workdir> <mesh shapes, e.g. 1x1,8x1,4x2,2x4>. Prints one JSON line with, per mesh:
the losses of the same 3 train steps, the largest per-device bytes of the embedding tables, and (for meshes
listed after the first) whether a checkpoint written on the first mesh restores there with identical values.
"""

import json
import pathlib
import sys

import jax
import numpy as np

from recjax import sharding
from recjax.data import pipeline
from recjax.models import build_model
from recjax.train import steps
from recjax.train.checkpoint import Checkpointer, abstract_with_shardings
from recjax.train.loop import build_state

sys.path.insert(0, sys.argv[1])
from conftest import load_config  # noqa: E402


def run_on(shape, cfg, data, n_steps=3):
  mesh = sharding.make_mesh(*shape, devices=jax.devices()[: shape[0] * shape[1]])
  model = build_model(data.schema, cfg.model)
  batches = list(pipeline.eval_batches(data.train, cfg.train.batch_size))[:n_steps]
  state, sh = build_state(model, cfg, mesh, batches[0])
  step = jax.jit(steps.make_train_step(model, cfg.seed), in_shardings=(sh, sharding.batch_sharding(mesh)),
                 out_shardings=(sh, None))
  losses = []
  for b in batches:
    state, m = step(state, sharding.shard_batch(b, mesh))
    losses.append(float(m["loss"]))
  tables = state.params["embedding"]
  table_bytes = max(sharding.per_device_bytes(tables).values())
  return state, sh, losses, table_bytes


def main():
  from recjax.data.dataset import load_dataset
  workdir = pathlib.Path(sys.argv[2])
  cfg = load_config("interformer", "tiny")
  cfg.model.dropout = 0.1  # dropout masks hash global positions, so they are the same on every mesh
  data = load_dataset(cfg.dataset)
  shapes = [tuple(int(x) for x in s.split("x")) for s in sys.argv[3].split(",")]
  res = {}
  saved = None
  for shape in shapes:
    state, sh, losses, table_bytes = run_on(shape, cfg, data)
    key = "x".join(map(str, shape))
    res[key] = {"losses": losses, "table_bytes": table_bytes}
    if saved is None:  # write the first mesh's trained state
      ck = Checkpointer(workdir, keep=1)
      ck.save(3, state, state.params, {"mesh": key})
      saved = jax.device_get(state.params)
    else:              # restore it onto this mesh's shardings
      ck = Checkpointer(workdir, keep=1)
      restored, _, meta = ck.restore(3, abstract_with_shardings(state, sh),
                                     abstract_with_shardings(state.params, sh.params))
      same = jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), saved,
                                       jax.device_get(restored.params)))
      placed = restored.params["embedding"][next(iter(restored.params["embedding"]))].sharding
      res[key]["restored_identical"] = same
      res[key]["restored_sharding_ok"] = placed == sh.params["embedding"][next(iter(sh.params["embedding"]))]
    ck.close()
  print(json.dumps(res))


if __name__ == "__main__":
  main()
