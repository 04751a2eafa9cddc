"""InterFormer: shapes through layers, masks/padding, gradient flow, knob alternatives, config errors."""

import batches
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.errors import ConfigError
from recjax.models import build_model
from recjax.models.interformer import CHOICES, default_config, recent_tokens

B, T = 4, 6


def tiny_config(**kw):
  c = default_config()
  c.dim, c.num_heads, c.head_mlp, c.dcn_low_rank, c.dcn_num_layers = 8, 2, (16,), 4, 1
  c.update(kw)
  return c


def schema(dense=True, seqs=True, two_groups=False, t2=T):
  sparse = (SparseFeature("user", 20), SparseFeature("item", 30), SparseFeature("cate", 5))
  sequences = ()
  if seqs:
    sequences = (SequenceFeature("hist_item", 30, T, table="item"), SequenceFeature("hist_cate", 5, T, table="cate"))
    if two_groups:
      sequences += (SequenceFeature("neg_item", 30, t2, group="neg", table="item"),)
  return Schema(sparse=sparse, dense=("age", "price") if dense else (), sequences=sequences)


def make_batch(sch, lengths=None, seed=0):
  return batches.make_batch(sch, B, lengths=lengths, seed=seed, max_sparse_id=5)


def fake_params(model, batch, seed=0):
  """Params with the model's shapes, filled with numpy normals (avoids compiling the RNG-heavy init)."""
  shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b, train=False), batch)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, x.dtype), nn.meta.unbox(shapes))


def init_apply(cfg, sch, batch):
  """Builds the model, fake params, and runs it eagerly (op-by-op: after the first test every op is
  already compiled, which is much cheaper than one XLA compile per config on CPU)."""
  model = build_model(sch, cfg)
  p = fake_params(model, batch)

  def fn(p, b):
    return model.apply({"params": p}, b, train=False, return_features=True)

  return model, p, fn, fn(p, batch)


def test_shapes_through_every_layer_and_padded_rows_zero():
  sch = schema()
  batch = make_batch(sch, lengths=[0, 2, 6, 3])
  cfg = tiny_config(num_layers=3)
  _, _, _, (logits, f) = init_apply(cfg, sch, batch)
  assert logits.shape == (B,) and logits.dtype == jnp.float32
  n = 1 + 3  # dense token + 3 sparse tokens
  for l in range(4):
    assert f[f"x/{l}"].shape == (B, n, 8)
    assert f[f"s/{l}/all"].shape == (B, 4 + T, 8)
  mask = np.asarray(f["mask/all"])
  np.testing.assert_array_equal(mask[:, :4], True)
  np.testing.assert_array_equal(mask[:, 4:].sum(1), [0, 2, 6, 3])
  np.testing.assert_array_equal(mask[1, 4:], [0, 0, 0, 0, 1, 1])  # left padding: recent last
  for l in range(1, 4):
    s = np.asarray(f[f"s/{l}/all"])
    assert np.all(s[~mask] == 0.0)
    assert np.all(np.abs(s[mask]).sum(-1) > 0)
  assert f["x_sum"].shape == (B, 4, 8) and f["s_sum"].shape == (B, 8, 8)
  assert f["head_input"].shape == (B, 12 * 8)


def test_cls_tokens_are_layer1_xsum():
  sch = schema()
  batch = make_batch(sch)
  _, p, _, (_, f) = init_apply(tiny_config(), sch, batch)
  # CLS rows of S^(1) equal layer 1's X_sum of X^(1) (cls_source=shared_with_layer1).
  from recjax.models.interformer import _XSummary
  xs = _XSummary(4, "lce", "x_sigmoid", "per_token", jnp.float32).apply(
      {"params": p["cross_0_xsum"]}, f["x/0"])
  np.testing.assert_allclose(np.asarray(f["s/0/all"][:, :4]), np.asarray(xs), rtol=1e-5, atol=1e-6)


