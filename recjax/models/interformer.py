"""InterFormer: interleaved heterogeneous interaction learning for CTR prediction.

Paper: Zeng et al., "InterFormer: Effective Heterogeneous Interaction Learning for CTR Prediction",
arXiv 2411.09852 (v4). The implementation follows `docs/specs/interformer.md` (cited as "spec §N");
every point the paper leaves open is a field of `default_config()`.

Forward pass (spec §6), row layout `[B, tokens, d]`:

    X, S    = Preprocess(batch)                  # X: [B,n,d]; S: [B,T,d] per sequence stream (MaskNet)
    S       = [CLS = X_sum^(1)(X) ‖ S]           # [B, num_cls+T, d]; CLS keys always valid
    for l in 1..L:
      X_sum, S_sum = CrossArch_l(X, S)           # [B,num_cls,d], [B,num_cls+num_pma+num_recent,d] per stream
      X = InteractionArch_l([X ‖ S_sum])         # back to n tokens
      S = SequenceArch_l(S, X_sum)               # PFFN then MHA with RoPE; padded query rows zeroed
    X_sum, S_sum = CrossArch_final(X, S)         # head_from="recompute_final" (default)
    logit = MLP_head([flatten X_sum ‖ flatten S_sum])

Datasets without dense features have no dense token. Datasets with no sequence features skip MaskNet,
the Sequence Arch and S_sum entirely: the Interaction Arch then sees only X and the head only X_sum
(our choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from recjax.data.schema import Schema
from recjax.errors import ConfigError
from recjax.nn.attention import PMA, MultiHeadAttention
from recjax.nn.common import dense, layer_norm
from recjax.nn.dcn import DCNInteraction
from recjax.nn.dhen import DHEN, DHEN_ENSEMBLES, DHEN_MODULES
from recjax.nn.dot import DotInteraction
from recjax.nn.dropout import Dropout
from recjax.nn.embedding import Embeddings
from recjax.nn.gating import GATING_FORMS, GATING_MLP_MODES, SelfGating
from recjax.nn.lce import LCE
from recjax.nn.masknet import MaskNet
from recjax.nn.mlp import MLP
from recjax.nn.pffn import PFFN, PFFN_FORMS

# Allowed values of every categorical knob (spec §7).
CHOICES: dict[str, tuple] = {
    "gating": GATING_FORMS,
    "gating_mlp": GATING_MLP_MODES,
    "head_from": ("recompute_final", "last_layer"),
    "seq_norm": ("pre_ln", "post_ln", "none"),
    "interaction_proj": ("lce_mlp", "flatten_mlp"),
    "interaction": ("dhen", "dot", "dcnv2"),
    "dhen_ensemble": DHEN_ENSEMBLES,
    "sequence_groups": ("stack_all", "per_group"),
    "recent_select": ("last_positions", "gather_by_length"),
    "rope": ("items_only", "all_tokens", "off"),
    "pffn_form": PFFN_FORMS,
    "xsum_compress": ("lce", "mlp_flatten"),
    "cls_source": ("shared_with_layer1", "separate"),
    "dtype": ("float32", "bfloat16"),
}


def default_config() -> ml_collections.ConfigDict:
  """The InterFormer model config with the spec's defaults (spec §7 knobs, §8 hyperparameters)."""
  c = ml_collections.ConfigDict()
  c.name = "interformer"
  # Sizes.
  c.dim = 64                    # d; BARS: Amazon 64, TaobaoAd 32, KuaiVideo 64 (spec §8)
  c.num_layers = 2              # L; our choice, search {1,2,3} (industrial model: 3)
  c.num_heads = 2               # our choice, search {1,2,4,8}
  c.num_cls = 4                 # #CLS = n_sum (X_sum tokens) [paper B.2]
  c.num_pma = 2                 # #PMA seeds [paper B.2]
  c.num_recent = 2              # #recent tokens [paper B.2]
  c.head_mlp = (1024, 512, 256)  # head hidden widths, SiLU; BARS head (spec §8); a final Linear -> 1 follows
  c.dropout = 0.1               # attention weights, Sequence Arch residual branches, head MLP; our choice
  c.embed_init_std = 0.01       # normal init std of embedding tables; our choice (FuxiCTR uses 1e-4)
  c.dtype = "float32"           # activation dtype: float32 | bfloat16 (params stay float32)
  # Knob 1: gating reading. x_sigmoid = Z ⊙ σ(MLP(Z)) [our choice]; paper_literal = σ(Z ⊙ MLP(Z)).
  c.gating = "x_sigmoid"
  c.gating_mlp = "per_token"    # MLP_g per token d->d->d [our choice] | flatten (N*d -> N*d -> N*d)
  # Knob 2: head input. recompute_final = an extra Cross Arch on the layer L+1 states [our choice];
  # last_layer = the paper's literal index L (then layer L's Interaction/Sequence arches are skipped).
  c.head_from = "recompute_final"
  # Knob 3: Sequence Arch residual/norm. pre_ln: S += PFFN(LN S); S += MHA(LN S) [our choice];
  # post_ln: S = LN(S + PFFN(S)); S = LN(S + MHA(S)); none: residuals without LayerNorm.
  c.seq_norm = "pre_ln"
  # Knob 4: Interaction output projection back to n tokens. lce_mlp = LCE (n+8 -> n) then per-token MLP
  # d->d->d [our choice]; flatten_mlp = flatten -> MLP (n*d, n*d) -> reshape.
  c.interaction_proj = "lce_mlp"
  c.interaction_residual = True  # X^(l+1) += X^(l) [our choice]
  # Interaction backbone [paper: DHEN with DOT + DCN]; alternatives dot | dcnv2 (single module).
  c.interaction = "dhen"
  c.dhen_modules = ("dot", "dcn")
  c.num_dhen_layers = 1         # paper searches {1,2,3}; our default 1
  c.dhen_ensemble = "concat_linear"  # knob 5: concat on embedding axis + Linear [our choice] | sum
  c.dcn_num_layers = 2          # cross layers per DCN module [our choice]
  c.dcn_low_rank = 32           # r of U, V [paper's DCNv2 baseline]
  # Knob 6: MaskNet mask sigmoid. False = original MaskNet instance-guided mask [our choice].
  c.masknet_mask_sigmoid = False
  c.masknet_hidden = 0          # MLP_mask hidden width; 0 = kd [our choice]
  # Knob 7: stack_all = one MaskNet + Sequence Arch over all sequences [our choice] (needs one common
  # max_len); per_group = one MaskNet + Sequence Arch per aligned schema group (e.g. KuaiVideo pos/neg).
  c.sequence_groups = "stack_all"
  # Knob 8: last_positions = the last K positions of the left-padded array, padded slots zeroed [our
  # choice, BARS 'pre' padding]; gather_by_length = positions len-K..len-1 of *post-padded* data (the
  # key mask is then t < len).
  c.recent_select = "last_positions"
  # Knob 9: RoPE. items_only = rotate item tokens by their index in the padded array, CLS unrotated
  # [our choice]; all_tokens = rotate every token by its index in [CLS ‖ items]; off.
  c.rope = "items_only"
  c.rope_base = 10000.0
  # Knob 10: PFFN. appendix = (S·Wᵀ)·X_sum [paper appendix]; mlp = S·MLP(flatten X_sum) as d×d.
  c.pffn_form = "appendix"
  # Knob 11: X_sum compression. lce = token-axis linear n -> num_cls [our choice]; mlp_flatten.
  c.xsum_compress = "lce"
  # Knob 14: params producing the CLS tokens. shared_with_layer1 = layer 1's X_sum module [paper's
  # reuse of the symbol X_sum^(1)]; separate = own Compress + Gating.
  c.cls_source = "shared_with_layer1"
  # Not model knobs (read by metrics/training): gauc_weight (12), ne_base_rate (13), lr, batch size,
  # embedding L2.
  return c


