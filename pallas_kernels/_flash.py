"""Shared flash-style Pallas machinery for GDPA (no softmax) and softmax sliding-window attention.

Two kernel families share the same per-tile math (`_tile_*` functions):
  * "tpu": Pallas Mosaic TPU style. Grid (B, H, n_outer, n_steps); the last ("arbitrary") axis walks
    only over the inner blocks that intersect the window, via scalar-prefetched per-block first/last
    indices in the index map, so blocks outside the window are neither DMA'd nor computed.
  * "triton": Pallas GPU (Triton lowering) style. Grid (n_outer, B, H); the whole K/V (or Q/dO) row of a
    head stays in global memory and a `fori_loop(first, last + 1)` visits only the visible blocks.
Both run on CPU with `interpret=True`, which is how the CPU tests check them.

Internal layout is [B, H, T, D], T padded up to a block multiple; padding is masked through the lengths.
The accumulators (o, m, l for the forward; dq, dk, dv for the backward) live in f32 for the whole walk
over inner blocks and are written once at the end (spec §5, "the accumulator must persist").

Source: docs/specs/kernels.md §3 (backward formulas), §5 (algorithm); structure learned from
jax/experimental/pallas/ops/{tpu/flash_attention.py, gpu/attention.py} (no code copied).
"""
import dataclasses
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import activations as acts
from pallas_kernels import masks

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class FlashParams:
  """Static configuration of one kernel call (hashable; used as a custom_vjp nondiff argument).

  mode: "gdpa" (act, no softmax) or "softmax".
  activation: activation name (gdpa only; one per call, heads are grouped by the caller).
  scale: pre_scale for gdpa, softmax scale for softmax. post_scale: gdpa only.
  window: normalized window or None. block_q / block_k: forward tile; the backward reuses them.
  backend: "tpu" or "triton". interpret: run through the Pallas interpreter (CPU).
  backward: "pallas" (fused kernels) or "xla" (VJP of `reference_fn`).
  """
  mode: str
  activation: str = "identity"
  scale: float = 1.0
  post_scale: float = 1.0
  window: Optional[tuple[int, int]] = None
  block_q: int = 128
  block_k: int = 128
  backend: str = "tpu"
  interpret: bool = False
  backward: str = "pallas"

  def __post_init__(self):
    if self.mode not in ("gdpa", "softmax"):
      raise ValueError(f"mode must be 'gdpa' or 'softmax', got {self.mode!r}")
    if self.backend not in ("tpu", "triton"):
      raise ValueError(f"backend must be 'tpu' or 'triton', got {self.backend!r}")
    if self.backward not in ("pallas", "xla"):
      raise ValueError(f"backward must be 'pallas' or 'xla', got {self.backward!r}")
    for name in ("block_q", "block_k"):
      val = getattr(self, name)
      if not isinstance(val, int) or val < 1:
        raise ValueError(f"{name} must be a positive int, got {val!r}")
    acts.get(self.activation)


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _next_pow2(x: int) -> int:
  return 1 << max(0, (x - 1).bit_length())


def effective_blocks(p: FlashParams, tq: int, tk: int) -> tuple[int, int]:
  """Block sizes actually used: never larger than the (rounded-up) sequence; powers of 2 for Triton."""
  if p.backend == "triton":
    bq = min(_next_pow2(p.block_q), max(16, _next_pow2(tq)))
    bk = min(_next_pow2(p.block_k), max(16, _next_pow2(tk)))
  else:
    bq = min(p.block_q, _round_up(tq, 8))
    bk = min(p.block_k, _round_up(tk, 8))
  return bq, bk


# ----------------------------------------------------------------------------------------------------
# Per-tile math (shared by both backends).


def _dot_nt(a, b):
  """a [m, d] · b [n, d]ᵀ -> [m, n] f32."""
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=_F32)


def _dot_tn(a, b):
  """a [m, n]ᵀ · b [m, d] -> [n, d] f32."""
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=_F32)


def _dot(a, b):
  return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=_F32)


def _tile_mask(qs, ks, bq, bk, q_len, kv_len, wl, wr):
  i = qs + lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  j = ks + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  return (i < q_len) & (j < kv_len) & (j >= i - wl) & (j <= i + wr)


