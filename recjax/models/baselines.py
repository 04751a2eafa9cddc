"""CTR baselines: DNN, DCNv2 and DIN, on the same `Batch` interface as InterFormer.

All three build one flat input vector per example from the schema (our choice, as FuxiCTR does):

    x0 = [ e(sparse_1) ‖ … ‖ e(sparse_n) ‖ pool(seq_1) ‖ … ‖ pool(seq_m) ‖ dense ]     # [B, F] f32

- `e(·)`: one d-wide embedding per sparse feature (tables shared as the schema says);
- `pool(seq)`: the mean of the valid (non-padding) history embeddings, masked by `seq_len/<group>`
  (FuxiCTR's default sequence encoder, MaskedAveragePooling); an empty history pools to 0;
- `dense`: the dense features as they come (already scaled by the data source), absent if there are none.

DNN:   logit = MLP(x0)
DCNv2: logit = Linear([CrossNet(x0) ‖ MLP(x0)])   ("parallel", default)  or  MLP(CrossNet(x0)) ("stacked")
DIN:   like DNN, but each sequence feature that has a *target* — the sparse feature sharing its embedding
       table (`SequenceFeature.table_name == SparseFeature.table_name`) — is pooled by target attention
       instead of the mean: per sequence group, the targeted features are concatenated into keys
       [B, T, k·d] and their targets into the query [B, k·d], and DIN's activation unit weights each
       position. Sequence features without a target stay mean-pooled. With no targeted sequence at all
       (e.g. criteo: no sequences) DIN is exactly a DNN over the same inputs.

Defaults follow FuxiCTR 2.3's `*_default` model configs (ReLU MLPs of [500, 500, 500], no dropout,
embedding init N(0, 1e-4), Xavier-normal Dense kernels), with the low-rank (r = 32) cross layers of the
InterFormer paper's DCNv2 baseline (spec §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from recjax.data.schema import Schema, SequenceFeature
from recjax.errors import ConfigError
from recjax.nn.common import dense
from recjax.nn.dcn import CrossNetwork
from recjax.nn.embedding import Embeddings
from recjax.nn.mlp import ACTIVATIONS, MLP
from recjax.nn.target_attention import TargetAttention

KERNEL_INITS = {
    # torch.nn.init.xavier_normal_ (FuxiCTR's default for every nn.Linear): N(0, 2 / (fan_in + fan_out)).
    "xavier_normal": nn.initializers.variance_scaling(1.0, "fan_avg", "normal"),
    "lecun_normal": nn.initializers.lecun_normal(),
}
DCN_STRUCTURES = ("parallel", "stacked")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _common(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.dim = 16                    # embedding width d (set per dataset by the experiment configs)
  c.hidden = (500, 500, 500)    # MLP hidden widths; FuxiCTR DNN/DCNv2/DIN_default; a Linear -> 1 follows
  c.activation = "relu"         # MLP hidden activation (FuxiCTR: relu) | silu | prelu
  c.dropout = 0.0               # MLP dropout after each hidden activation (FuxiCTR net_dropout: 0)
  c.embed_init_std = 1e-4       # normal init std of embedding tables (FuxiCTR: 1e-4)
  c.kernel_init = "xavier_normal"  # Dense kernel init: xavier_normal (FuxiCTR) | lecun_normal
  c.dtype = "float32"           # activation dtype: float32 | bfloat16 (params stay float32)
  return c


def dnn_config() -> ml_collections.ConfigDict:
  """DNN defaults: embeddings + mean-pooled sequences + dense -> ReLU MLP [500, 500, 500] -> logit."""
  return _common("dnn")


def dcnv2_config() -> ml_collections.ConfigDict:
  """DCNv2 defaults: 3 low-rank (r = 32) cross layers in parallel with a ReLU MLP [500, 500, 500]."""
  c = _common("dcnv2")
  c.structure = "parallel"      # parallel: Linear([cross ‖ deep]) [paper baseline, FuxiCTR default] | stacked
  c.num_cross_layers = 3        # FuxiCTR DCNv2_default: 3
  c.low_rank = 32               # r of U, V (spec §4 DCNv2 baseline); 0 = full-rank W [D, D] (FuxiCTR CrossNetV2)
  return c


def din_config() -> ml_collections.ConfigDict:
  """DIN defaults: target attention (unit MLP [64], PReLU, no softmax) + ReLU MLP [500, 500, 500]."""
  c = _common("din")
  c.attention_hidden = (64,)    # FuxiCTR DIN_default attention_hidden_units: [64]
  c.attention_activation = "prelu"  # DIN paper's PReLU; FuxiCTR uses Dice (needs batch stats; not offered)
  c.attention_softmax = False   # DIN: unnormalised weights (FuxiCTR din_use_softmax: False)
  return c


def _cfg_dict(config: Any) -> dict:
  if isinstance(config, Mapping):
    return dict(config)
  if hasattr(config, "items"):
    return dict(config.items())
  return dict(vars(config))


def validate_config(cfg: Any) -> None:
  """Checks a baseline model config.

  Raises:
    ConfigError: a missing field, or a field outside its allowed values (named with the allowed ones).
  """
  cfg = _cfg_dict(cfg)
  name = cfg.get("name")
  want = {"dnn": dnn_config, "dcnv2": dcnv2_config, "din": din_config}
  if name not in want:
    raise ConfigError(f"model.name={name!r} is not one of {sorted(want)}")
  for k in want[name]():
    if k not in cfg:
      raise ConfigError(f"model config has no field {k!r}")
  if not isinstance(cfg["dim"], int) or cfg["dim"] < 1:
    raise ConfigError(f"model.dim={cfg['dim']!r} must be a positive int")
  if any((not isinstance(h, int)) or h < 1 for h in cfg["hidden"]):
    raise ConfigError(f"model.hidden={cfg['hidden']!r} must be positive ints")
  choices = {"activation": ACTIVATIONS, "kernel_init": tuple(KERNEL_INITS), "dtype": tuple(DTYPES)}
  if name == "dcnv2":
    choices["structure"] = DCN_STRUCTURES
  if name == "din":
    choices["attention_activation"] = ACTIVATIONS
  for k, allowed in choices.items():
    if cfg[k] not in allowed:
      raise ConfigError(f"model.{k}={cfg[k]!r} is not one of {allowed}")
  if not 0.0 <= float(cfg["dropout"]) < 1.0:
    raise ConfigError(f"model.dropout={cfg['dropout']!r} must be in [0, 1)")
  if name == "dcnv2":
    if not isinstance(cfg["num_cross_layers"], int) or cfg["num_cross_layers"] < 1:
      raise ConfigError(f"model.num_cross_layers={cfg['num_cross_layers']!r} must be a positive int")
    if not isinstance(cfg["low_rank"], int) or cfg["low_rank"] < 0:
      raise ConfigError(f"model.low_rank={cfg['low_rank']!r} must be a non-negative int (0 = full rank)")
    if cfg["structure"] == "stacked" and not cfg["hidden"]:
      raise ConfigError("model.hidden must be non-empty with structure='stacked'")


def sequence_mask(lengths: jax.Array, max_len: int) -> jax.Array:
  """Valid positions of left-padded sequences.

  Args:
    lengths: [B] int, valid counts in [0, max_len].
    max_len: T.
  Returns:
    [B, T] bool, True at positions t >= T − length (the most recent items are last).
  Source: the `Batch` contract (recjax/data/schema.py).
  """
  return jnp.arange(max_len)[None, :] >= (max_len - lengths.astype(jnp.int32)[:, None])


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the valid positions: x [B, T, d], mask [B, T] bool -> [B, d]; no valid position -> 0.

  Source: FuxiCTR MaskedAveragePooling (our choice of 0 for empty histories).
  """
  m = mask.astype(x.dtype)[:, :, None]
  return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def din_targets(schema: Schema) -> dict[str, list[tuple[SequenceFeature, int]]]:
  """Pairs sequence features with their DIN targets, read from the schema.

  A sequence feature's target is the first sparse feature that shares its embedding table
  (`SequenceFeature.table_name == SparseFeature.table_name`), e.g. `hist_item` (table `item_id`) with
  the sparse `item_id`.

  Returns:
    group name -> [(sequence feature, index of its target in schema.sparse)], in schema order, for every
    group with at least one targeted feature. Features without a target are left out (they are
    mean-pooled).
  Source: our choice (BARS/FuxiCTR pair `din_sequence_field` with `din_target_field` by hand per dataset).
  """
  first = {}
  for j, f in enumerate(schema.sparse):
    first.setdefault(f.table_name, j)
  out: dict[str, list[tuple[SequenceFeature, int]]] = {}
  for f in schema.sequences:
    if f.table_name in first:
      out.setdefault(f.group, []).append((f, first[f.table_name]))
  return out


