"""`train_and_evaluate(config, workdir)`: the main training job.

Loads a dataset, builds the model and a (data, model) mesh, trains with jitted steps, evaluates on the
validation split every `train.eval_every` steps with early stopping on validation AUC, checkpoints
(resumable, atomic), and finally evaluates the best-validation params on the test split.

Outputs under `workdir`:
- `metrics.jsonl`: one JSON object per log/eval event (`{"step", "split", ...}`);
- `tb/`: TensorBoard event files of the same scalars;
- `checkpoints/`: orbax checkpoints (see `checkpoint.py`); re-running with the same workdir resumes;
- `results.json`: dataset, model, config, best step, valid and test metrics, throughput (and the host
  settings it ran under: the malloc in use, whether `recjax.host_memory.keep_freed_memory()` and
  `recjax.xla_cpu.use_onednn_dots()` were on);
- `curves.png`: train loss and validation AUC against step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from recjax import host_memory, sharding, xla_cpu
from recjax import metrics as metrics_lib
from recjax.data import pipeline
from recjax.data.dataset import DatasetSplits, load_dataset
from recjax.errors import ConfigError, TrainingError
from recjax.models import build_model
from recjax.nn.embedding import VOCAB_PAD_MULTIPLE
from recjax.train import steps
from recjax.train.checkpoint import Checkpointer, abstract_with_shardings
from recjax.train.state import TrainState, lr_factor, make_optimizer, scale_lr

log = logging.getLogger("recjax")


def _validate_config(config: ml_collections.ConfigDict) -> None:
  t = config.train
  checks = [
      (t.batch_size > 0, f"train.batch_size must be > 0, got {t.batch_size}"),
      (t.eval_batch_size > 0, f"train.eval_batch_size must be > 0, got {t.eval_batch_size}"),
      (t.max_steps > 0, f"train.max_steps must be > 0, got {t.max_steps}"),
      (t.eval_every > 0, f"train.eval_every must be > 0, got {t.eval_every}"),
      (t.patience >= 0, f"train.patience must be >= 0, got {t.patience}"),
      (t.log_every > 0, f"train.log_every must be > 0, got {t.log_every}"),
      (0.0 <= t.plateau_factor < 1.0, f"train.plateau_factor must be in [0, 1), got {t.plateau_factor}"),
      (t.monitor in ("auc", "gauc", "logloss", "ne"),
       f"train.monitor must be auc|gauc|logloss|ne, got {t.monitor!r}"),
      (config.eval.ne_base_rate in ("train", "eval"),
       f"eval.ne_base_rate must be train|eval, got {config.eval.ne_base_rate!r}"),
      (config.eval.gauc_weight in ("samples", "clicks", "uniform"),
       f"eval.gauc_weight must be samples|clicks|uniform, got {config.eval.gauc_weight!r}"),
  ]
  for ok, msg in checks:
    if not ok:
      raise ConfigError(msg)


class _MetricsLog:
  """Appends scalars to metrics.jsonl and TensorBoard; drops entries past a resumed step."""

  def __init__(self, workdir: pathlib.Path, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # drop what a killed run logged after the checkpoint we resume from
      keep = [ln for ln in self.path.read_text().splitlines()
              if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
      tmp = self.path.with_suffix(".tmp")
      tmp.write_text("".join(ln + "\n" for ln in keep))
      os.replace(tmp, self.path)
    self._f = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(str(workdir / "tb"))

  def write(self, step: int, split: str, values: dict[str, float]) -> None:
    rec = {"step": int(step), "split": split, **{k: float(v) for k, v in values.items()}}
    self._f.write(json.dumps(_finite_or_none(rec)) + "\n")
    self._f.flush()
    for k, v in values.items():
      if math.isfinite(float(v)):  # e.g. gAUC is undefined (NaN) when no user has both labels
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()
      self._tb.close()


# Fields a resumed run may change (how long / how often to train and log); everything else must match.
_RESUME_MAY_CHANGE = ("train.max_steps", "train.eval_every", "train.log_every", "train.patience",
                      "train.keep_checkpoints", "train.eval_batch_size", "mesh.data", "mesh.model",
                      "distributed", "dataset.data_dir", "dataset.use_cache")

# Fields added after checkpoints already existed, with the value that reproduces the behaviour from before
# they existed: a checkpoint written without the field resumes when the run uses that value.
_ADDED_FIELDS = {"dataset.negatives": "uniform"}


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _run_identity(config: ml_collections.ConfigDict) -> dict:
  """The config fields that define a run (all but `_RESUME_MAY_CHANGE`), JSON-friendly."""
  flat = _flatten(json.loads(config.to_json_best_effort()))
  return {k: v for k, v in flat.items() if k not in _RESUME_MAY_CHANGE}


def _check_resumable(ckpt: Checkpointer, step: int, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError if the workdir's checkpoint was written by a run with a different config."""
  saved = ckpt.read_meta(step).get("run_config")
  if saved is None:
    return
  now = _run_identity(config)
  diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                and not (k not in saved and k in _ADDED_FIELDS and now.get(k) == _ADDED_FIELDS[k]))
  if diff:
    shown = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in diff[:8])
    raise ConfigError(f"{ckpt.directory} holds a run with a different config ({shown}). Use a new --workdir, "
                      f"or the checkpoint's values to resume it.")


