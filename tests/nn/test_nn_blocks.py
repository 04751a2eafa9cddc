"""Value tests of the recjax.nn blocks against numpy hand computations and closed forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.errors import ConfigError
from recjax.nn.common import LOGICAL_AXES
from recjax.nn.dcn import CrossNetwork, DCNInteraction
from recjax.nn.dhen import DHEN, DHENLayer
from recjax.nn.dot import DotInteraction, pairwise_dots
from recjax.nn.embedding import Embeddings
from recjax.nn.gating import SelfGating
from recjax.nn.lce import LCE
from recjax.nn.masknet import MaskNet
from recjax.nn.mlp import MLP
from recjax.nn.pffn import PFFN

RNG = np.random.default_rng(0)


def _init(mod, *args, **kw):
  v = mod.init(jax.random.key(0), *args, **kw)
  return nn.meta.unbox(v["params"])


def _np(p):
  return jax.tree.map(np.asarray, p)


def _silu(x):
  return x / (1 + np.exp(-x))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _axes_names(variables):
  names = set()
  for leaf in jax.tree.leaves(variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    assert isinstance(leaf, nn.LogicallyPartitioned), "every param must carry logical axis names"
    assert len(leaf.names) == leaf.value.ndim
    names |= {n for n in leaf.names if n is not None}
  return names


def test_mlp_matches_numpy():
  x = RNG.normal(size=(3, 5)).astype(np.float32)
  p = _np(_init(MLP((7, 4)), x))
  got = np.asarray(MLP((7, 4)).apply({"params": p}, x))
  h = _silu(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
  want = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mlp_dropout_only_in_train():
  x = jnp.ones((4, 6))
  m = MLP((16, 3), dropout=0.5)
  v = m.init(jax.random.key(0), x)
  a = m.apply(v, x, train=False)
  b = m.apply(v, x, train=False)
  c = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_lce_is_token_axis_matmul():
  x = RNG.normal(size=(2, 5, 3)).astype(np.float32)
  p = _np(_init(LCE(4), x))
  assert p["kernel"].shape == (4, 5)
  got = np.asarray(LCE(4).apply({"params": p}, x))
  want = np.stack([p["kernel"] @ x[b] for b in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _zero(p):
  return jax.tree.map(np.zeros_like, p)


@pytest.mark.parametrize("mode", ["per_token", "flatten"])
def test_x_sigmoid_gating_with_zero_mlp_is_half(mode):
  z = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  g = SelfGating("x_sigmoid", mode)
  p = _zero(_np(_init(g, z)))
  np.testing.assert_allclose(np.asarray(g.apply({"params": p}, z)), 0.5 * z, rtol=1e-6)


def test_gating_closed_forms():
  z = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  for form in ("x_sigmoid", "paper_literal"):
    g = SelfGating(form)
    p = _np(_init(g, z))
    m = p["mlp"]
    h = _silu(z @ m["dense_0"]["kernel"] + m["dense_0"]["bias"]) @ m["dense_1"]["kernel"] + m["dense_1"]["bias"]
    want = z * _sigmoid(h) if form == "x_sigmoid" else _sigmoid(z * h)
    np.testing.assert_allclose(np.asarray(g.apply({"params": p}, z)), want, rtol=1e-5, atol=1e-6)


def test_gating_unknown_form():
  with pytest.raises(ConfigError, match="gating"):
    SelfGating("nope").init(jax.random.key(0), jnp.ones((1, 2, 3)))


def test_pairwise_dots_vs_numpy():
  x = RNG.normal(size=(2, 5, 3)).astype(np.float32)
  got = np.asarray(pairwise_dots(jnp.asarray(x)))
  want = np.array([[x[b, i] @ x[b, j] for i in range(5) for j in range(i + 1, 5)] for b in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dot_interaction_vs_numpy():
  x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  p = _np(_init(DotInteraction(), x))
  got = np.asarray(DotInteraction().apply({"params": p}, x))
  pairs = np.array([[x[b, i] @ x[b, j] for i in range(4) for j in range(i + 1, 4)] for b in range(2)])
  want = (pairs @ p["proj"]["kernel"] + p["proj"]["bias"]).reshape(2, 4, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [3, None])
def test_cross_network_vs_numpy(rank):
  x0 = RNG.normal(size=(4, 6)).astype(np.float32)
  m = CrossNetwork(num_layers=2, low_rank=rank)
  p = _np(_init(m, x0))
  got = np.asarray(m.apply({"params": p}, x0))
  x = x0
  for i in range(2):
    if rank is None:
      h = x @ p[f"full_{i}"]["kernel"] + p[f"full_{i}"]["bias"]
    else:
      h = (x @ p[f"down_{i}"]["kernel"]) @ p[f"up_{i}"]["kernel"] + p[f"up_{i}"]["bias"]
    x = x0 * h + x
  np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-5)


def test_dcn_interaction_shape():
  x = jnp.asarray(RNG.normal(size=(2, 5, 4)), jnp.float32)
  m = DCNInteraction(num_out=3, low_rank=2)
  assert m.apply(m.init(jax.random.key(0), x), x).shape == (2, 3, 4)


@pytest.mark.parametrize("ensemble", ["concat_linear", "sum"])
def test_dhen_layer_vs_numpy(ensemble):
  x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  m = DHENLayer(("dot", "dcn"), ensemble, dcn_layers=1, dcn_low_rank=2)
  p = _np(_init(m, x))
  dot = DotInteraction().apply({"params": p["dot_0"]}, x)
  dcn = DCNInteraction(num_layers=1, low_rank=2).apply({"params": p["dcn_1"]}, x)
  if ensemble == "concat_linear":
    y = np.concatenate([dot, dcn], -1) @ p["ensemble"]["kernel"] + p["ensemble"]["bias"]
  else:
    y = np.asarray(dot) + np.asarray(dcn)
  y = y + x
  mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  want = (y - mu) / np.sqrt(var + 1e-6) * p["ln"]["scale"] + p["ln"]["bias"]
  np.testing.assert_allclose(np.asarray(m.apply({"params": p}, x)), want, rtol=1e-4, atol=1e-4)


def test_dhen_stack_shape_and_errors():
  x = jnp.ones((2, 5, 4))
  assert DHEN(num_layers=2, dcn_low_rank=2).apply(DHEN(num_layers=2, dcn_low_rank=2).init(
      jax.random.key(0), x), x).shape == (2, 5, 4)
  with pytest.raises(ConfigError, match="dhen_ensemble"):
    DHENLayer(ensemble="max").init(jax.random.key(0), x)
  with pytest.raises(ConfigError, match="dhen_modules"):
    DHENLayer(module_types=("fm",)).init(jax.random.key(0), x)


@pytest.mark.parametrize("sig", [False, True])
def test_masknet_vs_numpy(sig):
  s = RNG.normal(size=(2, 3, 6)).astype(np.float32)
  m = MaskNet(out_dim=4, mask_sigmoid=sig)
  p = _np(_init(m, s))
  mm = p["mask_mlp"]
  assert mm["dense_0"]["kernel"].shape == (6, 6)  # hidden kd by default
  mask = _silu(s @ mm["dense_0"]["kernel"] + mm["dense_0"]["bias"]) @ mm["dense_1"]["kernel"] + mm["dense_1"]["bias"]
  if sig:
    mask = _sigmoid(mask)
  want = (s * mask) @ p["lce_emb"]["kernel"] + p["lce_emb"]["bias"]
  np.testing.assert_allclose(np.asarray(m.apply({"params": p}, s)), want, rtol=1e-4, atol=1e-5)


def test_pffn_appendix_equals_numpy():
  s = RNG.normal(size=(2, 5, 4)).astype(np.float32)
  xs = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  m = PFFN("appendix")
  p = _np(_init(m, s, xs))
  w = p["kernel"]
  assert w.shape == (3, 4)
  want = np.stack([(s[b] @ w.T) @ xs[b] for b in range(2)])
  np.testing.assert_allclose(np.asarray(m.apply({"params": p}, s, xs)), want, rtol=1e-5, atol=1e-5)


def test_pffn_mlp_form_is_generated_matrix():
  s = RNG.normal(size=(2, 5, 4)).astype(np.float32)
  xs = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  m = PFFN("mlp")
  p = _np(_init(m, s, xs))
  mm = MLP((4, 16)).apply({"params": p["mlp"]}, xs.reshape(2, 12))
  want = np.stack([s[b] @ np.asarray(mm[b]).reshape(4, 4) for b in range(2)]) / 2.0
  np.testing.assert_allclose(np.asarray(m.apply({"params": p}, s, xs)), want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ConfigError, match="pffn_form"):
    PFFN("gdpa").init(jax.random.key(0), s, xs)


def test_embeddings_share_tables_and_lookup_by_name():
  sch = Schema(sparse=(SparseFeature("item", 10), SparseFeature("cate", 4)),
               sequences=(SequenceFeature("hist_item", 10, 3, table="item"),))
  m = Embeddings(sch, dim=5)
  ids = jnp.asarray([[1, 2], [3, 0]], jnp.int32)
  v = m.init(jax.random.key(0), ids)
  p = _np(nn.meta.unbox(v["params"]))
  # Rows are padded to a multiple of 64 (VOCAB_PAD_MULTIPLE) so tables row-shard over any model axis.
  assert set(p) == {"item", "cate"} and p["item"].shape == (64, 5) and p["cate"].shape == (64, 5)
  np.testing.assert_array_equal(np.asarray(m.apply(v, ids)), np.stack([p["item"][[1, 3]], p["cate"][[2, 0]]], 1))
  seq = jnp.asarray([[0, 7, 9]], jnp.int32)
  got = m.apply(v, "hist_item", seq, method=Embeddings.lookup)
  np.testing.assert_array_equal(np.asarray(got), p["item"][[[0, 7, 9]]])
  assert v["params"]["item"].names == ("vocab", "embed")
  with pytest.raises(KeyError, match="nope"):
    m.apply(v, "nope", seq, method=Embeddings.lookup)


def test_params_use_only_allowed_logical_axes():
  x = jnp.ones((2, 4, 6))
  for mod, args in [(MLP((3, 6)), (x,)), (LCE(2), (x,)), (SelfGating(), (x,)), (DHEN(dcn_low_rank=2), (x,)),
                    (MaskNet(3), (x,)), (PFFN(), (x, x[:, :2]))]:
    names = _axes_names(mod.init(jax.random.key(0), *args)["params"])
    assert names <= set(LOGICAL_AXES)
