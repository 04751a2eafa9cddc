"""Orbax checkpoints of the train state, the best-validation params, and the loop/data-iterator state.

One checkpoint per saved step under `<workdir>/checkpoints/<step>/`, with three items:
- `state`: the `TrainState` arrays (params, optimizer state, step);
- `best_params`: the params with the best validation AUC so far;
- `meta`: JSON: loop bookkeeping (best step/metrics, patience) and the data iterator's state.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact; only the last `keep` are kept.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (state, best_params, meta) under `<workdir>/checkpoints`.

  Args:
    workdir: the run directory.
    keep: how many most recent checkpoints to keep (>= 1).
  """

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "best_params", "meta"),
    )

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def save(self, step: int, state: Any, best_params: Any, meta: dict) -> None:
    """Writes checkpoint `step` atomically and waits until it is on disk."""
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        best_params=ocp.args.StandardSave(best_params),
        meta=ocp.args.JsonSave(meta)), force=True)
    self._mgr.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, abstract_best: Any) -> tuple[Any, Any, dict]:
    """Restores checkpoint `step` onto the shardings of the abstract targets.

    Args:
      abstract_state, abstract_best: pytrees of `jax.ShapeDtypeStruct` with `.sharding` set (e.g. from
        `jax.eval_shape` plus the target mesh's shardings); the arrays are placed accordingly, so a
        checkpoint written on one mesh restores onto any other.
    """
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        best_params=ocp.args.StandardRestore(abstract_best),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["best_params"], out["meta"]

  def read_meta(self, step: int) -> dict:
    """The JSON `meta` item of checkpoint `step` alone (no arrays are read)."""
    return self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def close(self) -> None:
    self._mgr.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct` tree of `tree` (arrays or structs) carrying the given shardings."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
