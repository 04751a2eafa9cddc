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
  params = dict(nn.unbox(layer.init(jax.random.key(0), x)["params"]))
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


MESH_SCRIPT = """
import json
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from recjax import sharding
from recjax.nn.common import dense, layer_norm
class M(nn.Module):
  dtype: object
  @nn.compact
  def __call__(self, x):
    h = layer_norm(dtype=self.dtype)(nn.relu(dense(64, dtype=self.dtype)(x)))
    return dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
x = jax.random.normal(jax.random.key(0), (256, 32))
out = {}
for name, dtype in [("f32", jnp.float32), ("bf16", jnp.bfloat16)]:
  m = M(dtype)
  params = nn.unbox(m.init(jax.random.key(1), x)["params"])
  grad = jax.jit(jax.grad(lambda p, x: jnp.mean(m.apply({"params": p}, x) ** 2)))
  ref = jax.tree.leaves(grad(params, x))
  err = 0.0
  for d, mdl in [(8, 1), (4, 2), (2, 4)]:
    xs = jax.device_put(x, NamedSharding(sharding.make_mesh(d, mdl), P("data")))
    for a, b in zip(jax.tree.leaves(grad(params, xs)), ref):
      a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
      err = max(err, float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)))
  out[name] = err
print(json.dumps(out))
"""


def test_gradients_on_meshes_equal_one_device(run_json_on_cpu_devices):
  """Dense and LayerNorm backward passes (f32 and the bf16 transposed-copy path) with the batch sharded
  over meshes (8, 1), (4, 2), (2, 4) give the single-device gradients."""
  out = run_json_on_cpu_devices(["-c", MESH_SCRIPT], devices=8)
  assert out["f32"] < 1e-5
  assert out["bf16"] < 1e-3