def _fwd_tile(p: FlashParams, q, k, v, mask, carry):
  """One (q block, kv block) step of the forward; carry = (acc [bq,Dv], m [bq,1], l [bq,1])."""
  acc, m_prev, l_prev = carry
  s = _dot_nt(q, k) * p.scale
  if p.mode == "gdpa":
    a = acts.get(p.activation)[0](s)
    pt = jnp.where(mask, a, 0.0)
    return acc + _dot(pt.astype(v.dtype), v), m_prev, l_prev
  s = jnp.where(mask, s, MASK_VALUE)
  m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
  alpha = jnp.exp(m_prev - m_new)
  pt = jnp.where(mask, jnp.exp(s - m_new), 0.0)
  l_new = alpha * l_prev + jnp.sum(pt, axis=1, keepdims=True)
  acc = alpha * acc + _dot(pt.astype(v.dtype), v)
  return acc, m_new, l_new


def _fwd_finish(p: FlashParams, carry):
  """Returns (o [bq,Dv] f32, lse [bq,1] f32)."""
  acc, m, l = carry
  if p.mode == "gdpa":
    return acc * p.post_scale, m
  safe_l = jnp.where(l == 0.0, 1.0, l)
  o = jnp.where(l == 0.0, 0.0, acc / safe_l)
  lse = jnp.where(l == 0.0, 0.0, m + jnp.log(safe_l))
  return o, lse


def _bwd_ds(p: FlashParams, q, k, v, do, lse, delta, mask):
  """Returns (pm [bq,bk] f32: masked probabilities / scaled activations, ds [bq,bk] f32: dL/dS·scale)."""
  s = _dot_nt(q, k) * p.scale
  dp = _dot_nt(do, v)
  if p.mode == "gdpa":
    f, df = acts.get(p.activation)
    pm = jnp.where(mask, f(s), 0.0) * p.post_scale
    ds = jnp.where(mask, dp * df(s), 0.0) * (p.post_scale * p.scale)
    return pm, ds
  pm = jnp.where(mask, jnp.exp(s - lse), 0.0)
  ds = pm * (dp - delta) * p.scale
  return pm, ds


# ----------------------------------------------------------------------------------------------------
# Block ranges (computed in XLA, passed to the kernels as small int32 arrays / SMEM scalars).


def _kv_ranges(p, ql, kl, nq, bq, bk):
  wl, wr = masks.window_bounds(p.window)
  iq = jnp.arange(nq, dtype=jnp.int32)[None, :]
  first, last = masks.kv_block_range(iq, bq, bk, ql[:, None], kl[:, None], wl, wr)
  first = jnp.broadcast_to(first, last.shape)
  return first.reshape(-1).astype(jnp.int32), last.reshape(-1).astype(jnp.int32)


def _q_ranges(p, ql, kl, nk, bq, bk):
  wl, wr = masks.window_bounds(p.window)
  ik = jnp.arange(nk, dtype=jnp.int32)[None, :]
  first, last = masks.q_block_range(ik, bq, bk, ql[:, None], kl[:, None], wl, wr)
  first = jnp.broadcast_to(first, last.shape)
  return first.reshape(-1).astype(jnp.int32), last.reshape(-1).astype(jnp.int32)


def _steps(p, block_outer, block_inner, n_inner, transpose=False):
  wl, wr = masks.window_bounds(p.window)
  span = wl + wr if max(wl, wr) < masks.NO_WINDOW else masks.NO_WINDOW
  return masks.max_blocks_visited(block_outer, block_inner, n_inner, span)


# ----------------------------------------------------------------------------------------------------
# Mosaic TPU style kernels.


def _tpu_fwd_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, o_ref, lse_ref,
                    acc_ref, m_ref, l_ref, *, p, bq, bk, nq, nsteps):
  b, iq, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  idx = b * nq + iq
  first, last = first_ref[idx], last_ref[idx]
  wl, wr = masks.window_bounds(p.window)

  @pl.when(j == 0)
  def _init():
    acc_ref[...] = jnp.zeros_like(acc_ref)
    m_ref[...] = jnp.full_like(m_ref, MASK_VALUE)
    l_ref[...] = jnp.zeros_like(l_ref)

  kb = first + j

  @pl.when(kb <= last)
  def _compute():
    mask = _tile_mask(iq * bq, kb * bk, bq, bk, ql_ref[b], kl_ref[b], wl, wr)
    carry = (acc_ref[...], m_ref[...], l_ref[...])
    acc, m, l = _fwd_tile(p, q_ref[...], k_ref[...], v_ref[...], mask, carry)
    acc_ref[...] = acc
    m_ref[...] = m
    l_ref[...] = l

  @pl.when(j == nsteps - 1)
  def _write():
    o, lse = _fwd_finish(p, (acc_ref[...], m_ref[...], l_ref[...]))
    o_ref[...] = o.astype(o_ref.dtype)
    lse_ref[...] = lse


