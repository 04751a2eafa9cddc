"""Baselines (DNN, DCNv2, DIN): hand-computed cross network / attention / pooling, schema variants, grads."""

import batches
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.errors import ConfigError
from recjax.models import DEFAULT_CONFIGS, build_model
from recjax.models.baselines import din_targets, sequence_mask
from recjax.nn.common import LOGICAL_AXES
from recjax.nn.common import dense
from recjax.nn.target_attention import TargetAttention, UnitInputDense

B, T, D = 4, 5, 4
MODELS = ("dnn", "dcnv2", "din")


def tiny(name, **kw):
  c = DEFAULT_CONFIGS[name]()
  c.dim, c.hidden = D, (8, 6)
  if name == "dcnv2":
    c.low_rank, c.num_cross_layers = 3, 2
  if name == "din":
    c.attention_hidden = (5,)
  c.update(kw)
  return c


def schema(dense=True, seqs=True, groups=1):
  """user/item/cate sparse; group g has hist item+cate (targeted) and, in group 0, an untargeted rating."""
  sparse = (SparseFeature("user", 20), SparseFeature("item", 30), SparseFeature("cate", 6))
  sequences = ()
  if seqs:
    sequences = (SequenceFeature("h_item", 30, T, table="item"), SequenceFeature("h_cate", 6, T, table="cate"),
                 SequenceFeature("h_rating", 6, T))
    for g in range(1, groups):
      sequences += (SequenceFeature(f"g{g}_item", 30, T + g, group=f"g{g}", table="item"),
                    SequenceFeature(f"g{g}_cate", 6, T + g, group=f"g{g}", table="cate"))
  return Schema(sparse=sparse, dense=("x1", "x2") if dense else (), sequences=sequences)


def make_batch(sch, lengths=None, seed=0):
  return batches.make_batch(sch, B, lengths=lengths, seed=seed, max_sparse_id=6)


def random_padding(sch, batch, seed=99):
  """A copy of `batch` whose padded sequence slots hold random ids instead of 0."""
  rng = np.random.default_rng(seed)
  out = dict(batch)
  for f in sch.sequences:
    t = f.max_len
    pad = np.arange(t)[None] < t - np.asarray(batch[f"seq_len/{f.group}"])[:, None]
    ids = np.array(batch[f"seq/{f.name}"])
    ids[pad] = rng.integers(1, f.vocab_size, pad.sum())
    out[f"seq/{f.name}"] = jnp.asarray(ids)
  return out


def init(cfg, sch, batch):
  model = build_model(sch, cfg)
  params = nn.unbox(model.init(jax.random.key(1), batch, train=False))["params"]
  fn = lambda p, b: model.apply({"params": p}, b, train=False, return_features=True)  # eager: tiny models compile slower than they run
  return model, params, fn


def np_mlp(x, p, n, act=lambda z: np.maximum(z, 0.0), activate_final=False):
  for i in range(n):
    x = x @ np.asarray(p[f"dense_{i}"]["kernel"]) + np.asarray(p[f"dense_{i}"]["bias"])
    if i < n - 1 or activate_final:
      x = act(x)
  return x


def test_dcnv2_cross_network_and_logit_match_numpy():
  sch = schema()
  batch = make_batch(sch, lengths=[0, 2, 5, 3])
  for structure in ("parallel", "stacked"):
    _, p, fn = init(tiny("dcnv2", structure=structure), sch, batch)
    logits, f = fn(p, batch)
    x0 = np.asarray(f["input"], np.float64)
    assert x0.shape == (B, 3 * D + 3 * D + 2)  # 3 sparse, 3 pooled sequences, 2 dense
    x = x0
    for l in range(2):  # x_{l+1} = x0 ⊙ (U (V x_l) + b) + x_l
      v = x @ np.asarray(p["cross"][f"down_{l}"]["kernel"])
      x = x0 * (v @ np.asarray(p["cross"][f"up_{l}"]["kernel"]) + np.asarray(p["cross"][f"up_{l}"]["bias"])) + x
    np.testing.assert_allclose(f["cross"], x, rtol=1e-5, atol=1e-6)
    if structure == "parallel":
      deep = np_mlp(x0, p["deep"], 2, activate_final=True)
      want = np.concatenate([x, deep], -1) @ np.asarray(p["out"]["kernel"]) + np.asarray(p["out"]["bias"])
    else:
      want = np_mlp(x, p["deep"], 3)
    np.testing.assert_allclose(logits, want[:, 0], rtol=1e-4, atol=1e-6)


def test_dcnv2_full_rank():
  sch = schema(seqs=False)
  batch = make_batch(sch)
  _, p, fn = init(tiny("dcnv2", low_rank=0, num_cross_layers=1), sch, batch)
  _, f = fn(p, batch)
  x0 = np.asarray(f["input"], np.float64)
  w = p["cross"]["full_0"]
  np.testing.assert_allclose(f["cross"], x0 * (x0 @ np.asarray(w["kernel"]) + np.asarray(w["bias"])) + x0,
                             rtol=1e-5, atol=1e-6)


