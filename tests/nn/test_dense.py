"""recjax.nn.common.Dense against flax's nn.Dense (the reference): params, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.nn.common import Dense, dense


def _loss(module, params, x, w_out):
  return jnp.sum(module.apply({"params": params}, x).astype(jnp.float32) * w_out)


@pytest.mark.parametrize("shape", [(32, 24), (4, 7, 24)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_float32_matches_flax_dense(shape, use_bias):
  x = jax.random.normal(jax.random.key(0), shape)
  ours, ref = Dense(40, use_bias=use_bias), nn.Dense(40, use_bias=use_bias)
  params = ours.init(jax.random.key(1), x)["params"]
  ref_params = ref.init(jax.random.key(1), x)["params"]
  for name in params:  # same init for the same key: checkpoints and seeds carry over from nn.Dense
    np.testing.assert_array_equal(params[name], ref_params[name])
  if use_bias:
    params = {**params, "bias": jax.random.normal(jax.random.key(2), (40,))}
  np.testing.assert_allclose(ours.apply({"params": params}, x), ref.apply({"params": params}, x),
                             rtol=1e-5, atol=1e-5)
  w_out = jax.random.normal(jax.random.key(3), shape[:-1] + (40,))
  g = jax.grad(_loss, argnums=(1, 2))(ours, params, x, w_out)
  g_ref = jax.grad(_loss, argnums=(1, 2))(ref, params, x, w_out)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_bfloat16_gradients_match_a_float64_reference():
  # bf16 compute: the backward dots run on materialised transposes; compare with float64 NumPy on the
  # same bf16-rounded operands (tolerance: bf16 rounding of the inputs to the two products).
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((64, 48)), jnp.bfloat16)
  layer = dense(32, dtype=jnp.bfloat16)
  params = jax.tree.map(lambda p: p, nn.unbox(layer.init(jax.random.key(0), x)["params"]))
  params["bias"] = jnp.asarray(rng.standard_normal(32), jnp.float32)
  w_out = jnp.asarray(rng.standard_normal((64, 32)), jnp.float32)
  (gp, gx) = jax.grad(_loss, argnums=(1, 2))(layer, params, x, w_out)
  xk = np.asarray(x, np.float64)
  wk = np.asarray(params["kernel"].astype(jnp.bfloat16), np.float64)
  g = np.asarray(jnp.asarray(w_out).astype(jnp.bfloat16), np.float64)
  np.testing.assert_allclose(np.asarray(gp["kernel"], np.float64), xk.T @ g, rtol=0.02, atol=0.05)
  np.testing.assert_allclose(np.asarray(gp["bias"], np.float64), g.sum(0), rtol=0.02, atol=0.05)
  np.testing.assert_allclose(np.asarray(gx, np.float64), g @ wk.T, rtol=0.02, atol=0.05)
  assert gx.dtype == jnp.bfloat16 and gp["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_matches_flax(dtype):
  from recjax.nn.common import LayerNorm
  x = (jax.random.normal(jax.random.key(0), (3, 5, 16)) * 3 + 1).astype(dtype)
  ours, ref = LayerNorm(dtype=dtype), nn.LayerNorm(dtype=dtype)
  params = ours.init(jax.random.key(1), x)["params"]
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref.init(jax.random.key(1), x)["params"])
  params = {"scale": jax.random.normal(jax.random.key(2), (16,)), "bias": jax.random.normal(jax.random.key(3), (16,))}
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.asarray(ours.apply({"params": params}, x), np.float32),
                             np.asarray(ref.apply({"params": params}, x), np.float32), rtol=tol, atol=tol)
  w_out = jax.random.normal(jax.random.key(4), x.shape)
  g = jax.grad(_loss, argnums=(1, 2))(ours, params, x, w_out)
  g_ref = jax.grad(_loss, argnums=(1, 2))(ref, params, x, w_out)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)