def _get(cfg: Any, key: str) -> Any:
  if isinstance(cfg, Mapping):
    if key not in cfg:
      raise ConfigError(f"model config has no field {key!r}")
    return cfg[key]
  if not hasattr(cfg, key):
    raise ConfigError(f"model config has no field {key!r}")
  return getattr(cfg, key)


def validate_config(cfg: Any) -> None:
  """Checks every categorical knob and the size constraints.

  Raises:
    ConfigError: naming the field, its value and the allowed values / constraint.
  """
  for k, allowed in CHOICES.items():
    v = _get(cfg, k)
    if v not in allowed:
      raise ConfigError(f"model.{k}={v!r} is not one of {allowed}")
  for k in ("dim", "num_layers", "num_heads", "num_cls", "dcn_num_layers", "dcn_low_rank"):
    v = _get(cfg, k)
    if not isinstance(v, int) or v < 1:
      raise ConfigError(f"model.{k}={v!r} must be a positive int")
  for k in ("num_pma", "num_recent", "num_dhen_layers", "masknet_hidden"):
    v = _get(cfg, k)
    if not isinstance(v, int) or v < 0:
      raise ConfigError(f"model.{k}={v!r} must be a non-negative int")
  if _get(cfg, "interaction") == "dhen":
    if _get(cfg, "num_dhen_layers") < 1:
      raise ConfigError("model.num_dhen_layers must be >= 1 with interaction='dhen'")
    for m in _get(cfg, "dhen_modules"):
      if m not in DHEN_MODULES:
        raise ConfigError(f"model.dhen_modules entry {m!r} is not one of {DHEN_MODULES}")
  d, h = _get(cfg, "dim"), _get(cfg, "num_heads")
  if d % h:
    raise ConfigError(f"model.dim={d} must be divisible by model.num_heads={h}")
  if _get(cfg, "rope") != "off" and (d // h) % 2:
    raise ConfigError(f"model.rope={_get(cfg, 'rope')!r} needs an even head width dim/num_heads, got {d // h}")
  if not 0.0 <= float(_get(cfg, "dropout")) < 1.0:
    raise ConfigError(f"model.dropout={_get(cfg, 'dropout')!r} must be in [0, 1)")


class _XSummary(nn.Module):
  """`X_sum = Gating(Compress(X))`: [B, n, d] -> [B, num_out, d] (spec §3.1)."""
  num_out: int
  compress: str
  gating: str
  gating_mlp: str
  dtype: Any

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    if self.compress == "lce":
      z = LCE(self.num_out, dtype=self.dtype, name="compress")(x)
    else:
      z = MLP((self.num_out * d, self.num_out * d), dtype=self.dtype, name="compress")(
          x.reshape(b, n * d)).reshape(b, self.num_out, d)
    return SelfGating(self.gating, self.gating_mlp, self.dtype, name="gating")(z)


class _SSummary(nn.Module):
  """`S_sum = Gating([S_CLS ‖ S_PMA ‖ S_recent])`: [B, C+T, d] -> [B, C+P+K, d] (spec §3.3)."""
  num_cls: int
  num_pma: int
  num_recent: int
  num_heads: int
  recent_select: str
  gating: str
  gating_mlp: str
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, s, mask, lengths, *, train):
    c, k = self.num_cls, self.num_recent
    parts = [s[:, :c]]
    if self.num_pma:
      parts.append(PMA(self.num_pma, self.num_heads, self.dropout, self.dtype, name="pma")(s, mask, train=train))
    if k:
      parts.append(recent_tokens(s[:, c:], mask[:, c:], lengths, k, self.recent_select))
    return SelfGating(self.gating, self.gating_mlp, self.dtype, name="gating")(jnp.concatenate(parts, axis=1))