def test_changing_padded_ids_does_not_change_logits():
  sch = schema()
  batch = make_batch(sch, lengths=[1, 0, 4, 6])
  _, p, fn, (logits, _) = init_apply(tiny_config(), sch, batch)
  b2 = dict(batch)
  for name in ("hist_item", "hist_cate"):
    ids = np.asarray(batch[f"seq/{name}"]).copy()
    pad = np.arange(T)[None] < T - np.asarray(batch["seq_len/hist"])[:, None]
    ids[pad] = 3
    b2[f"seq/{name}"] = jnp.asarray(ids)
  np.testing.assert_allclose(np.asarray(fn(p, b2)[0]), np.asarray(logits), rtol=1e-5, atol=1e-6)
  # ...while changing a valid id does change them.
  ids = np.asarray(batch["seq/hist_item"]).copy()
  ids[3, -1] = 29 if ids[3, -1] != 29 else 28
  b3 = dict(batch, **{"seq/hist_item": jnp.asarray(ids)})
  assert not np.allclose(np.asarray(fn(p, b3)[0])[3], np.asarray(logits)[3])


def test_every_parameter_gets_a_gradient():
  sch = schema()
  batch = make_batch(sch, lengths=[0, 5, 6, 3])  # row 0 has an empty history: its gradients must be finite
  model = build_model(sch, tiny_config())
  params = fake_params(model, batch)

  def loss(p):
    return jnp.mean(model.apply({"params": p}, batch, train=False) ** 2)

  g = jax.jit(jax.grad(loss))(params)
  flat = jax.tree_util.tree_flatten_with_path(g)[0]
  dead = [jax.tree_util.keystr(k) for k, x in flat if not np.any(np.asarray(x) != 0)]
  assert not dead, f"parameters without gradient: {dead}"
  assert all(np.all(np.isfinite(np.asarray(x))) for _, x in flat)


def test_params_carry_only_allowed_logical_axes():
  sch = schema()
  model = build_model(sch, tiny_config())
  boxed = jax.eval_shape(lambda b: model.init(jax.random.key(0), b, train=False), make_batch(sch))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  names = {n for x in leaves for n in x.names if n is not None}
  assert names <= {"vocab", "embed", "mlp", "heads", "head_dim", "tokens", "cross"}
  assert boxed["embedding"]["item"].names == ("vocab", "embed")
  assert boxed["embedding"]["item"].value.shape == (64, 8)  # 30 ids padded to a multiple of 64
  assert set(boxed["embedding"]) == {"user", "item", "cate"}  # sequences share the item/cate tables


def test_all_empty_sequences_are_finite():
  sch = schema()
  batch = make_batch(sch, lengths=[0, 0, 0, 0])
  _, _, _, (logits, f) = init_apply(tiny_config(), sch, batch)
  assert np.all(np.isfinite(np.asarray(logits)))
  # Recent slots are zero before gating: S_sum's recent rows equal the gate of 0, which is 0 (x_sigmoid).
  np.testing.assert_array_equal(np.asarray(f["s_sum"][:, 6:]), 0.0)
  # Only the CLS positions are valid, so every item row of every layer's S is zero.
  for l in range(3):
    np.testing.assert_array_equal(np.asarray(f[f"s/{l}/all"][:, 4:]), 0.0)