def test_target_attention_hand_set_case():
  # Unit MLP: 8 -> 2 (ReLU) -> 1 on [h, q, h-q, h*q] with d = 2.
  q = jnp.array([[1.0, 2.0]])
  keys = jnp.array([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]])
  mask = jnp.array([[False, True, True]])
  k0 = np.zeros((8, 2), np.float32)
  k0[0, 0] = 1.0      # unit 0 = h_0 + (h*q)_1
  k0[7, 0] = 1.0
  k0[4, 1] = -1.0     # unit 1 = relu(-(h-q)_0 + 0.5)
  params = {"unit": {"dense_0": {"kernel": k0, "bias": np.array([0.0, 0.5], np.float32)},
                     "dense_1": {"kernel": np.array([[2.0], [1.0]], np.float32), "bias": np.array([0.1], np.float32)}}}
  att = TargetAttention(hidden=(2,), activation="relu")
  pooled, w = att.apply({"params": params}, q, keys, mask)
  # h=[0,1]: u0 = 0 + 1*2 = 2, u1 = relu(-(0-1)+0.5) = 1.5 -> w = 4 + 1.5 + 0.1 = 5.6
  # h=[2,-1]: u0 = 2 + (-1*2) = 0, u1 = relu(-(2-1)+0.5) = 0 -> w = 0.1; h=[1,0] is padding -> 0.
  np.testing.assert_allclose(w, [[0.0, 5.6, 0.1]], rtol=1e-6)
  np.testing.assert_allclose(pooled, [[5.6 * 0 + 0.1 * 2, 5.6 * 1 + 0.1 * -1]], rtol=1e-6)
  # PReLU: negative pre-activations are scaled by the (initial) slope 0.25 instead of zeroed.
  params["unit"]["prelu_0"] = np.full((2,), 0.25, np.float32)
  _, w = TargetAttention(hidden=(2,), activation="prelu").apply({"params": params}, q, keys, mask)
  np.testing.assert_allclose(w, [[0.0, 5.6, 2 * 0 + 1 * (0.25 * -0.5) + 0.1]], rtol=1e-6)
  # Softmax variant: masked softmax over the valid positions.
  unit = {k: v for k, v in params["unit"].items() if k != "prelu_0"}
  _, w = TargetAttention(hidden=(2,), activation="relu", use_softmax=True).apply({"params": {"unit": unit}}, q, keys,
                                                                                 mask)
  e = np.exp([5.6, 0.1])
  np.testing.assert_allclose(w, [[0.0, *(e / e.sum())]], rtol=1e-5)


def test_unit_input_dense_equals_dense_over_the_concatenation():
  # Reference: one Dense over the materialised [h, q, h - q, h * q], with the same params.
  rng = np.random.default_rng(0)
  keys = jnp.asarray(rng.standard_normal((3, 5, 4)), jnp.float32)
  query = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)
  layer = UnitInputDense(6)
  params = layer.init(jax.random.key(1), (keys, query))["params"]
  ref_layer = dense(6)
  q = jnp.broadcast_to(query[:, None], keys.shape)
  concat = jnp.concatenate([keys, q, keys - q, keys * q], axis=-1)
  ref_params = ref_layer.init(jax.random.key(1), concat)["params"]
  # same initialisation as a plain Dense (checkpoints and seeds are unchanged by the factoring)
  np.testing.assert_array_equal(nn.unbox(params["kernel"]), nn.unbox(ref_params["kernel"]))
  params = {"kernel": nn.unbox(params["kernel"]),
            "bias": jnp.asarray(rng.standard_normal(6), jnp.float32)}
  got = layer.apply({"params": params}, (keys, query))
  want = ref_layer.apply({"params": params}, concat)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_din_padding_gets_zero_weight_and_padded_ids_do_not_matter():
  sch = schema(groups=2)
  b0 = make_batch(sch, lengths=[0, 2, 5, 3], seed=3)
  b1 = random_padding(sch, b0)
  assert any(not np.array_equal(b0[k], b1[k]) for k in b0 if k.startswith("seq/"))
  _, p, fn = init(tiny("din"), sch, b0)
  l0, f0 = fn(p, b0)
  l1, _ = fn(p, b1)
  np.testing.assert_array_equal(l0, l1)
  for g in sch.sequence_groups:
    w = np.asarray(f0[f"attention/{g}"])
    valid = np.asarray(sequence_mask(b0[f"seq_len/{g}"], sch.group_max_len(g)))
    assert w.shape == valid.shape and np.all(w[~valid] == 0.0) and np.all(w[valid] != 0.0)
  # The pooled output is Σ_t w_t [e(h_item_t) ‖ e(h_cate_t)] with weights from the model.
  e = p["embedding"]
  keys = np.concatenate([np.asarray(e["item"])[b0["seq/h_item"]], np.asarray(e["cate"])[b0["seq/h_cate"]]], -1)
  np.testing.assert_allclose(f0["din/hist"], np.einsum("bt,btd->bd", f0["attention/hist"], keys),
                             rtol=1e-5, atol=1e-9)