def recent_tokens(items: jax.Array, item_mask: jax.Array, lengths: jax.Array, k: int, mode: str) -> jax.Array:
  """The K most recent item tokens, padded slots zeroed.

  Args:
    items: [B, T, d] item tokens; item_mask: [B, T] bool valid positions; lengths: [B] int valid counts.
    k: K. mode: "last_positions" (left-padded: the last K positions) or "gather_by_length" (post-padded:
      positions len-K .. len-1).
  Returns:
    [B, K, d], oldest first, most recent last; slots without a valid item are 0.
  Source: spec §3.3 [official code, BARS 'pre' padding]; zeroing is our choice.
  """
  b, t, d = items.shape
  if mode == "last_positions":
    if t < k:
      items = jnp.pad(items, ((0, 0), (k - t, 0), (0, 0)))
      item_mask = jnp.pad(item_mask, ((0, 0), (k - t, 0)))
    r, m = items[:, -k:], item_mask[:, -k:]
  else:
    idx = lengths[:, None] - k + jnp.arange(k)[None, :]
    m = (idx >= 0) & (idx < t)
    r = jnp.take_along_axis(items, jnp.clip(idx, 0, max(t - 1, 0))[:, :, None], axis=1) if t else \
        jnp.zeros((b, k, d), items.dtype)
  return r * m[:, :, None].astype(r.dtype)


