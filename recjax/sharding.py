"""Mesh construction, the logical-axis rules table, and placement of params and batches.

Models name their parameter axes logically (`nn.with_logical_partitioning`); this module owns the single
table that maps those names to mesh axes (the t5x / maxtext pattern). The mesh has two axes:

- `data`: the batch is split over it (data parallelism);
- `model`: embedding-table rows are split over it (row-sharded tables).

Scale-out across hosts uses `jax.distributed.initialize()` before `make_mesh`; nothing here is host-local
except `shard_batch`, which expects the process-local slice of the global batch (one process: all of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from recjax.errors import ConfigError

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Logical axis name -> mesh axis (None = replicated). The only such table in the project.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),     # embedding rows: row-sharded tables
    ("embed", None),
    ("mlp", None),
    ("heads", None),
    ("head_dim", None),
    ("tokens", None),
    ("cross", None),
)


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, model) mesh over `devices` (default: all devices, all processes).

  Args:
    data: size of the `data` axis; -1 means all devices not used by `model`.
    model: size of the `model` axis (embedding-row sharding).
    devices: the devices to use, default `jax.devices()`.

  Returns:
    A `jax.sharding.Mesh` with axis names ("data", "model").

  Raises:
    ConfigError: if the sizes do not divide / match the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model < 1 or n % model:
    raise ConfigError(f"mesh: model axis size {model} must be >= 1 and divide the {n} devices")
  if data == -1:
    data = n // model
  if data * model != n:
    raise ConfigError(f"mesh: data × model = {data} × {model} = {data * model}, but there are {n} devices")
  return Mesh(np.asarray(devices).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def logical_shardings(abstract_tree: Any, mesh: Mesh,
                      rules: Sequence[tuple[str, str | None]] = LOGICAL_AXIS_RULES) -> Any:
  """NamedShardings for a pytree whose leaves may be `nn.LogicallyPartitioned` boxes.

  Boxed leaves are placed by `rules`; every other leaf is replicated. The result has the structure of
  the *unboxed* tree, ready for `jax.jit(out_shardings=...)` or `jax.device_put`.
  """
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch array: leading (example) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch on the mesh, split over the `data` axis.

  Raises:
    ConfigError: if the batch size is not divisible by the `data` axis size.
  """
  n_data = mesh.shape[DATA_AXIS]
  out = {}
  for k, v in batch.items():
    if v.shape[0] % n_data:
      raise ConfigError(f"batch size {v.shape[0]} (field {k!r}) is not divisible by the data axis {n_data}")
    if jax.process_count() == 1:
      out[k] = jax.device_put(v, batch_sharding(mesh))
    else:
      out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh), v)
  return out


def per_device_bytes(tree: Any) -> dict[jax.Device, int]:
  """Bytes each device holds for a pytree of jax.Arrays, read from the arrays' shards."""
  out: dict[jax.Device, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