def test_recent_tokens_zero_padded_slots():
  items = jnp.arange(1, 1 + 2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
  lengths = jnp.asarray([1, 4])
  pre_mask = jnp.arange(5)[None] >= 5 - lengths[:, None]
  got = np.asarray(recent_tokens(items, pre_mask, lengths, 3, "last_positions"))[..., 0]
  np.testing.assert_array_equal(got, [[0, 0, 5], [8, 9, 10]])
  post_mask = jnp.arange(5)[None] < lengths[:, None]
  got = np.asarray(recent_tokens(items, post_mask, lengths, 3, "gather_by_length"))[..., 0]
  np.testing.assert_array_equal(got, [[0, 0, 1], [7, 8, 9]])
  # T < K: missing slots are zero.
  got = np.asarray(recent_tokens(items[:, :1], pre_mask[:, -1:] | True, lengths, 3, "last_positions"))[..., 0]
  np.testing.assert_array_equal(got, [[0, 0, 1], [0, 0, 6]])


def test_no_dense_and_no_sequences():
  sch = schema(dense=False, seqs=False)
  batch = make_batch(sch)
  _, p, _, (logits, f) = init_apply(tiny_config(), sch, batch)
  assert np.all(np.isfinite(np.asarray(logits)))
  assert f["x/0"].shape == (B, 3, 8)
  assert "s_sum" not in f and f["head_input"].shape == (B, 4 * 8)
  assert not any(k.startswith(("masknet", "sequence_", "cross_0_ssum")) for k in p) and "dense_token" not in p


ALTERNATIVES = [(k, a) for k, allowed in CHOICES.items() for a in allowed if a != default_config()[k]]
ALTERNATIVES += [("interaction_residual", False), ("masknet_mask_sigmoid", True), ("num_dhen_layers", 2),
                 ("dhen_modules", ("dcn",)), ("num_pma", 0)]


@pytest.mark.parametrize("key,value", ALTERNATIVES, ids=[f"{k}={v}" for k, v in ALTERNATIVES])
def test_knob_alternative_builds_and_runs(key, value):
  sch = schema(two_groups=(key == "sequence_groups"), t2=3)
  batch = make_batch(sch, lengths=[0, 1, 3, 6])
  cfg = tiny_config(num_layers=1, **{key: value})
  _, p, _, (logits, f) = init_apply(cfg, sch, batch)
  assert logits.shape == (B,) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))
  if key == "head_from":
    assert "x/1" not in f and "interaction_0" not in p and "cross_0_xsum" in p
  elif key == "sequence_groups":
    assert f["s/1/hist"].shape == (B, 4 + T, 8) and f["s/1/neg"].shape == (B, 4 + 3, 8)
    assert f["s_sum"].shape == (B, 16, 8)
  elif key == "cls_source":
    assert "cross_cls_xsum" in p
  elif key == "num_pma":
    assert f["s_sum"].shape == (B, 6, 8)
  elif key == "dtype":
    assert f["x/1"].dtype == jnp.bfloat16
  else:
    assert f["s/1/all"].shape == (B, 4 + T, 8) and f["x/1"].shape == (B, 4, 8)


def test_stack_all_rejects_unequal_lengths():
  sch = schema(two_groups=True, t2=3)
  with pytest.raises(ConfigError, match="sequence_groups"):
    fake_params(build_model(sch, tiny_config()), make_batch(sch))


@pytest.mark.parametrize("key,value", [("gating", "sigmoid_x"), ("rope", "alibi"), ("head_from", "layer0"),
                                       ("num_heads", 3), ("dropout", 1.5)])
def test_bad_knob_raises_config_error(key, value):
  with pytest.raises(ConfigError, match=key):
    build_model(schema(), tiny_config(**{key: value}))


def test_unknown_model_name():
  cfg = tiny_config(name="hstu")
  with pytest.raises(ConfigError, match="hstu"):
    build_model(schema(), cfg)


def test_dropout_uses_the_dropout_rng_in_train():
  sch = schema(seqs=False)  # dropout RNG generation is compile-heavy on CPU; the head suffices here
  batch = make_batch(sch)
  model = build_model(sch, tiny_config(dropout=0.5, num_layers=1))
  p = fake_params(model, batch)
  def fn(p, k):
    return model.apply({"params": p}, batch, train=True, rngs={"dropout": k})

  a, b, a2 = fn(p, jax.random.key(1)), fn(p, jax.random.key(2)), fn(p, jax.random.key(1))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
