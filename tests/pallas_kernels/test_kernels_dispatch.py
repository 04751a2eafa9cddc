"""Dispatcher of pallas_kernels.gdpa / sliding_window_attention: backend choice and input validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels as pk
from pallas_kernels import dispatch
from pallas_kernels.gdpa import reference as gdpa_ref
from pallas_kernels.sliding_window import reference as swa_ref

ON_CPU = jax.default_backend() == "cpu"


def _qkv(b=1, t=10, h=2, hkv=1, d=16):
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  return (jax.random.normal(ks[0], (b, t, h, d)), jax.random.normal(ks[1], (b, t, hkv, d)),
          jax.random.normal(ks[2], (b, t, hkv, d)))


@pytest.mark.skipif(not ON_CPU, reason="CPU dispatch rule")
def test_cpu_default_is_xla_reference():
  q, k, v = _qkv()
  assert dispatch.resolve(None) == ("xla", None, False)
  for fn in (lambda *a: pk.gdpa(*a, window=3), lambda *a: pk.sliding_window_attention(*a, window=3)):
    assert "pallas_call" not in str(jax.make_jaxpr(fn)(q, k, v))
  np.testing.assert_array_equal(np.asarray(pk.gdpa(q, k, v, window=3)),
                                np.asarray(gdpa_ref.gdpa(q, k, v, window=3)))
  np.testing.assert_array_equal(np.asarray(pk.sliding_window_attention(q, k, v, window=3)),
                                np.asarray(swa_ref.sliding_window_attention(q, k, v, window=3)))


@pytest.mark.skipif(not ON_CPU, reason="CPU dispatch rule")
def test_pallas_on_cpu_runs_interpret_kernel():
  q, k, v = _qkv()
  assert dispatch.resolve("pallas") == ("pallas", "tpu", True)
  fn = jax.jit(lambda a, b, c: pk.gdpa(a, b, c, window=(2, 4), implementation="pallas", block_q=8,
                                       block_k=8))
  assert "pallas_call" in str(jax.make_jaxpr(fn)(q, k, v))
  np.testing.assert_allclose(np.asarray(fn(q, k, v)), np.asarray(gdpa_ref.gdpa(q, k, v, window=(2, 4))),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="swish"), "unknown activation"),
    (dict(activation=("silu",)), "length 1, expected H=2"),
    (dict(window=-1), "window must be >= 0"),
    (dict(window=(1, 2, 3)), "2 entries"),
    (dict(window=(1, -2)), "non-negative"),
    (dict(window="local"), "window must be None"),
    (dict(implementation="cuda"), "unknown implementation"),
    (dict(backward="triton"), "backward must be"),
    (dict(q_lengths=jnp.asarray([1, 2])), r"q_lengths must have shape \[B\]"),
])
def test_gdpa_bad_arguments(kwargs, match):
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=match):
    pk.gdpa(q, k, v, **kwargs)


@pytest.mark.parametrize("shapes, match", [
    (((1, 10, 3, 16), (1, 10, 2, 16), (1, 10, 2, 16)), "multiple of Hkv"),
    (((1, 10, 2, 16), (1, 10, 1, 8), (1, 10, 1, 16)), "head dims differ"),
    (((2, 10, 2, 16), (1, 10, 1, 16), (1, 10, 1, 16)), "batch sizes differ"),
    (((1, 10, 2, 16), (1, 10, 1, 16), (1, 9, 1, 16)), "k and v must agree"),
    (((10, 2, 16), (1, 10, 1, 16), (1, 10, 1, 16)), "rank 4"),
])
def test_bad_shapes(shapes, match):
  q, k, v = (jnp.zeros(s) for s in shapes)
  with pytest.raises(ValueError, match=match):
    pk.gdpa(q, k, v)
  with pytest.raises(ValueError, match=match):
    pk.sliding_window_attention(q, k, v, window=2)


def test_swa_bad_window_and_block_size():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="window"):
    pk.sliding_window_attention(q, k, v, window=(3,))
  with pytest.raises(ValueError, match="block_q"):
    pk.sliding_window_attention(q, k, v, window=2, implementation="pallas", block_q=0)