def test_din_targets_read_from_schema():
  sch = schema(groups=3)
  t = din_targets(sch)
  assert list(t) == ["hist", "g1", "g2"]
  assert [(f.name, j) for f, j in t["hist"]] == [("h_item", 1), ("h_cate", 2)]  # h_rating: no target
  assert [(f.name, j) for f, j in t["g2"]] == [("g2_item", 1), ("g2_cate", 2)]
  assert din_targets(schema(seqs=False)) == {}


def test_dnn_mean_pooling_ignores_padding():
  sch = schema()
  b0 = make_batch(sch, lengths=[0, 1, 5, 3], seed=5)
  b1 = random_padding(sch, b0)
  _, p, fn = init(tiny("dnn", embed_init_std=0.1), sch, b0)
  l0, f0 = fn(p, b0)
  l1, _ = fn(p, b1)
  np.testing.assert_array_equal(l0, l1)
  table = np.asarray(p["embedding"]["item"])
  ids = np.asarray(b0["seq/h_item"])
  for i, n in enumerate([0, 1, 5, 3]):
    want = table[ids[i, T - n:]].mean(0) if n else np.zeros(D)
    np.testing.assert_allclose(f0["pooled/h_item"][i], want, rtol=1e-5, atol=1e-7)
  # x0 layout: sparse embeddings, pooled sequences, dense as-is.
  x0 = np.asarray(f0["input"])
  np.testing.assert_allclose(x0[:, D:2 * D], table[np.asarray(b0["sparse"])[:, 1]], rtol=1e-6)
  np.testing.assert_array_equal(x0[:, -2:], b0["dense"])
  np.testing.assert_allclose(l0, np_mlp(x0.astype(np.float64), p["mlp"], 3)[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dense,seqs,groups", [(False, True, 1), (True, False, 1), (False, False, 1),
                                               (True, True, 3)])
def test_schema_variants_input_width(dense, seqs, groups):
  sch = schema(dense=dense, seqs=seqs, groups=groups)
  batch = make_batch(sch, seed=2)
  n_seq = len(sch.sequences)
  for name in MODELS:
    _, p, fn = init(tiny(name), sch, batch)
    logits, f = fn(p, batch)
    assert logits.shape == (B,) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
    assert f["input"].shape == (B, 3 * D + n_seq * D + (2 if dense else 0))
    if name == "din":
      assert sorted(k for k in p if k.startswith("attention_")) == (
          sorted(f"attention_{g}" for g in sch.sequence_groups) if seqs else [])


def test_din_without_sequences_is_dnn():
  sch = schema(seqs=False, dense=False)
  batch = make_batch(sch)
  _, p, fn_din = init(tiny("din"), sch, batch)
  _, p_dnn, fn_dnn = init(tiny("dnn"), sch, batch)
  assert jax.tree.structure(p) == jax.tree.structure(p_dnn)
  np.testing.assert_array_equal(fn_din(p, batch)[0], fn_dnn(p, batch)[0])


@pytest.mark.parametrize("name", MODELS)
def test_gradient_reaches_every_parameter_and_axes_are_named(name):
  sch = schema(groups=2)
  batch = make_batch(sch, lengths=[1, 2, 5, 3], seed=7)
  model = build_model(sch, tiny(name, activation="prelu"))
  boxed = model.init(jax.random.key(0), batch, train=False)["params"]
  for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    assert isinstance(leaf, nn.LogicallyPartitioned)
    assert len(leaf.names) == leaf.value.ndim and all(a in LOGICAL_AXES for a in leaf.names if a is not None)
  params = nn.unbox(boxed)
  labels = jnp.array([1.0, 0.0, 1.0, 0.0])

  def loss(p):
    z = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(1)})
    return jnp.mean(jnp.logaddexp(0.0, z) - labels * z)

  grads = jax.grad(loss)(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0.0, f"{name}: zero gradient at {jax.tree_util.keystr(path)}"


def test_config_errors():
  sch = schema()
  batch = make_batch(sch)
  with pytest.raises(ConfigError, match="structure"):
    build_model(sch, tiny("dcnv2", structure="sideways")).init(jax.random.key(0), batch, train=False)
  with pytest.raises(ConfigError, match="attention_activation"):
    build_model(sch, tiny("din", attention_activation="dice")).init(jax.random.key(0), batch, train=False)
  with pytest.raises(ConfigError, match="activation"):
    build_model(sch, tiny("dnn", activation="tanh")).init(jax.random.key(0), batch, train=False)
  # build_model itself validates (before init), so scripts fail before any data work.
  with pytest.raises(ConfigError, match="hidden"):
    build_model(sch, tiny("dnn", hidden=(64, -1)))
