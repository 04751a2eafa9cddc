"""FuxiCTR parity on ml-100k: our split and features through FuxiCTR 2.3.10's layers and training loop.

The issue's FuxiCTR reference (DNN 0.7901, DCNv2 0.7914, DIN 0.7885 test AUC) was produced on FuxiCTR's
own preprocessing of the ml-100k split. This script removes that difference: it feeds FuxiCTR exactly the
arrays recjax trains on (same rows, same ids, same histories), so the remaining AUC gap is the models and
training loops, and it times FuxiCTR's training step on this machine next to ours.

FuxiCTR needs PyTorch, which recjax does not depend on, so this runs in two steps and two environments:

  # 1. in recjax's environment: write the Batch-format arrays and the schema
  RECJAX_DATA_DIR=../shared/data python experiments/analysis/fuxictr_parity.py export --data /tmp/ml100k_arrays
  # 2. in a Python 3.11 venv with `pip install torch==2.13.0 fuxictr==2.3.10` (no jax needed)
  python experiments/analysis/fuxictr_parity.py train --data /tmp/ml100k_arrays --models dnn,dcnv2,din \
      --seeds 0,1,2 --threads 1 --out /tmp/fuxictr_parity.jsonl
  python experiments/analysis/fuxictr_parity.py speed --data /tmp/ml100k_arrays --models dnn,dcnv2,din --threads 2

What FuxiCTR gets (its own conventions, which are part of what is compared):
- every sparse feature: a `categorical` field (padding id 0) with our vocabulary;
- every dense column: a `numeric` field, which FuxiCTR embeds as x · v (a Linear(1, d), no bias), whereas
  recjax's baselines concatenate the raw dense values;
- every sequence: a `sequence` field sharing the embedding table of the sparse feature with the same
  `table` (item, genre), mean-pooled with `MaskedAveragePooling`; DIN attends over (hist_item, hist_genre)
  with (item_id, first_genre) as the target, as our DIN does;
- models: DNN (embeddings → MLP [500, 500, 500] → 1), DCNv2 (parallel, 3 full-rank `CrossNetV2` layers ‖
  MLP [500, 500, 500] → Linear), DIN (`DIN_Attention`, units [64], Dice, no softmax; MLP [500, 500, 500]),
  as in FuxiCTR's model zoo `*_default` configs; embedding 16, batch 2048, Adam 1e-3, gradient-norm clip
  10 and reduce-on-plateau ×0.1 (FuxiCTR's `BaseModel.fit`), early stopping on validation AUC with
  patience 2, evaluation once per epoch.

`train` writes one JSON line per (model, seed): valid AUC of the restored best epoch, test AUC / LogLoss,
epochs. `speed` prints one JSON line per model: the median examples/s of FuxiCTR's `train_step` (forward,
backward, clip, Adam) over 20 in-memory batches after 3 warm-up steps, with `torch.set_num_threads(--threads)`.
Compare it with `experiments/bench/train_throughput.py --config experiments/configs/<model>.py:movielens`
run on the same idle machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------- export
def export(data: pathlib.Path, preset: str) -> None:
  """Writes `<data>/<split>.npz` (Batch-format arrays) and `<data>/schema.json` from recjax's loader."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
  from recjax.data.dataset import load_dataset
  from recjax.train.defaults import base_config

  ds = load_dataset(base_config(preset).dataset)
  data.mkdir(parents=True, exist_ok=True)
  for split in SPLITS:
    arrays = ds.split(split)
    np.savez(data / f"{split}.npz", **{k.replace("/", "__"): v for k, v in arrays.items()})
  (data / "schema.json").write_text(json.dumps(ds.schema.to_dict(), indent=1))
  print(json.dumps({"exported": str(data), **{s: len(ds.split(s)["label"]) for s in SPLITS}}))


# ---------------------------------------------------------------------------------------------- train
def _load(data: pathlib.Path):
  for name in ("schema.json", *(f"{s}.npz" for s in SPLITS)):
    if not (data / name).exists():
      raise SystemExit(f"{data / name} is missing: run `fuxictr_parity.py export --data {data}` first")
  schema = json.loads((data / "schema.json").read_text())
  splits = {}
  for s in SPLITS:
    with np.load(data / f"{s}.npz") as z:
      splits[s] = {k.replace("__", "/"): z[k] for k in z.files}
  return schema, splits


