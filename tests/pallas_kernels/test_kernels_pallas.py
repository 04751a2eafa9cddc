"""Pallas GDPA / sliding-window kernels (interpret mode on CPU) vs the float64 reference.

Tolerance rule (kernels issue; spec §6.6–6.7), applied to the forward output and to dq, dk, dv:

    max|kernel − ref64| ≤ 2 · max|naive − ref64| + atol[dtype] · max(1, max|ref64|)

  * ref64: `reference.*` on float64 inputs (float64 math);
  * naive: `reference.*` with every intermediate in the kernel's dtype (`compute_dtype=dtype`), i.e. the
    plain reference "at the same precision";
  * atol floor table (spec §6.6, tokamax rule), needed because for f32 the naive error can be ~0:

    | dtype    | fwd atol | grad atol |
    |----------|----------|-----------|
    | float32  | 1e-6     | 5e-6      |
    | bfloat16 | 1e-2     | 2e-2      |

Both kernel families run here: "pallas_tpu" (Mosaic TPU style grid with scalar-prefetched block ranges)
and "pallas_triton" (Triton-lowered GPU style with a dynamic fori_loop), each through `interpret=True`.
Non-interpreted GPU numerics are in `test_device_numerics` (skipped off GPU; run by
experiments/bench/device_check.sh).
"""
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels as pk
from pallas_kernels import activations
from pallas_kernels.gdpa import reference as gdpa_ref
from pallas_kernels.sliding_window import reference as swa_ref

ATOL = {jnp.float32: (1e-6, 5e-6), jnp.bfloat16: (1e-2, 2e-2)}
BACKENDS = ("pallas_tpu", "pallas_triton")
INTERPRET = jax.default_backend() == "cpu"


def _inputs(seed, b, tq, tk, h, hkv, d, dtype):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (b, tq, h, d), jnp.float32).astype(dtype)
  k = jax.random.normal(ks[1], (b, tk, hkv, d), jnp.float32).astype(dtype)
  v = jax.random.normal(ks[2], (b, tk, hkv, d), jnp.float32).astype(dtype)
  do = jax.random.normal(ks[3], (b, tq, h, d), jnp.float32).astype(dtype)
  return q, k, v, do


def _value_and_vjp(fn, q, k, v, do):
  o, vjp = jax.vjp(fn, q, k, v)
  return (o,) + tuple(vjp(do))


def _check(op, kernel_kwargs, ref_fn, q, k, v, do, grads=True):
  """Runs kernel, naive and float64 reference, and applies the tolerance rule to out, dq, dk, dv."""
  dtype = q.dtype.type
  kern = jax.jit(lambda a, b, c, g: _value_and_vjp(lambda x, y, z: op(x, y, z, **kernel_kwargs), a, b, c, g))
  got = kern(q, k, v, do)
  naive = jax.jit(lambda a, b, c, g: _value_and_vjp(
      lambda x, y, z: ref_fn(x, y, z, compute_dtype=dtype), a, b, c, g))(q, k, v, do)
  with jax.enable_x64(True):
    args64 = [np.asarray(x, np.float64) for x in (q, k, v, do)]
    want = [np.asarray(x) for x in _value_and_vjp(ref_fn, *[jnp.asarray(a) for a in args64])]
  names = ("out", "dq", "dk", "dv")
  for i, (name, g, n, w) in enumerate(zip(names, got, naive, want)):
    if i > 0 and not grads:
      break
    g, n = np.asarray(g, np.float64), np.asarray(n, np.float64)
    assert np.all(np.isfinite(g)), name
    floor = ATOL[dtype][0 if i == 0 else 1] * max(1.0, float(np.abs(w).max(initial=0.0)))
    err, base = float(np.abs(g - w).max(initial=0.0)), float(np.abs(n - w).max(initial=0.0))
    assert err <= 2 * base + floor, f"{name}: kernel err {err:.3g} > 2·naive err {base:.3g} + {floor:.3g}"