class _Base(nn.Module):
  """Shared input construction; subclasses define `_head`."""
  schema: Schema
  config: Any

  def _setup_call(self):
    cfg = _cfg_dict(self.config)
    validate_config(cfg)
    sch = self.schema
    if not sch.sparse and not sch.dense and not sch.sequences:
      raise ConfigError(f"{cfg['name']} needs at least one feature (the schema is empty)")
    return cfg, DTYPES[cfg["dtype"]]

  def _inputs(self, batch, cfg, dtype, emb, attended=frozenset()):
    """x0 parts: sparse embeddings, mean-pooled sequences (except `attended` names), dense."""
    sch = self.schema
    parts, feats = [], {}
    if sch.sparse:
      e = emb.sparse(batch["sparse"])                               # [B, n, d]
      parts.append(e.reshape(e.shape[0], -1))
    for g in sch.sequence_groups:
      fs = [f for f in sch.group_features(g) if f.name not in attended]
      if not fs:
        continue
      mask = sequence_mask(batch[f"seq_len/{g}"], sch.group_max_len(g))
      for f in fs:
        pooled = masked_mean(emb.lookup(f.name, batch[f"seq/{f.name}"]), mask)   # [B, d]
        feats[f"pooled/{f.name}"] = pooled
        parts.append(pooled)
    if sch.dense:
      parts.append(batch["dense"].astype(dtype))
    return parts, feats

  def _mlp(self, cfg, dtype, features, name, activate_final=False):
    return MLP(tuple(features), dropout=cfg["dropout"], activate_final=activate_final, dtype=dtype,
               activation=cfg["activation"], kernel_init=KERNEL_INITS[cfg["kernel_init"]], name=name)