def _tpu_inner_index(nq_outer, nsteps):
  """Index map helper: clamps the inner block to [first, last] so skipped steps re-use the last DMA."""
  def inner(b, i, j, first_ref, last_ref):
    idx = b * nq_outer + i
    first, last = first_ref[idx], last_ref[idx]
    return jnp.maximum(jnp.minimum(first + j, last), 0)
  return inner


def _tpu_call_fwd(p, q, k, v, ql, kl, bq, bk):
  bsz, h, tq, d = q.shape
  hkv, tk, dv = k.shape[1], k.shape[2], v.shape[3]
  g = h // hkv
  nq, nk = tq // bq, tk // bk
  nsteps = _steps(p, bq, bk, nk)
  first, last = _kv_ranges(p, ql, kl, nq, bq, bk)
  inner = _tpu_inner_index(nq, nsteps)
  kv_index = lambda b, hh, i, j, f, l, *r: (b, hh // g, inner(b, i, j, f, l), 0)
  from jax.experimental.pallas import tpu as pltpu
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=4,
      grid=(bsz, h, nq, nsteps),
      in_specs=[
          pl.BlockSpec((None, None, bq, d), lambda b, hh, i, j, *r: (b, hh, i, 0)),
          pl.BlockSpec((None, None, bk, d), kv_index),
          pl.BlockSpec((None, None, bk, dv), kv_index),
      ],
      out_specs=[
          pl.BlockSpec((None, None, bq, dv), lambda b, hh, i, j, *r: (b, hh, i, 0)),
          pl.BlockSpec((None, None, bq, 1), lambda b, hh, i, j, *r: (b, hh, i, 0)),
      ],
      scratch_shapes=[pltpu.VMEM((bq, dv), _F32), pltpu.VMEM((bq, 1), _F32), pltpu.VMEM((bq, 1), _F32)],
  )
  kernel = functools.partial(_tpu_fwd_kernel, p=p, bq=bq, bk=bk, nq=nq, nsteps=nsteps)
  return pl.pallas_call(
      kernel,
      grid_spec=grid_spec,
      out_shape=[jax.ShapeDtypeStruct((bsz, h, tq, dv), q.dtype),
                 jax.ShapeDtypeStruct((bsz, h, tq, 1), _F32)],
      compiler_params=_tpu_params(),
      interpret=p.interpret,
      name=f"{p.mode}_fwd",
  )(first, last, ql, kl, q, k, v)


def _tpu_params():
  from jax.experimental.pallas import tpu as pltpu
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _tpu_dq_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, dl_ref,
                   dq_ref, acc_ref, *, p, bq, bk, nq, nsteps):
  b, iq, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  idx = b * nq + iq
  first, last = first_ref[idx], last_ref[idx]
  wl, wr = masks.window_bounds(p.window)

  @pl.when(j == 0)
  def _init():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  kb = first + j

  @pl.when(kb <= last)
  def _compute():
    mask = _tile_mask(iq * bq, kb * bk, bq, bk, ql_ref[b], kl_ref[b], wl, wr)
    k = k_ref[...]
    _, ds = _bwd_ds(p, q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], dl_ref[...], mask)
    acc_ref[...] += _dot(ds.astype(k.dtype), k)

  @pl.when(j == nsteps - 1)
  def _write():
    dq_ref[...] = acc_ref[...]