class _InteractionArch(nn.Module):
  """`X' = Proj(Interaction([X ‖ S_sum])) (+ X)`: [B, n+m, d] -> [B, n, d] (spec §4)."""
  n_out: int
  cfg: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, s_sum):
    cfg = self.cfg
    z = x if s_sum is None else jnp.concatenate([x, s_sum], axis=1)
    b, n_in, d = z.shape
    kind = cfg["interaction"]
    if kind == "dhen":
      z = DHEN(cfg["num_dhen_layers"], tuple(cfg["dhen_modules"]), cfg["dhen_ensemble"], cfg["dcn_num_layers"],
               cfg["dcn_low_rank"], self.dtype, name="dhen")(z)
    elif kind == "dot":
      z = DotInteraction(dtype=self.dtype, name="dot")(z)
    else:
      z = DCNInteraction(num_layers=cfg["dcn_num_layers"], low_rank=cfg["dcn_low_rank"], dtype=self.dtype,
                         name="dcn")(z)
    if cfg["interaction_proj"] == "lce_mlp":
      y = LCE(self.n_out, dtype=self.dtype, name="proj_lce")(z)
      y = MLP((d, d), dtype=self.dtype, name="proj_mlp")(y)
    else:
      y = MLP((self.n_out * d, self.n_out * d), dtype=self.dtype, name="proj_mlp")(
          z.reshape(b, n_in * d)).reshape(b, self.n_out, d)
    return y + x if cfg["interaction_residual"] else y


class _SequenceArch(nn.Module):
  """`S' = MHA(PFFN(X_sum, S))` with residuals/norms per `seq_norm`; padded query rows zeroed (spec §5)."""
  cfg: Any
  dtype: Any

  @nn.compact
  def __call__(self, s, x_sum, mask, positions, rotate, *, train):
    cfg = self.cfg
    norm = cfg["seq_norm"]
    dropout = Dropout(cfg["dropout"])

    def drop(h):
      return dropout(h, train=train)

    pffn = PFFN(cfg["pffn_form"], self.dtype, name="pffn")
    mha = MultiHeadAttention(cfg["num_heads"], dropout=cfg["dropout"], rope_base=cfg["rope_base"],
                             dtype=self.dtype, name="mha")

    def attend(h):
      return mha(h, h, mask, train=train, q_positions=positions, k_positions=positions,
                 q_rotate=rotate, k_rotate=rotate)

    if norm == "pre_ln":
      s = s + drop(pffn(layer_norm(dtype=self.dtype, name="ln_pffn")(s), x_sum))
      s = s + drop(attend(layer_norm(dtype=self.dtype, name="ln_mha")(s)))
    elif norm == "post_ln":
      s = layer_norm(dtype=self.dtype, name="ln_pffn")(s + drop(pffn(s, x_sum)))
      s = layer_norm(dtype=self.dtype, name="ln_mha")(s + drop(attend(s)))
    else:
      s = s + drop(pffn(s, x_sum))
      s = s + drop(attend(s))
    return s * mask[:, :, None].astype(s.dtype)