class DNN(_Base):
  """DNN (a.k.a. the "deep" tower): `logit = MLP([e(sparse) ‖ mean(seq) ‖ dense])`.

  Attributes:
    schema: the dataset's features, read by name.
    config: a ConfigDict / mapping with the fields of `dnn_config()`.

  Params: `embedding/<table>` [vocab, d] ("vocab", "embed"); `mlp/dense_<i>` kernels [in, out], the last
  one [hidden[-1], 1].
  Source: Covington et al., "Deep Neural Networks for YouTube Recommendations" (2016) for the pooled-
  embedding MLP; FuxiCTR 2.3 `DNN` for the defaults.
  """

  @nn.compact
  def __call__(self, batch: dict, *, train: bool, return_features: bool = False):
    """Scores a batch.

    Args:
      batch: the `Batch` dict (recjax/data/schema.py): `sparse` [B, n_sparse] i32 (if any), `dense`
        [B, n_dense] f32 (if any), `seq/<name>` [B, T] i32 left-padded, `seq_len/<group>` [B] i32.
      train: enables dropout (RNG stream "dropout").
      return_features: also return {"input": x0 [B, F], "pooled/<seq name>": [B, d]}.
    Returns:
      logits [B] float32 (or (logits, features)).
    Raises:
      ConfigError: an invalid config, or a schema without features.
    """
    cfg, dtype = self._setup_call()
    emb = Embeddings(self.schema, cfg["dim"], cfg["embed_init_std"], dtype, name="embedding")
    parts, feats = self._inputs(batch, cfg, dtype, emb)
    x0 = jnp.concatenate(parts, axis=-1)
    feats["input"] = x0
    logits = self._mlp(cfg, dtype, (*cfg["hidden"], 1), "mlp")(x0, train=train)[:, 0].astype(jnp.float32)
    return (logits, feats) if return_features else logits