def _finite_or_none(x: Any) -> Any:
  """NaN/inf -> None, recursively, so results.json and metrics.jsonl are strict JSON."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite_or_none(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_finite_or_none(v) for v in x]
  return x


def _better(monitor: str, new: float, old: float | None) -> bool:
  if old is None or math.isnan(old):
    return not math.isnan(new)
  return new > old if monitor in ("auc", "gauc") else new < old


def _local_rows(n: int) -> slice:
  """The rows of a global batch of n rows that this process feeds (all of them on one process)."""
  p, k = jax.process_index(), jax.process_count()
  if n % k:
    raise ConfigError(f"batch size {n} must be divisible by the number of processes {k}")
  return slice(p * n // k, (p + 1) * n // k)


def _to_mesh(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  rows = _local_rows(len(batch["label"]))
  return sharding.shard_batch({k: v[rows] for k, v in batch.items()}, mesh)


class Evaluator:
  """Runs the jitted eval step over a split and computes AUC, gAUC, LogLoss and NE on the host."""

  def __init__(self, model: nn.Module, mesh, param_shardings, config: ml_collections.ConfigDict,
               train_positive_rate: float):
    self._step = jax.jit(steps.make_eval_step(model),
                         in_shardings=(param_shardings, sharding.batch_sharding(mesh)))
    self._mesh = mesh
    self._cfg = config
    self._base_rate = train_positive_rate

  def logits(self, params: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """[N] float64 logits of every example of `arrays`, in order."""
    from jax.experimental import multihost_utils
    out = []
    for batch in pipeline.eval_batches(arrays, self._cfg.train.eval_batch_size):
      logits = self._step(params, _to_mesh(batch, self._mesh))
      if jax.process_count() > 1:
        logits = multihost_utils.process_allgather(logits, tiled=True)
      out.append(np.asarray(logits)[batch["mask"] > 0])
    return np.concatenate(out).astype(np.float64)

  def __call__(self, params: Any, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    logits = self.logits(params, arrays)
    labels = arrays["label"]
    base = self._base_rate if self._cfg.eval.ne_base_rate == "train" else float(np.mean(labels))
    return metrics_lib.ctr_metrics(labels, logits, arrays["group_id"], base_rate=base,
                                   gauc_weight=self._cfg.eval.gauc_weight)


def build_state(model: nn.Module, config: ml_collections.ConfigDict, mesh, example: dict[str, np.ndarray]):
  """Initialises the `TrainState` directly on the mesh, placed by the logical-axis rules.

  Returns:
    (state, state_shardings): the sharded state and the matching tree of NamedShardings.
  """
  tx = make_optimizer(config.train)

  def init(rng):
    params = model.init({"params": rng, "dropout": rng}, example, train=False)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)

  rng = jax.random.PRNGKey(config.seed)
  abstract = jax.eval_shape(init, rng)
  shardings = sharding.logical_shardings(abstract, mesh)
  state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _plot_curves(workdir: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  recs = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
  tr = [(r["step"], r["loss"]) for r in recs if r["split"] == "train" and "loss" in r]
  va = [(r["step"], r["auc"]) for r in recs if r["split"] == "valid" and "auc" in r]
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
  if tr:
    ax[0].plot(*zip(*tr))
  ax[0].set(xlabel="step", ylabel="train loss (BCE)")
  if va:
    ax[1].plot(*zip(*va), marker="o")
  ax[1].set(xlabel="step", ylabel="validation AUC")
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)
  plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       data: DatasetSplits | None = None, progress: bool = True) -> dict:
  """Trains `config.model` on `config.dataset`, resuming from `workdir` if it has checkpoints.

  Args:
    config: the experiment config (see `experiments/configs/interformer.py`).
    workdir: output directory; created if missing.
    data: pre-loaded splits (tests); default loads `config.dataset`.
    progress: show a tqdm progress bar.

  Returns:
    The dict written to `<workdir>/results.json`.

  Raises:
    ConfigError: bad config values. DataError: bad or missing data.
    TrainingError: the loss became NaN/inf (the last good checkpoint is kept).
  """
  from tqdm.auto import tqdm

  _validate_config(config)
  workdir = pathlib.Path(workdir)
  data = data if data is not None else load_dataset(config.dataset)
  model = build_model(data.schema, config.model)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  if VOCAB_PAD_MULTIPLE % mesh.shape[sharding.MODEL_AXIS]:
    raise ConfigError(f"mesh.model={mesh.shape[sharding.MODEL_AXIS]} must divide {VOCAB_PAD_MULTIPLE}, the "
                      f"multiple embedding tables are padded to")
  tcfg = config.train
  bsz = tcfg.batch_size
  if bsz % mesh.shape[sharding.DATA_AXIS] or tcfg.eval_batch_size % mesh.shape[sharding.DATA_AXIS]:
    raise ConfigError(f"train.batch_size {bsz} and train.eval_batch_size {tcfg.eval_batch_size} must be "
                      f"divisible by the data axis size {mesh.shape[sharding.DATA_AXIS]}")
  n_train = pipeline.num_examples(data.train)
  if n_train < bsz:
    raise ConfigError(f"train.batch_size {bsz} exceeds the {n_train} training examples of {data.name}")

  example = next(iter(pipeline.eval_batches(data.train, bsz)))
  state, state_sh = build_state(model, config, mesh, example)
  best_params = state.params
  evaluator = Evaluator(model, mesh, state_sh.params, config, data.train_positive_rate)
  train_step = jax.jit(steps.make_train_step(model, config.seed),
                       in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                       out_shardings=(state_sh, None), donate_argnums=(0,))

  # The workdir is created only once the data, model and state are built: a data or config error must not
  # leave an empty run directory behind.
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
  ckpt = Checkpointer(workdir, keep=tcfg.keep_checkpoints)
  meta: dict[str, Any] = {"best_step": None, "best_valid": None, "best_score": None, "bad_evals": 0,
                          "data_iter": None, "stopped_early": False, "run_config": _run_identity(config)}
  start = ckpt.latest_step()
  if start is not None:
    _check_resumable(ckpt, start, config)
    try:
      state, best_params, meta = ckpt.restore(
          start, abstract_with_shardings(state, state_sh), abstract_with_shardings(best_params, state_sh.params))
    except ValueError as e:
      raise ConfigError(f"the checkpoint in {ckpt.directory} (step {start}) does not fit this model ({e}); "
                        f"use a new --workdir for a different model") from None
    print(f"resuming from {ckpt.directory} at step {start}", file=sys.stderr)
  start = int(state.step)
  it = pipeline.train_iterator(data.train, bsz, seed=config.seed, start_state=meta["data_iter"])

  mlog = _MetricsLog(workdir, start)
  n_params = param_count(state.params)
  if progress and jax.process_index() == 0:
    print(f"{config.model.name} on {data.name}: {n_params:,} params, {n_train:,} train examples, "
          f"mesh {dict(mesh.shape)}", file=sys.stderr)

  pending: list[tuple[int, jax.Array]] = []
  t_first, steps_timed, t_eval = None, 0, 0.0
  prev_loss = None  # the previous step's loss, for the host-memory check

  def flush_losses(step: int) -> float | None:
    """Checks the losses since the last flush; raises TrainingError on NaN/inf."""
    if not pending:
      return None
    losses = np.asarray(jax.device_get(jnp.stack([l for _, l in pending])))
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      raise TrainingError(
          f"the training loss became {losses[bad[0]]} at step {pending[bad[0]][0]}; stopping. The last good "
          f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept. Lower train.lr, set "
          f"train.grad_clip, or check the input data for extreme values.")
    mean = float(losses.mean())
    mlog.write(step, "train", {"loss": mean})
    pending.clear()
    return mean

  bar = tqdm(total=tcfg.max_steps, initial=start, disable=not progress or jax.process_index() != 0,
             desc=f"{config.model.name}/{data.name}", unit="step", dynamic_ncols=True)
  step = start
  try:
    while step < tcfg.max_steps and not meta["stopped_early"]:
      batch = _to_mesh(next(it), mesh)
      state, out = train_step(state, batch)
      if prev_loss is not None:
        host_memory.release_after(prev_loss)  # two steps in flight, glibc heap capped (recjax.host_memory)
      prev_loss = out["loss"]
      step += 1
      pending.append((step, out["loss"]))
      if t_first is None:
        jax.block_until_ready(out["loss"])  # exclude compilation from the throughput figure
        t_first = time.perf_counter()
      else:
        steps_timed += 1
      bar.update(1)
      if step % tcfg.log_every == 0:
        loss = flush_losses(step)
        bar.set_postfix(loss=f"{loss:.4f}")
      if step % tcfg.eval_every == 0 or step == tcfg.max_steps:
        flush_losses(step)
        t0 = time.perf_counter()
        valid = evaluator(state.params, data.valid)
        mlog.write(step, "valid", valid)
        score = valid[tcfg.monitor]
        if _better(tcfg.monitor, score, meta["best_score"]):
          meta.update(best_step=step, best_valid=valid, best_score=score, bad_evals=0)
          best_params = jax.tree.map(jnp.copy, state.params)
        else:
          meta["bad_evals"] += 1
          if meta["bad_evals"] >= tcfg.patience:
            meta["stopped_early"] = True
          elif tcfg.plateau_factor and lr_factor(state.opt_state) * tcfg.plateau_factor >= tcfg.min_lr_factor:
            state = state.replace(opt_state=scale_lr(state.opt_state, tcfg.plateau_factor))
        mlog.write(step, "lr", {"lr_factor": lr_factor(state.opt_state)})
        bar.write(f"step {step}: valid auc {valid['auc']:.4f} gauc {valid['gauc']:.4f} "
                  f"logloss {valid['logloss']:.4f} (best {meta['best_score']:.4f} @ {meta['best_step']})")
        meta["data_iter"] = it.get_state()
        ckpt.save(step, state, best_params, meta)
        t_eval += time.perf_counter() - t0
    flush_losses(step)
  except BaseException:
    mlog.close()
    ckpt.close()
    raise
  finally:
    bar.close()
  t_train = time.perf_counter() - t_first - t_eval if t_first is not None else 0.0
  finished = workdir / "results.json"
  if t_first is None and finished.exists():  # no step ran in this call
    # Re-running a finished run: keep its results and metrics log as they are (no second test line).
    mlog.close()
    ckpt.close()
    log.info("%s is already finished; returning its results.json", workdir)
    return json.loads(finished.read_text())

  test = evaluator(best_params, data.test)
  mlog.write(step, "test", test)
  mlog.close()
  results = {
      "dataset": data.name,
      "data_dir": data.meta.get("data_dir"),  # the resolved directory (config `dataset.data_dir` may be "")
      "model": config.model.name,
      "config": json.loads(config.to_json_best_effort()),
      "num_params": n_params,
      "best_step": meta["best_step"],
      "final_step": step,
      "stopped_early": meta["stopped_early"],
      "valid": meta["best_valid"],
      "test": test,
      "train_examples_per_sec": (steps_timed * bsz / t_train) if t_train > 0 else None,
      "allocator": host_memory.allocator_in_use(),  # the host allocator the throughput was measured under
      "keep_freed_memory": host_memory.kept(),  # and whether glibc kept its heap
      "onednn_dots": xla_cpu.onednn_dots(),  # and the XLA:CPU matmul path
      "devices": {"count": jax.device_count(), "platform": jax.devices()[0].platform,
                  "mesh": dict(mesh.shape)},
  }
  if jax.process_index() == 0:
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(_finite_or_none(results), indent=2))
    os.replace(tmp, workdir / "results.json")
    try:
      _plot_curves(workdir)
    except Exception as e:  # a plot must never fail a finished run
      log.warning("could not plot curves: %s", e)
  ckpt.close()
  return results