def _tpu_dkv_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, dl_ref,
                    dk_ref, dv_ref, dk_acc, dv_acc, *, p, bq, bk, nk, nsteps):
  b, ik, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  idx = b * nk + ik
  first, last = first_ref[idx], last_ref[idx]
  wl, wr = masks.window_bounds(p.window)

  @pl.when(j == 0)
  def _init():
    dk_acc[...] = jnp.zeros_like(dk_acc)
    dv_acc[...] = jnp.zeros_like(dv_acc)

  qb = first + j

  @pl.when(qb <= last)
  def _compute():
    mask = _tile_mask(qb * bq, ik * bk, bq, bk, ql_ref[b], kl_ref[b], wl, wr)
    q, do = q_ref[...], do_ref[...]
    pm, ds = _bwd_ds(p, q, k_ref[...], v_ref[...], do, lse_ref[...], dl_ref[...], mask)
    dv_acc[...] += _dot_tn(pm.astype(do.dtype), do)
    dk_acc[...] += _dot_tn(ds.astype(q.dtype), q)

  @pl.when(j == nsteps - 1)
  def _write():
    dk_ref[...] = dk_acc[...]
    dv_ref[...] = dv_acc[...]


def _tpu_call_bwd(p, q, k, v, do, lse, delta, ql, kl, bq, bk):
  from jax.experimental.pallas import tpu as pltpu
  bsz, h, tq, d = q.shape
  hkv, tk, dv = k.shape[1], k.shape[2], v.shape[3]
  g = h // hkv
  nq, nk = tq // bq, tk // bk
  # dq: outer = q blocks, inner = kv blocks.
  nsteps = _steps(p, bq, bk, nk)
  first, last = _kv_ranges(p, ql, kl, nq, bq, bk)
  inner = _tpu_inner_index(nq, nsteps)
  outer_q = lambda b, hh, i, j, *r: (b, hh, i, 0)
  kv_spec = lambda width: pl.BlockSpec(
      (None, None, bk, width), lambda b, hh, i, j, f, l, *r: (b, hh // g, inner(b, i, j, f, l), 0))
  dq = pl.pallas_call(
      functools.partial(_tpu_dq_kernel, p=p, bq=bq, bk=bk, nq=nq, nsteps=nsteps),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4,
          grid=(bsz, h, nq, nsteps),
          in_specs=[pl.BlockSpec((None, None, bq, d), outer_q), kv_spec(d), kv_spec(dv),
                    pl.BlockSpec((None, None, bq, dv), outer_q), pl.BlockSpec((None, None, bq, 1), outer_q),
                    pl.BlockSpec((None, None, bq, 1), outer_q)],
          out_specs=pl.BlockSpec((None, None, bq, d), outer_q),
          scratch_shapes=[pltpu.VMEM((bq, d), _F32)]),
      out_shape=jax.ShapeDtypeStruct((bsz, h, tq, d), _F32),
      compiler_params=_tpu_params(),
      interpret=p.interpret,
      name=f"{p.mode}_bwd_dq",
  )(first, last, ql, kl, q, k, v, do, lse, delta)
  # dk, dv: outer = kv blocks, inner = q blocks; one output per query head, summed over GQA groups later.
  nsteps = _steps(p, bk, bq, nq)
  first, last = _q_ranges(p, ql, kl, nk, bq, bk)
  inner = _tpu_inner_index(nk, nsteps)
  outer_k = lambda b, hh, i, j, *r: (b, hh // g, i, 0)
  outer_kh = lambda b, hh, i, j, *r: (b, hh, i, 0)
  q_spec = lambda width: pl.BlockSpec(
      (None, None, bq, width), lambda b, hh, i, j, f, l, *r: (b, hh, inner(b, i, j, f, l), 0))
  dk, dv_ = pl.pallas_call(
      functools.partial(_tpu_dkv_kernel, p=p, bq=bq, bk=bk, nk=nk, nsteps=nsteps),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4,
          grid=(bsz, h, nk, nsteps),
          in_specs=[q_spec(d), pl.BlockSpec((None, None, bk, d), outer_k),
                    pl.BlockSpec((None, None, bk, dv), outer_k), q_spec(dv), q_spec(1), q_spec(1)],
          out_specs=[pl.BlockSpec((None, None, bk, d), outer_kh),
                     pl.BlockSpec((None, None, bk, dv), outer_kh)],
          scratch_shapes=[pltpu.VMEM((bk, d), _F32), pltpu.VMEM((bk, dv), _F32)]),
      out_shape=[jax.ShapeDtypeStruct((bsz, h, tk, d), _F32),
                 jax.ShapeDtypeStruct((bsz, h, tk, dv), _F32)],
      compiler_params=_tpu_params(),
      interpret=p.interpret,
      name=f"{p.mode}_bwd_dkv",
  )(first, last, ql, kl, q, k, v, do, lse, delta)
  return dq, dk, dv_


# ----------------------------------------------------------------------------------------------------
# Triton-lowered Pallas GPU kernels (whole row of the inner operand in global memory, dynamic loop).


def _triton_params(d):
  from jax.experimental.pallas import triton as pltriton
  return pltriton.CompilerParams(num_warps=4 if d <= 64 else 8, num_stages=2)


def _triton_fwd_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, o_ref, lse_ref,
                       *, p, bq, bk, nq):
  iq, b = pl.program_id(0), pl.program_id(1)
  idx = b * nq + iq
  first, last = first_ref[idx], last_ref[idx]
  q_len, kv_len = ql_ref[b], kl_ref[b]
  wl, wr = masks.window_bounds(p.window)
  q = q_ref[...]
  dv = v_ref.shape[-1]

  def body(kb, carry):
    ks = pl.multiple_of(kb * bk, bk)
    mask = _tile_mask(iq * bq, ks, bq, bk, q_len, kv_len, wl, wr)
    return _fwd_tile(p, q, k_ref[pl.ds(ks, bk), :], v_ref[pl.ds(ks, bk), :], mask, carry)

  init = (jnp.zeros((bq, dv), _F32), jnp.full((bq, 1), MASK_VALUE, _F32), jnp.zeros((bq, 1), _F32))
  o, lse = _fwd_finish(p, lax.fori_loop(first, last + 1, body, init))
  o_ref[...] = o.astype(o_ref.dtype)
  lse_ref[...] = lse