def _gdpa_case(impl, seed, b, tq, tk, h, hkv, d, dtype, *, activation, window, ql, kl, bq, bk,
               pre_scale=0.25, post_scale=0.5, backward="pallas"):
  q, k, v, do = _inputs(seed, b, tq, tk, h, hkv, d, dtype)
  ql = None if ql is None else jnp.asarray(ql, jnp.int32)
  kl = None if kl is None else jnp.asarray(kl, jnp.int32)
  common = dict(activation=activation, q_lengths=ql, kv_lengths=kl, window=window, pre_scale=pre_scale,
                post_scale=post_scale)
  _check(pk.gdpa, dict(common, implementation=impl, block_q=bq, block_k=bk, backward=backward),
         functools.partial(gdpa_ref.gdpa, **common), q, k, v, do)


def _swa_case(impl, seed, b, tq, tk, h, hkv, d, dtype, *, window, ql, kl, bq, bk, backward="pallas"):
  q, k, v, do = _inputs(seed, b, tq, tk, h, hkv, d, dtype)
  ql = None if ql is None else jnp.asarray(ql, jnp.int32)
  kl = None if kl is None else jnp.asarray(kl, jnp.int32)
  common = dict(q_lengths=ql, kv_lengths=kl, window=window)
  _check(pk.sliding_window_attention, dict(common, implementation=impl, block_q=bq, block_k=bk,
                                           backward=backward),
         functools.partial(swa_ref.sliding_window_attention, **common), q, k, v, do)


# ---- mandatory fixed cases (spec §6.3): ≥2 q and kv blocks, window spanning ≥2 kv blocks starting
# mid-block, T not a block multiple, all-padding sample, GQA, left ≠ right, w = 0.

FIXED = [
    # (b, tq, tk, h, hkv, d, window, ql, kl, bq, bk)
    (2, 37, 45, 4, 2, 32, (11, 3), [30, 0], [41, 5], 8, 16),     # asym window spans 2 kv blocks; GQA
    (1, 40, 40, 2, 1, 32, 0, [33], [40], 16, 8),                   # w = 0, MQA
    (2, 24, 50, 2, 2, 32, None, [24, 7], [50, 1], 8, 16),          # Tq ≠ Tk, lengths 1, no window
    (1, 33, 33, 1, 1, 64, (0, 20), None, None, 16, 8),             # right-only window over 3 kv blocks
]


# Each fixed case runs once per op; the two ops alternate between the two kernel families, so every
# case is covered by both families across the two tests (interpret mode is slow on CPU).
@pytest.mark.parametrize("i", range(len(FIXED)))
def test_swa_fixed_cases(i):
  b, tq, tk, h, hkv, d, window, ql, kl, bq, bk = FIXED[i]
  _swa_case(BACKENDS[i % 2], 0, b, tq, tk, h, hkv, d, jnp.float32, window=window, ql=ql, kl=kl, bq=bq,
            bk=bk)


@pytest.mark.parametrize("i", range(len(FIXED)))
def test_gdpa_fixed_cases(i):
  b, tq, tk, h, hkv, d, window, ql, kl, bq, bk = FIXED[i]
  _gdpa_case(BACKENDS[(i + 1) % 2], 1, b, tq, tk, h, hkv, d, jnp.float32, activation="silu",
             window=window, ql=ql, kl=kl, bq=bq, bk=bk)


# The kernels are generic in the activation; act and act' themselves are checked against autodiff for
# all names in test_kernels_reference.py. Here: a smooth, a piecewise and a squared one through the kernel.
@pytest.mark.parametrize("activation", ["gelu", "hardswish", "relu2"])
def test_gdpa_activations(activation):
  _gdpa_case("pallas_tpu", 2, 1, 20, 28, 2, 1, 32, jnp.float32, activation=activation, window=(5, 9),
             ql=[17], kl=[23], bq=8, bk=8, pre_scale=0.5)


def test_gdpa_per_head_activations_gqa():
  acts = ("silu", "relu", "gelu", "silu")
  _gdpa_case("pallas_triton", 3, 2, 21, 21, 4, 2, 32, jnp.float32, activation=acts, window=(6, 2),
             ql=[21, 9], kl=[15, 21], bq=8, bk=8)


def test_bf16():
  _gdpa_case("pallas_tpu", 4, 2, 26, 26, 2, 1, 32, jnp.bfloat16, activation="gelu_tanh", window=(7, 7),
             ql=[26, 12], kl=[25, 26], bq=8, bk=8)
  _swa_case("pallas_triton", 5, 2, 26, 26, 2, 1, 32, jnp.bfloat16, window=(7, 7), ql=[26, 12],
            kl=[25, 26], bq=8, bk=8)


