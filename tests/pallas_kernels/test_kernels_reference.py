"""References and activations of pallas_kernels vs independent oracles.

  * GDPA reference vs a NumPy float64 port of the per-sequence loop `act(α q kᵀ) v` (Meta's
    `_gdpa_reference` semantics, spec §6.5), with windows, lengths and GQA.
  * Softmax reference vs `jax.nn.dot_product_attention(..., mask=explicit, implementation="xla")`
    (never its `local_window_size`, spec §7).
  * act' closed forms vs `jax.grad` of act; `check_grads` on the references in float64.
Tolerances: float64 comparisons use 1e-10; float32 comparisons use the spec §6.6 table (atol 1e-6
scaled by max(1, |ref|max), rtol 1e-5 for the softmax cross-check).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from pallas_kernels import activations
from pallas_kernels import masks
from pallas_kernels.gdpa import reference as gdpa_ref
from pallas_kernels.sliding_window import reference as swa_ref

NP_ACTS = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu2": lambda x: np.maximum(x, 0) ** 2,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": None,  # filled below with math.erf
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
}
_erf = np.vectorize(__import__("math").erf)
NP_ACTS["gelu"] = lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _np_gdpa(q, k, v, acts, ql, kl, window, alpha, c):
  """Loop oracle: per (b, h), visible rows/cols only, float64."""
  b, tq, h, _ = q.shape
  hkv = k.shape[2]
  out = np.zeros(q.shape[:3] + (v.shape[3],))
  wl, wr = window if window is not None else (10 ** 9, 10 ** 9)
  for bi in range(b):
    for hi in range(h):
      g = hi // (h // hkv)
      for i in range(ql[bi]):
        js = [j for j in range(kl[bi]) if i - wl <= j <= i + wr]
        if js:
          s = alpha * k[bi, js, g] @ q[bi, i, hi]
          out[bi, i, hi] = c * NP_ACTS[acts[hi]](s) @ v[bi, js, g]
  return out


@pytest.mark.parametrize("window", [None, 0, (3, 1), (0, 5)])
def test_gdpa_reference_vs_numpy_loop(window):
  rng = np.random.default_rng(0)
  b, tq, tk, h, hkv, d = 2, 9, 11, 4, 2, 8
  q, k, v = (rng.standard_normal(s) for s in [(b, tq, h, d), (b, tk, hkv, d), (b, tk, hkv, d)])
  acts = ("silu", "gelu", "relu2", "hardswish")
  ql, kl = [9, 4], [7, 11]
  want = _np_gdpa(q, k, v, acts, ql, kl, masks.normalize_window(window), 0.7, 1.3)
  with jax.enable_x64(True):
    got = gdpa_ref.gdpa(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), activation=acts,
                        q_lengths=jnp.asarray(ql), kv_lengths=jnp.asarray(kl), window=window,
                        pre_scale=0.7, post_scale=1.3)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("window", [None, 2, (4, 0), (1, 3)])
def test_swa_reference_vs_dot_product_attention(window):
  rng = np.random.default_rng(1)
  b, t, h, d = 2, 12, 2, 16
  q, k, v = (jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32) for _ in range(3))
  ql = jnp.asarray([12, 5], jnp.int32)
  kl = jnp.asarray([12, 9], jnp.int32)
  m = masks.visible_mask(t, t, masks.normalize_window(window), ql, kl)  # [B, Tq, Tk]
  want = jax.nn.dot_product_attention(q, k, v, mask=m[:, None], implementation="xla")
  # Rows with no visible key: jax's result is undefined (uniform over masked keys); ours is 0.
  has_key = np.asarray(m.any(-1))[:, :, None, None]
  want = np.where(has_key, np.asarray(want), 0.0)
  with jax.default_matmul_precision("highest"):
    got = swa_ref.sliding_window_attention(q, k, v, window=window, q_lengths=ql, kv_lengths=kl)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_activation_derivatives_match_autodiff(name):
  f, df = activations.get(name)
  x = jnp.linspace(-5.0, 5.0, 1001, dtype=jnp.float32) + 0.0013  # avoid the kinks exactly
  want = jax.vmap(jax.grad(f))(x)
  np.testing.assert_allclose(np.asarray(df(x)), np.asarray(want), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(f(x)), NP_ACTS[name](np.asarray(x, np.float64)), atol=1e-5, rtol=1e-5)
  assert float(f(jnp.zeros(()))) == 0.0


def test_reference_check_grads_float64():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    q = jnp.asarray(rng.standard_normal((1, 5, 2, 4)))
    k = jnp.asarray(rng.standard_normal((1, 6, 1, 4)))
    v = jnp.asarray(rng.standard_normal((1, 6, 1, 4)))
    ql, kl = jnp.asarray([4]), jnp.asarray([5])
    check_grads(lambda a, b, c: gdpa_ref.gdpa(a, b, c, activation="gelu", window=(2, 1), q_lengths=ql,
                                              kv_lengths=kl), (q, k, v), order=1, modes=["rev"])
    check_grads(lambda a, b, c: swa_ref.sliding_window_attention(a, b, c, window=(2, 1), q_lengths=ql,
                                                                 kv_lengths=kl), (q, k, v), order=1,
                modes=["rev"])


def test_padding_rows_are_zero():
  q = jnp.ones((1, 4, 1, 8))
  k = jnp.ones((1, 4, 1, 8))
  ql = jnp.asarray([2])
  for out in (gdpa_ref.gdpa(q, k, k, q_lengths=ql), swa_ref.sliding_window_attention(q, k, k, window=None,
                                                                                      q_lengths=ql)):
    np.testing.assert_array_equal(np.asarray(out[:, 2:]), 0.0)
    assert np.all(np.asarray(out[:, :2]) != 0.0)