def _triton_call_fwd(p, q, k, v, ql, kl, bq, bk):
  bsz, h, tq, d = q.shape
  hkv, tk, dv = k.shape[1], k.shape[2], v.shape[3]
  g = h // hkv
  nq = tq // bq
  first, last = _kv_ranges(p, ql, kl, nq, bq, bk)
  whole = lambda x: pl.BlockSpec(x.shape, lambda i, b, hh: (0,))
  return pl.pallas_call(
      functools.partial(_triton_fwd_kernel, p=p, bq=bq, bk=bk, nq=nq),
      grid=(nq, bsz, h),
      in_specs=[whole(first), whole(last), whole(ql), whole(kl),
                pl.BlockSpec((None, None, bq, d), lambda i, b, hh: (b, hh, i, 0)),
                pl.BlockSpec((None, None, tk, d), lambda i, b, hh: (b, hh // g, 0, 0)),
                pl.BlockSpec((None, None, tk, dv), lambda i, b, hh: (b, hh // g, 0, 0))],
      out_specs=[pl.BlockSpec((None, None, bq, dv), lambda i, b, hh: (b, hh, i, 0)),
                 pl.BlockSpec((None, None, bq, 1), lambda i, b, hh: (b, hh, i, 0))],
      out_shape=[jax.ShapeDtypeStruct((bsz, h, tq, dv), q.dtype),
                 jax.ShapeDtypeStruct((bsz, h, tq, 1), _F32)],
      compiler_params=None if p.interpret else _triton_params(d),
      interpret=p.interpret,
      name=f"{p.mode}_fwd_triton",
  )(first, last, ql, kl, q, k, v)


def _triton_dq_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, dl_ref,
                      dq_ref, *, p, bq, bk, nq):
  iq, b = pl.program_id(0), pl.program_id(1)
  idx = b * nq + iq
  first, last = first_ref[idx], last_ref[idx]
  q_len, kv_len = ql_ref[b], kl_ref[b]
  wl, wr = masks.window_bounds(p.window)
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], dl_ref[...]

  def body(kb, acc):
    ks = pl.multiple_of(kb * bk, bk)
    mask = _tile_mask(iq * bq, ks, bq, bk, q_len, kv_len, wl, wr)
    k = k_ref[pl.ds(ks, bk), :]
    _, ds = _bwd_ds(p, q, k, v_ref[pl.ds(ks, bk), :], do, lse, delta, mask)
    return acc + _dot(ds.astype(k.dtype), k)

  dq_ref[...] = lax.fori_loop(first, last + 1, body, jnp.zeros(dq_ref.shape, _F32))


def _triton_dkv_kernel(first_ref, last_ref, ql_ref, kl_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, dl_ref,
                       dk_ref, dv_ref, *, p, bq, bk, nk):
  ik, b = pl.program_id(0), pl.program_id(1)
  idx = b * nk + ik
  first, last = first_ref[idx], last_ref[idx]
  q_len, kv_len = ql_ref[b], kl_ref[b]
  wl, wr = masks.window_bounds(p.window)
  k, v = k_ref[...], v_ref[...]

  def body(qb, carry):
    dk, dv = carry
    qs = pl.multiple_of(qb * bq, bq)
    mask = _tile_mask(qs, ik * bk, bq, bk, q_len, kv_len, wl, wr)
    q, do = q_ref[pl.ds(qs, bq), :], do_ref[pl.ds(qs, bq), :]
    pm, ds = _bwd_ds(p, q, k, v, do, lse_ref[pl.ds(qs, bq), :], dl_ref[pl.ds(qs, bq), :], mask)
    return dk + _dot_tn(ds.astype(q.dtype), q), dv + _dot_tn(pm.astype(do.dtype), do)

  dk, dv = lax.fori_loop(first, last + 1, body,
                         (jnp.zeros(dk_ref.shape, _F32), jnp.zeros(dv_ref.shape, _F32)))
  dk_ref[...] = dk
  dv_ref[...] = dv


def _triton_call_bwd(p, q, k, v, do, lse, delta, ql, kl, bq, bk):
  bsz, h, tq, d = q.shape
  hkv, tk, dv = k.shape[1], k.shape[2], v.shape[3]
  g = h // hkv
  nq, nk = tq // bq, tk // bk
  whole = lambda x: pl.BlockSpec(x.shape, lambda i, b, hh: (0,))
  cp = None if p.interpret else _triton_params(d)
  first, last = _kv_ranges(p, ql, kl, nq, bq, bk)
  blk_q = lambda w: pl.BlockSpec((None, None, bq, w), lambda i, b, hh: (b, hh, i, 0))
  row_kv = lambda w: pl.BlockSpec((None, None, tk, w), lambda i, b, hh: (b, hh // g, 0, 0))
  dq = pl.pallas_call(
      functools.partial(_triton_dq_kernel, p=p, bq=bq, bk=bk, nq=nq),
      grid=(nq, bsz, h),
      in_specs=[whole(first), whole(last), whole(ql), whole(kl), blk_q(d), row_kv(d), row_kv(dv),
                blk_q(dv), blk_q(1), blk_q(1)],
      out_specs=blk_q(d),
      out_shape=jax.ShapeDtypeStruct((bsz, h, tq, d), _F32),
      compiler_params=cp, interpret=p.interpret, name=f"{p.mode}_bwd_dq_triton",
  )(first, last, ql, kl, q, k, v, do, lse, delta)
  first, last = _q_ranges(p, ql, kl, nk, bq, bk)
  blk_k = lambda w: pl.BlockSpec((None, None, bk, w), lambda i, b, hh: (b, hh // g, i, 0))
  blk_kh = lambda w: pl.BlockSpec((None, None, bk, w), lambda i, b, hh: (b, hh, i, 0))
  row_q = lambda w: pl.BlockSpec((None, None, tq, w), lambda i, b, hh: (b, hh, 0, 0))
  dk, dv_ = pl.pallas_call(
      functools.partial(_triton_dkv_kernel, p=p, bq=bq, bk=bk, nk=nk),
      grid=(nk, bsz, h),
      in_specs=[whole(first), whole(last), whole(ql), whole(kl), row_q(d), blk_k(d), blk_k(dv),
                row_q(dv), row_q(1), row_q(1)],
      out_specs=[blk_kh(d), blk_kh(dv)],
      out_shape=[jax.ShapeDtypeStruct((bsz, h, tk, d), _F32),
                 jax.ShapeDtypeStruct((bsz, h, tk, dv), _F32)],
      compiler_params=cp, interpret=p.interpret, name=f"{p.mode}_bwd_dkv_triton",
  )(first, last, ql, kl, q, k, v, do, lse, delta)
  return dq, dk, dv_


# ----------------------------------------------------------------------------------------------------
# Layout plumbing + custom_vjp.


def _to_internal(x, t_pad, d_pad):
  """[B, T, H, D] -> [B, H, T_pad, D_pad], zero padded."""
  x = jnp.swapaxes(x, 1, 2)
  return jnp.pad(x, ((0, 0), (0, 0), (0, t_pad - x.shape[2]), (0, d_pad - x.shape[3])))


def _pads(p, q, k, v):
  tq, tk, d, dv = q.shape[1], k.shape[1], q.shape[3], v.shape[3]
  bq, bk = effective_blocks(p, tq, tk)
  if p.backend == "triton":
    d_pad, dv_pad = max(16, _next_pow2(d)), max(16, _next_pow2(dv))
  else:
    d_pad, dv_pad = d, dv
  return bq, bk, _round_up(tq, bq), _round_up(tk, bk), d_pad, dv_pad


def forward(p: FlashParams, q, k, v, ql, kl):
  """Kernel forward. q [B,Tq,H,D], k [B,Tk,Hkv,D], v [B,Tk,Hkv,Dv], lengths [B] int32 (already clipped).

  Returns (o [B,Tq,H,Dv] in q.dtype, lse [B,H,Tq_pad,1] f32; lse is unused for gdpa).
  """
  bq, bk, tq_p, tk_p, d_p, dv_p = _pads(p, q, k, v)
  qi, ki, vi = _to_internal(q, tq_p, d_p), _to_internal(k, tk_p, d_p), _to_internal(v, tk_p, dv_p)
  call = _tpu_call_fwd if p.backend == "tpu" else _triton_call_fwd
  o, lse = call(p, qi, ki, vi, ql, kl, bq, bk)
  o = jnp.swapaxes(o[:, :, : q.shape[1], : v.shape[3]], 1, 2)
  return o, lse


def backward(p: FlashParams, q, k, v, ql, kl, o, lse, do):
  """Fused kernel backward; returns (dq, dk, dv) in the dtypes and shapes of q, k, v."""
  bq, bk, tq_p, tk_p, d_p, dv_p = _pads(p, q, k, v)
  h, hkv = q.shape[2], k.shape[2]
  qi, ki, vi = _to_internal(q, tq_p, d_p), _to_internal(k, tk_p, d_p), _to_internal(v, tk_p, dv_p)
  doi = _to_internal(do.astype(q.dtype), tq_p, dv_p)
  if p.mode == "softmax":
    delta = jnp.sum(do.astype(_F32) * o.astype(_F32), axis=-1)  # [B, Tq, H]
    delta = jnp.swapaxes(delta, 1, 2)[..., None]
    delta = jnp.pad(delta, ((0, 0), (0, 0), (0, tq_p - q.shape[1]), (0, 0)))
  else:
    delta = jnp.zeros_like(lse)
  call = _tpu_call_bwd if p.backend == "tpu" else _triton_call_bwd
  dq, dk, dv = call(p, qi, ki, vi, doi, lse, delta, ql, kl, bq, bk)
  dq = jnp.swapaxes(dq[:, :, : q.shape[1], : q.shape[3]], 1, 2)
  b, tk = k.shape[0], k.shape[1]
  dk = dk[:, :, :tk, : k.shape[3]].reshape(b, hkv, h // hkv, tk, k.shape[3]).sum(axis=2)
  dv = dv[:, :, :tk, : v.shape[3]].reshape(b, hkv, h // hkv, tk, v.shape[3]).sum(axis=2)
  return dq.astype(q.dtype), jnp.swapaxes(dk, 1, 2).astype(k.dtype), jnp.swapaxes(dv, 1, 2).astype(v.dtype)


def make_op(p: FlashParams, reference_fn: Callable):
  """Returns `f(q, k, v, ql, kl) -> o` with a custom VJP (fused kernels, or the reference's VJP).

  `reference_fn(q, k, v, ql, kl)` must compute the same function in plain jnp; it is differentiated when
  `p.backward == "xla"`.
  """

  @jax.custom_vjp
  def op(q, k, v, ql, kl):
    return forward(p, q, k, v, ql, kl)[0]

  def op_fwd(q, k, v, ql, kl):
    o, lse = forward(p, q, k, v, ql, kl)
    return o, (q, k, v, ql, kl, o, lse)

  def op_bwd(res, do):
    q, k, v, ql, kl, o, lse = res
    if p.backward == "xla":
      _, vjp = jax.vjp(lambda a, b, c: reference_fn(a, b, c, ql, kl), q, k, v)
      dq, dk, dv = vjp(do)
    else:
      dq, dk, dv = backward(p, q, k, v, ql, kl, o, lse, do)
    return dq, dk, dv, None, None

  op.defvjp(op_fwd, op_bwd)
  return op