class InterFormer(nn.Module):
  """InterFormer CTR model (spec §2-§6).

  Attributes:
    schema: the dataset's features; the model reads `batch` by these names.
    config: a ConfigDict (or mapping) with the fields of `default_config()`.

  Raises (at init/apply):
    ConfigError: an unknown knob value (naming the field and allowed values), a schema with neither
      dense nor sparse features, or sequence_groups="stack_all" with groups of different max_len.
  """
  schema: Schema
  config: Any

  def _streams(self, cfg):
    """Sequence streams: (name, features, length-array keys)."""
    groups = self.schema.sequence_groups
    if not groups:
      return []
    if cfg["sequence_groups"] == "per_group":
      return [(g, self.schema.group_features(g), (g,)) for g in groups]
    lens = {self.schema.group_max_len(g) for g in groups}
    if len(lens) > 1:
      raise ConfigError(
          f"model.sequence_groups='stack_all' needs all sequences to share one max_len, got groups "
          f"{ {g: self.schema.group_max_len(g) for g in groups} }; use sequence_groups='per_group'")
    return [("all", self.schema.sequences, groups)]

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool, return_features: bool = False):
    """Scores a batch.

    Args:
      batch: the `Batch` dict (recjax/data/schema.py): `dense` [B, n_dense] f32 (if the schema has dense
        features), `sparse` [B, n_sparse] i32, `seq/<name>` [B, T] i32 left-padded with 0,
        `seq_len/<group>` [B] i32.
      train: enables dropout (RNG stream "dropout").
      return_features: also return a dict of intermediate tensors:
        `x/<l>` [B, n, d]: the non-sequence tokens entering layer l+1 (l = 0..L-1) and, for l = L, the
          final state read by CrossArch_final (recompute_final only);
        `s/<l>/<stream>` [B, num_cls+T, d]: the same for each sequence stream ("all" for stack_all,
          else the group name); `mask/<stream>` [B, num_cls+T] bool: valid positions (CLS first);
        `x_sum` [B, num_cls, d], `s_sum` [B, G*(num_cls+num_pma+num_recent), d] (absent without
          sequences): the head's summaries; `head_input` [B, F].
    Returns:
      logits [B] float32, or (logits, features) with return_features.
    """
    cfg = {k: v for k, v in (self.config.items() if hasattr(self.config, "items") else vars(self.config).items())}
    validate_config(cfg)
    dtype = jnp.bfloat16 if cfg["dtype"] == "bfloat16" else jnp.float32
    d, c, L = cfg["dim"], cfg["num_cls"], cfg["num_layers"]
    sch = self.schema
    if not sch.sparse and not sch.dense:
      raise ConfigError("InterFormer needs at least one dense or sparse feature (schema has neither)")
    feats: dict[str, jax.Array] = {}
    emb = Embeddings(sch, d, cfg["embed_init_std"], dtype, name="embedding")

    # Preprocess (spec §2): one dense token, one token per sparse feature.
    toks = []
    if sch.dense:
      toks.append(dense(d, ("mlp", "embed"), dtype=dtype, name="dense_token")(
          batch["dense"].astype(dtype))[:, None])
    if sch.sparse:
      toks.append(emb.sparse(batch["sparse"]))
    x = jnp.concatenate(toks, axis=1)
    n = x.shape[1]

    # Sequences: MaskNet per stream, item key mask from lengths.
    streams = []
    for name, sfeats, len_keys in self._streams(cfg):
      t = sfeats[0].max_len
      s_cat = jnp.concatenate([emb.lookup(f.name, batch[f"seq/{f.name}"]) for f in sfeats], axis=-1)
      lengths = batch[f"seq_len/{len_keys[0]}"]
      for g in len_keys[1:]:
        lengths = jnp.maximum(lengths, batch[f"seq_len/{g}"])
      lengths = lengths.astype(jnp.int32)
      pos = jnp.arange(t)[None, :]
      if cfg["recent_select"] == "last_positions":
        item_mask = pos >= (t - lengths[:, None])
      else:
        item_mask = pos < lengths[:, None]
      s = MaskNet(d, cfg["masknet_hidden"] or None, cfg["masknet_mask_sigmoid"], dtype, name=f"masknet_{name}")(s_cat)
      s = s * item_mask[:, :, None].astype(s.dtype)
      mask = jnp.concatenate([jnp.ones((s.shape[0], c), bool), item_mask], axis=1)
      streams.append({"name": name, "t": t, "s": s, "mask": mask, "lengths": lengths})

    def xsum_mod(l):
      return _XSummary(c, cfg["xsum_compress"], cfg["gating"], cfg["gating_mlp"], dtype, name=f"cross_{l}_xsum")

    def ssum_mod(l, stream):
      return _SSummary(c, cfg["num_pma"], cfg["num_recent"], cfg["num_heads"], cfg["recent_select"], cfg["gating"],
                       cfg["gating_mlp"], cfg["dropout"], dtype, name=f"cross_{l}_ssum_{stream}")

    xsum_mods = [xsum_mod(l) for l in range(L)]
    if streams:
      cls_mod = xsum_mods[0] if cfg["cls_source"] == "shared_with_layer1" else xsum_mod("cls")
      cls = cls_mod(x)
      for st in streams:
        st["s"] = jnp.concatenate([cls.astype(dtype), st["s"].astype(dtype)], axis=1)
        feats[f"mask/{st['name']}"] = st["mask"]
        tt = st["t"]
        if cfg["rope"] == "items_only":
          st["pos"] = jnp.concatenate([jnp.zeros((c,), jnp.int32), jnp.arange(tt, dtype=jnp.int32)])
          st["rot"] = jnp.concatenate([jnp.zeros((c,), bool), jnp.ones((tt,), bool)])
        elif cfg["rope"] == "all_tokens":
          st["pos"], st["rot"] = jnp.arange(c + tt, dtype=jnp.int32), None
        else:
          st["pos"], st["rot"] = None, None

    def cross(l, x):
      x_sum = xsum_mods[l](x) if isinstance(l, int) else xsum_mod(l)(x)
      s_sums = [ssum_mod(l, st["name"])(st["s"], st["mask"], st["lengths"], train=train) for st in streams]
      return x_sum, (jnp.concatenate(s_sums, axis=1) if s_sums else None)

    for l in range(L):
      feats[f"x/{l}"] = x
      for st in streams:
        feats[f"s/{l}/{st['name']}"] = st["s"]
      x_sum, s_sum = cross(l, x)
      if l == L - 1 and cfg["head_from"] == "last_layer":
        break  # layer L's Interaction/Sequence arches would never reach the head (spec §6)
      x_next = _InteractionArch(n, cfg, dtype, name=f"interaction_{l}")(x, s_sum)
      for st in streams:
        st["s"] = _SequenceArch(cfg, dtype, name=f"sequence_{l}_{st['name']}")(
            st["s"], x_sum, st["mask"], st["pos"], st["rot"], train=train)
      x = x_next

    if cfg["head_from"] == "recompute_final":
      feats[f"x/{L}"] = x
      for st in streams:
        feats[f"s/{L}/{st['name']}"] = st["s"]
      x_sum, s_sum = cross("final", x)

    b = x.shape[0]
    head_in = [x_sum.reshape(b, -1)]
    feats["x_sum"] = x_sum
    if s_sum is not None:
      head_in.append(s_sum.reshape(b, -1))
      feats["s_sum"] = s_sum
    h = jnp.concatenate(head_in, axis=-1)
    feats["head_input"] = h
    logits = MLP((*cfg["head_mlp"], 1), dropout=cfg["dropout"], dtype=dtype, name="head")(h, train=train)
    logits = logits[:, 0].astype(jnp.float32)
    return (logits, feats) if return_features else logits