def test_backward_xla_option():
  _gdpa_case("pallas", 6, 1, 19, 19, 2, 2, 32, jnp.float32, activation="hardswish", window=3, ql=[15],
             kl=[19], bq=8, bk=8, backward="xla")
  _swa_case("pallas", 6, 1, 19, 19, 2, 2, 32, jnp.float32, window=3, ql=[15], kl=[19], bq=8, bk=8,
            backward="xla")


def test_all_padding_outputs_zero_and_zero_grads():
  q, k, v, do = _inputs(7, 2, 16, 16, 2, 2, 32, jnp.float32)
  zl = jnp.zeros((2,), jnp.int32)
  for fn in (functools.partial(pk.gdpa, activation="relu"), functools.partial(pk.sliding_window_attention,
                                                                             window=None)):
    f = lambda a, b, c: fn(a, b, c, q_lengths=zl, kv_lengths=zl, implementation="pallas", block_q=8,
                           block_k=8)
    o, dq, dk, dv = _value_and_vjp(f, q, k, v, do)
    for x in (o, dq, dk, dv):
      np.testing.assert_array_equal(np.asarray(x), 0.0)


# ---- property test (spec §6.2).

@st.composite
def attention_cases(draw):
  hkv = draw(st.sampled_from([1, 2]))
  h = hkv * draw(st.sampled_from([1, 2]))
  b = draw(st.integers(1, 2))
  bq = draw(st.sampled_from([8, 16]))
  bk = draw(st.sampled_from([8, 16]))
  tq = draw(st.integers(1, 3 * bq + 7))
  tk = draw(st.integers(1, 3 * bk + 7))
  lengths = lambda t: draw(st.one_of(st.none(), st.lists(st.sampled_from([0, 1, t // 2, t - 1, t]),
                                                          min_size=b, max_size=b)))
  window = draw(st.one_of(st.none(), st.integers(0, 12), st.tuples(st.integers(0, 20), st.integers(0, 20)),
                          st.just(max(tq, tk) + 3)))
  act = draw(st.one_of(st.sampled_from(sorted(activations.ACTIVATIONS)),
                       st.lists(st.sampled_from(["silu", "relu2", "gelu"]), min_size=h, max_size=h)
                       .map(tuple)))
  return dict(b=b, tq=tq, tk=tk, h=h, hkv=hkv, d=32, window=window, ql=lengths(tq), kl=lengths(tk),
              bq=bq, bk=bk, act=act, dtype=draw(st.sampled_from([jnp.float32, jnp.bfloat16])),
              impl=draw(st.sampled_from(BACKENDS)), seed=draw(st.integers(0, 1000)))


def _clip(ls, t):
  return None if ls is None else [max(0, min(x, t)) for x in ls]


@hypothesis.settings(deadline=None, max_examples=3, derandomize=True)
@hypothesis.given(c=attention_cases())
def test_gdpa_property(c):
  _gdpa_case(c["impl"], c["seed"], c["b"], c["tq"], c["tk"], c["h"], c["hkv"], c["d"], c["dtype"],
             activation=c["act"], window=c["window"], ql=_clip(c["ql"], c["tq"]), kl=_clip(c["kl"], c["tk"]),
             bq=c["bq"], bk=c["bk"])


@hypothesis.settings(deadline=None, max_examples=3, derandomize=True)
@hypothesis.given(c=attention_cases())
def test_swa_property(c):
  _swa_case(c["impl"], c["seed"], c["b"], c["tq"], c["tk"], c["h"], c["hkv"], c["d"], c["dtype"],
            window=c["window"], ql=_clip(c["ql"], c["tq"]), kl=_clip(c["kl"], c["tk"]), bq=c["bq"],
            bk=c["bk"])


# ---- compiled (non-interpreted) kernels: only on an accelerator.

@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() not in ("gpu", "tpu"), reason="needs a GPU or TPU")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("window", [None, 64, (100, 0)])
def test_device_numerics(dtype, window):
  _gdpa_case("pallas", 8, 2, 300, 300, 4, 2, 128, dtype, activation="silu", window=window,
             ql=[300, 177], kl=[250, 300], bq=64, bk=64, pre_scale=0.1)
  _swa_case("pallas", 9, 2, 300, 300, 4, 2, 128, dtype, window=window, ql=[300, 177], kl=[250, 300],
            bq=64, bk=64)