def _columns(schema: dict, arrays: dict) -> dict[str, np.ndarray]:
  """Batch-format arrays -> one array per FuxiCTR field (sparse, dense columns, sequences) + label."""
  cols = {}
  for j, f in enumerate(schema["sparse"]):
    cols[f["name"]] = arrays["sparse"][:, j].astype(np.int64)
  for j, name in enumerate(schema["dense"]):
    cols[name] = arrays["dense"][:, j].astype(np.float32)
  for f in schema["sequences"]:
    cols[f["name"]] = arrays[f"seq/{f['name']}"].astype(np.int64)
  cols["label"] = arrays["label"].astype(np.float32)
  return cols


def _din_fields(schema: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(targets, sequences): each sequence whose table is a sparse feature's table, with that feature."""
  by_table = {(f.get("table") or f["name"]): f["name"] for f in schema["sparse"]}
  pairs = [(by_table[f.get("table") or f["name"]], f["name"]) for f in schema["sequences"]
           if (f.get("table") or f["name"]) in by_table]
  return tuple(t for t, _ in pairs), tuple(s for _, s in pairs)


def _feature_map(schema: dict, dim: int, din_sequences=(), root: str = ""):
  from collections import OrderedDict

  from fuxictr.features import FeatureMap

  fm = FeatureMap("ml100k_recjax", root)
  feats = OrderedDict()
  owner = {}
  for f in schema["sparse"]:
    feats[f["name"]] = {"type": "categorical", "vocab_size": f["vocab_size"], "padding_idx": 0, "source": ""}
    owner.setdefault(f.get("table") or f["name"], f["name"])
  for name in schema["dense"]:
    feats[name] = {"type": "numeric", "source": ""}
  for f in schema["sequences"]:
    spec = {"type": "sequence", "vocab_size": f["vocab_size"], "padding_idx": 0, "max_len": f["max_len"],
            "source": ""}
    if f["name"] not in din_sequences:
      spec["feature_encoder"] = "layers.MaskedAveragePooling()"
    table = f.get("table") or f["name"]
    if table in owner:
      spec["share_embedding"] = owner[table]
    else:
      owner[table] = f["name"]
    feats[f["name"]] = spec
  fm.features = feats
  fm.labels = ["label"]
  fm.default_emb_dim = dim
  fm.num_fields = fm.get_num_fields()
  fm.set_column_index()
  return fm


class _Batches:
  """In-memory batches of torch tensors, reshuffled every epoch (FuxiCTR's loader semantics)."""

  def __init__(self, cols, batch_size, shuffle, seed):
    import torch
    self.cols = {k: torch.from_numpy(v) for k, v in cols.items()}
    self.n = len(cols["label"])
    self.batch_size, self.shuffle = batch_size, shuffle
    self.rng = np.random.default_rng(seed)

  def __len__(self):
    return (self.n + self.batch_size - 1) // self.batch_size

  def __iter__(self):
    import torch
    idx = torch.from_numpy(self.rng.permutation(self.n)) if self.shuffle else None
    for i in range(0, self.n, self.batch_size):
      sel = idx[i:i + self.batch_size] if idx is not None else slice(i, i + self.batch_size)
      yield {k: v[sel] for k, v in self.cols.items()}


def _models():
  """FuxiCTR model-zoo DNN / DCNv2 / DIN built on FuxiCTR's BaseModel and layers."""
  import torch
  from fuxictr.pytorch.layers import (
    CrossNetV2,
    DIN_Attention,
    FeatureEmbedding,
    FeatureEmbeddingDict,
    MLP_Block,
  )
  from fuxictr.pytorch.models import BaseModel

  class _Zoo(BaseModel):
    """The model zoo's constructor tail and its ReLU MLP."""

    def _mlp(self, d_in, hidden, logit):
      return MLP_Block(input_dim=d_in, output_dim=1 if logit else None, hidden_units=hidden,
                       hidden_activations="ReLU", output_activation=self.output_activation if logit else None)

    def _ready(self, lr, kw):
      self.compile(kw["optimizer"], kw["loss"], lr)
      self.reset_parameters()
      self.model_to_device()

  class DNN(_Zoo):
    def __init__(self, fm, dim, hidden, lr, **kw):
      super().__init__(fm, model_id="DNN", **kw)
      self.embedding_layer = FeatureEmbedding(fm, dim)
      self.mlp = self._mlp(fm.sum_emb_out_dim(), hidden, logit=True)
      self._ready(lr, kw)

    def forward(self, inputs):
      x = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
      return {"y_pred": self.mlp(x)}

  class DCNv2(_Zoo):
    def __init__(self, fm, dim, hidden, lr, **kw):
      super().__init__(fm, model_id="DCNv2", **kw)
      self.embedding_layer = FeatureEmbedding(fm, dim)
      d_in = fm.sum_emb_out_dim()
      self.crossnet = CrossNetV2(d_in, 3)
      self.mlp = self._mlp(d_in, hidden, logit=False)
      self.fc = torch.nn.Linear(d_in + hidden[-1], 1)
      self._ready(lr, kw)

    def forward(self, inputs):
      x = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
      out = self.fc(torch.cat([self.crossnet(x), self.mlp(x)], dim=-1))
      return {"y_pred": self.output_activation(out)}

  class DIN(_Zoo):
    def __init__(self, fm, dim, hidden, lr, targets=(), sequences=(), **kw):
      super().__init__(fm, model_id="DIN", **kw)
      self.dim, self.targets, self.sequences = dim, tuple(targets), tuple(sequences)
      self.embedding_layer = FeatureEmbeddingDict(fm, dim)
      self.attention = DIN_Attention(dim * len(self.targets), attention_units=[64], hidden_activations="Dice",
                                     output_activation=None, dropout_rate=0, use_softmax=False)
      self.mlp = self._mlp(fm.sum_emb_out_dim(), hidden, logit=True)
      self._ready(lr, kw)

    def forward(self, inputs):
      x = self.get_inputs(inputs)
      emb = self.embedding_layer(x)
      target = torch.cat([emb[f] for f in self.targets], dim=-1)
      seq = torch.cat([emb[f] for f in self.sequences], dim=-1)
      pooled = self.attention(target, seq, x[self.sequences[0]].long() != 0)
      for f, e in zip(self.sequences, pooled.split(self.dim, dim=-1)):
        emb[f] = e
      return {"y_pred": self.mlp(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

  return {"dnn": DNN, "dcnv2": DCNv2, "din": DIN}


def _step_rate(model, batches, steps: int = 20, warmup: int = 3) -> float:
  """Median examples/s of `model.train_step` over in-memory batches (after `warmup` steps)."""
  model.train()
  model._max_gradient_norm = 10.0
  full = []
  while len(full) < steps + warmup:
    full += [b for b in batches if len(b["label"]) == batches.batch_size]
  times = []
  for i, b in enumerate(full[:steps + warmup]):
    t = time.perf_counter()
    model.train_step(b)
    if i >= warmup:
      times.append(time.perf_counter() - t)
  return batches.batch_size / float(np.median(times))


MODELS = ("dnn", "dcnv2", "din")


def _parse_lists(args) -> tuple[list[str], list[int]]:
  """`--models` and `--seeds`, checked before any data is loaded or anything is written."""
  models = [m for m in args.models.split(",") if m]
  bad = [m for m in models if m not in MODELS]
  if bad or not models:
    raise SystemExit(f"--models: unknown model(s) {bad or args.models!r}; known: {list(MODELS)}")
  try:
    seeds = [int(x) for x in getattr(args, "seeds", "0").split(",")]
  except ValueError:
    raise SystemExit(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
  return models, seeds


class _Session:
  """What `train` and `speed` share: torch threads, the exported arrays, and a model builder."""

  def __init__(self, args):
    import logging

    import torch
    from fuxictr.pytorch.torch_utils import seed_everything

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    self.torch_version, self.seed_everything = torch.__version__, seed_everything
    self.dim = args.dim
    self.schema, splits = _load(pathlib.Path(args.data))
    self.cols = {s: _columns(self.schema, splits[s]) for s in SPLITS}
    self.targets, self.din_seqs = _din_fields(self.schema)
    self.classes = _models()

  def build(self, name: str, seed: int, root: str):
    """A freshly initialised FuxiCTR `name` (seeded), saving its best checkpoint under `root`."""
    self.seed_everything(seed)
    (pathlib.Path(root) / "ml100k_recjax").mkdir(exist_ok=True)   # FuxiCTR's checkpoint folder
    din = name == "din"
    fm = _feature_map(self.schema, self.dim, self.din_seqs if din else (), root)
    extra = {"targets": self.targets, "sequences": self.din_seqs} if din else {}
    return self.classes[name](fm, self.dim, [500, 500, 500], 1e-3, optimizer="adam", loss="binary_crossentropy",
                              metrics=["logloss", "AUC"], monitor="AUC", monitor_mode="max",
                              early_stop_patience=2, verbose=0, model_root=root, **extra)


def train(args) -> None:
  models, seeds = _parse_lists(args)
  out = pathlib.Path(args.out)
  if out.exists() and not args.append:
    raise SystemExit(f"--out {out} exists: pass --append to add rows to it, or choose another file")
  run = _Session(args)
  valid_b = _Batches(run.cols["valid"], 8192, False, 0)
  test_b = _Batches(run.cols["test"], 8192, False, 0)
  out.parent.mkdir(parents=True, exist_ok=True)
  for name in models:
    for seed in seeds:
      with tempfile.TemporaryDirectory() as root:
        model = run.build(name, seed, root)
        t0 = time.perf_counter()
        model.fit(_Batches(run.cols["train"], args.batch, True, seed), epochs=args.max_epochs,
                  validation_data=valid_b, max_gradient_norm=10.0)
        fit_s = time.perf_counter() - t0
        valid = model.evaluate(valid_b)
        test = model.evaluate(test_b)
      row = dict(model=name, seed=seed, valid_auc=valid["AUC"], test_auc=test["AUC"],
                 test_logloss=test["logloss"], epochs=model._epoch_index + 1, fit_s=round(fit_s, 1),
                 threads=args.threads, batch=args.batch, dim=args.dim, torch=run.torch_version)
      print(json.dumps(row), flush=True)
      with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


def speed(args) -> None:
  """One JSON line per model: median training-step examples/s on in-memory batches (no fitting)."""
  models, _ = _parse_lists(args)
  run = _Session(args)
  for name in models:
    with tempfile.TemporaryDirectory() as root:
      rate = _step_rate(run.build(name, 0, root), _Batches(run.cols["train"], args.batch, True, 0),
                        steps=args.steps)
    print(json.dumps(dict(model=name, library="fuxictr", train_step_ex_s=round(rate), threads=args.threads,
                          batch=args.batch, dim=args.dim, steps=args.steps, torch=run.torch_version)),
          flush=True)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  e = sub.add_parser("export", help="write recjax's ml-100k arrays (recjax environment)")
  e.add_argument("--data", required=True, help="output folder for <split>.npz and schema.json")
  e.add_argument("--preset", default="movielens")
  t = sub.add_parser("train", help="train FuxiCTR models on the exported arrays (torch + fuxictr environment)")
  t.add_argument("--data", required=True)
  t.add_argument("--models", default="dnn,dcnv2,din")
  t.add_argument("--seeds", default="0,1,2")
  t.add_argument("--out", required=True, help="JSON-lines file for the results (refused if it exists)")
  t.add_argument("--append", action="store_true", help="add rows to an existing --out file")
  t.add_argument("--dim", type=int, default=16)
  t.add_argument("--batch", type=int, default=2048)
  t.add_argument("--max_epochs", type=int, default=100)
  t.add_argument("--threads", type=int, default=2)
  sp = sub.add_parser("speed", help="time FuxiCTR's training step (torch + fuxictr environment)")
  sp.add_argument("--data", required=True)
  sp.add_argument("--models", default="dnn,dcnv2,din")
  sp.add_argument("--dim", type=int, default=16)
  sp.add_argument("--batch", type=int, default=2048)
  sp.add_argument("--steps", type=int, default=20)
  sp.add_argument("--threads", type=int, default=2)
  args = p.parse_args(argv)
  if args.cmd == "export":
    export(pathlib.Path(args.data), args.preset)
  elif args.cmd == "train":
    train(args)
  else:
    speed(args)


if __name__ == "__main__":
  main()