class DCNv2(_Base):
  """DCNv2: low-rank cross network and a deep MLP over x0, "parallel" (default) or "stacked".

  - parallel: `logit = Linear([CrossNet(x0) ‖ MLP(x0)])`, the MLP's last hidden layer activated.
  - stacked:  `logit = MLP(CrossNet(x0))`, with a final Linear -> 1.
  Cross layer l: `x_{l+1} = x0 ⊙ (U_l (V_l x_l) + b_l) + x_l` (recjax.nn.dcn.CrossNetwork).

  Attributes:
    schema, config: as DNN; config fields of `dcnv2_config()`.

  Params: `embedding/*`, `cross/{down,up}_<l>` (or `full_<l>` with low_rank = 0), `deep/dense_<i>`, and
  for parallel `out` kernel [D + hidden[-1], 1] ("embed", "mlp").
  Source: Wang et al., "DCN V2: Improved Deep & Cross Network" (WWW 2021), Eq. 1, §3.2 (low rank), Fig. 2
  (stacked / parallel); spec §4 (baseline config: parallel, low rank 32); FuxiCTR 2.3 DCNv2 defaults.
  """

  @nn.compact
  def __call__(self, batch: dict, *, train: bool, return_features: bool = False):
    """As `DNN.__call__`; features add "cross" [B, F] (the cross network output)."""
    cfg, dtype = self._setup_call()
    emb = Embeddings(self.schema, cfg["dim"], cfg["embed_init_std"], dtype, name="embedding")
    parts, feats = self._inputs(batch, cfg, dtype, emb)
    x0 = jnp.concatenate(parts, axis=-1)
    feats["input"] = x0
    cross = CrossNetwork(cfg["num_cross_layers"], cfg["low_rank"] or None, dtype, name="cross")(x0)
    feats["cross"] = cross
    if cfg["structure"] == "parallel":
      h = [cross]
      if cfg["hidden"]:
        h.append(self._mlp(cfg, dtype, cfg["hidden"], "deep", activate_final=True)(x0, train=train))
      logits = dense(1, ("embed", "mlp"), dtype=dtype, kernel_init=KERNEL_INITS[cfg["kernel_init"]],
                     name="out")(jnp.concatenate(h, axis=-1))
    else:
      logits = self._mlp(cfg, dtype, (*cfg["hidden"], 1), "deep")(cross, train=train)
    logits = logits[:, 0].astype(jnp.float32)
    return (logits, feats) if return_features else logits


class DIN(_Base):
  """DIN: target attention over each sequence group's history, then an MLP.

  For each sequence group with targeted features (see `din_targets`): keys = the concatenation of the
  group's targeted history embeddings [B, T, k·d], query = the concatenation of their targets' sparse
  embeddings [B, k·d], mask from `seq_len/<group>`; `TargetAttention` (one per group) gives [B, k·d].
  These replace the mean pooling of those features in x0; untargeted sequence features stay mean-pooled,
  and the targets' own embeddings stay in x0 (as in DIN / FuxiCTR). Without any targeted sequence
  (criteo) DIN reduces to DNN on the same inputs.

  Attributes:
    schema, config: as DNN; config fields of `din_config()`.

  Params: `embedding/*`, `attention_<group>/unit/{dense_<i>, prelu_<i>}`, `mlp/dense_<i>`.
  Source: Zhou et al., "Deep Interest Network for Click-Through Rate Prediction" (KDD 2018), §4.3;
  FuxiCTR 2.3 DIN defaults (MLP [500, 500, 500] ReLU; attention unit [64], no softmax).
  """

  @nn.compact
  def __call__(self, batch: dict, *, train: bool, return_features: bool = False):
    """As `DNN.__call__`; features add "attention/<group>" [B, T] weights and "din/<group>" [B, k·d]."""
    cfg, dtype = self._setup_call()
    emb = Embeddings(self.schema, cfg["dim"], cfg["embed_init_std"], dtype, name="embedding")
    targets = din_targets(self.schema)
    attended = frozenset(f.name for pairs in targets.values() for f, _ in pairs)
    parts, feats = self._inputs(batch, cfg, dtype, emb, attended)
    sparse = batch.get("sparse")
    for g, pairs in targets.items():
      mask = sequence_mask(batch[f"seq_len/{g}"], self.schema.group_max_len(g))
      keys = jnp.concatenate([emb.lookup(f.name, batch[f"seq/{f.name}"]) for f, _ in pairs], axis=-1)
      query = jnp.concatenate([emb.lookup(self.schema.sparse[j].name, sparse[:, j]) for _, j in pairs], axis=-1)
      pooled, w = TargetAttention(tuple(cfg["attention_hidden"]), cfg["attention_activation"],
                                  cfg["attention_softmax"], dtype, name=f"attention_{g}")(query, keys, mask)
      feats[f"attention/{g}"], feats[f"din/{g}"] = w, pooled
      parts.append(pooled)
    x0 = jnp.concatenate(parts, axis=-1)
    feats["input"] = x0
    logits = self._mlp(cfg, dtype, (*cfg["hidden"], 1), "mlp")(x0, train=train)[:, 0].astype(jnp.float32)
    return (logits, feats) if return_features else logits
