"""Fast greedy MAP inference for DPPs (Chen, Zhang & Zhou, NeurIPS 2018), batched and jitted.

Algorithm 1 (incremental Cholesky) in `greedy_map`, Algorithm 2 (sliding window) in `greedy_map_window`,
the never-materialised low-rank form in `greedy_map_lowrank`, and the relevance/diversity kernel of §4 of
the spec in `dpp_kernel`. See `shared/docs/specs/dpp.md`.

Conventions shared by the greedy functions:
  * `indices [..., k] int32` in selection (= display) order; `valid [..., k] bool`. `valid` turns False at
    the first step whose best remaining gain d² is below the stop threshold and stays False; indices at
    invalid steps are -1.
  * The first pick is accepted without the threshold check (as the official code), unless no candidate
    exists at all (every item masked out).
  * Ties in argmax go to the lowest index. An item is never selected twice.
  * d² is clamped at 0 after every update (float32 cancellation); selected and masked items are held at -inf.
  * Stop threshold: `eps` ("absolute", the official default) or `eps * max_i L_ii` over candidates
    ("relative"; recommended for float32 with eps=1e-6, since absolute 1e-10 effectively never fires there).
    With `stop_rule="gain_lt_one"` the threshold is 1 and applies to every pick including the first
    (unconstrained MAP: stop when adding an item lowers det).
  * Inputs are computed in float32 (bfloat16 / float16 are upcast) or float64. In float32, once the picks
    span a rank-deficient kernel's column space the remaining gains are rounding noise, so the number of
    valid picks and the picks after the rank can differ between implementations and machines; use float64
    or eps_mode="relative" (eps≈1e-6) where that matters.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from recjax.rerank import native

__all__ = ["greedy_map", "greedy_map_window", "greedy_map_lowrank", "dpp_kernel", "greedy_map_impl"]

# Layout and batching of Algorithm 1 (our choice; measured in experiments/bench/dpp.py):
#  * the Cholesky rows of a request are kept in blocks of _ROW_BLOCK steps, [B, rows, M] each, and each
#    block's share of the projection is one batched matrix-vector product (einsum "bt,btm->bm"; 1.3-1.5x
#    faster than a reduction over the rows axis of [rows, B, M] on XLA:CPU, measured 2026-12-02). A finished
#    block is a loop constant of the later blocks' loops, so step t reads only the t rows written so far
#    (rounded up to the block) and nothing is sliced or copied;
#  * requests run in chunks of _CHUNK, one chunk after another through all k steps, so that a chunk's
#    Cholesky rows (_CHUNK·k·M floats) stay in the core's L2 cache instead of streaming from memory each
#    step. Kernel rows are gathered from the full [R, M, M] input (no per-chunk copy of L).
_ROW_BLOCK = 8
_CHUNK = 8


def _check_k(k, m):
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise ValueError(f"k must be a Python int (static), got {k!r}")
  if k < 1 or k > m:
    raise ValueError(f"k must satisfy 1 <= k <= M={m}, got k={k}")


_EPS_MODES = {"absolute": 0, "relative": 1}  # values: the native kernel's eps_mode attribute
_STOP_RULES = {"epsilon": 0, "gain_lt_one": 1}  # values: its stop_rule attribute


def _check_eps(eps_mode, stop_rule):
  if eps_mode not in _EPS_MODES:
    raise ValueError(f"eps_mode must be 'absolute' or 'relative', got {eps_mode!r}")
  if stop_rule not in _STOP_RULES:
    raise ValueError(f"stop_rule must be 'epsilon' or 'gain_lt_one', got {stop_rule!r}")


def _as_float(x, name):
  """x as a real float array of at least float32 precision: integers and bools become the default float,
  bfloat16 / float16 become float32 (a greedy MAP in half precision loses its picks to rounding)."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise ValueError(f"{name} must be real, got {x.dtype}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  elif jnp.finfo(x.dtype).bits < 32:
    x = x.astype(jnp.float32)
  if x.ndim == 0:
    raise ValueError(f"{name} must be an array, got a scalar")
  return x


def _prep_mask(candidate_mask, batch_shape, m):
  if candidate_mask is None:
    return jnp.ones(batch_shape + (m,), bool)
  mask = jnp.asarray(candidate_mask)
  if mask.dtype != jnp.bool_:
    raise ValueError(f"candidate_mask must be bool, got {mask.dtype}")
  if mask.shape != batch_shape + (m,):
    raise ValueError(f"candidate_mask must have shape {batch_shape + (m,)}, got {mask.shape}")
  return mask


def _threshold(diag_masked, eps, eps_mode, stop_rule):
  """Stop threshold per request: [B] from diag_masked [B, M]."""
  dtype = diag_masked.dtype
  b = diag_masked.shape[0]
  if stop_rule == "gain_lt_one":
    return jnp.ones((b,), dtype)
  if eps_mode == "relative":
    return jnp.asarray(eps, dtype) * jnp.maximum(jnp.max(diag_masked, axis=-1), 0)
  return jnp.full((b,), eps, dtype)


def _first_pick_ok(gain, thresh, stop_rule):
  """The first pick skips the threshold (as the official code) unless stop_rule is "gain_lt_one"; it
  fails only when no candidate exists (gain = -inf)."""
  return gain >= thresh if stop_rule == "gain_lt_one" else gain > -jnp.inf


def _select(d2):
  """Per-request argmax with ties to the lowest index: (j [B] int32, gain [B]) for d2 [B, M]."""
  # max + first index attaining it: same result as jnp.argmax (no NaNs here), but two plain reductions
  # instead of XLA:CPU's slower variadic (value, index) reduce.
  m = d2.shape[-1]
  gain = jnp.max(d2, axis=-1)
  j = jnp.min(jnp.where(d2 == gain[:, None], jnp.arange(m, dtype=jnp.int32), m), axis=-1)
  return jnp.minimum(j, m - 1), gain


def _greedy_chunk(row_fn, diag, mask, k, eps, eps_mode, stop_rule, block):
  """Algorithm 1 for a chunk of B requests.

  row_fn(j [B] int32) -> L[b, j_b, :] [B, M]; diag [B, M]; mask [B, M] bool.
  Returns (indices [B, k] int32, valid [B, k] bool).
  """
  dtype = diag.dtype
  b, m = diag.shape
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
  cols = jnp.arange(m, dtype=jnp.int32)
  d2 = jnp.where(mask, diag, neg_inf)
  thresh = _threshold(d2, eps, eps_mode, stop_rule)
  j, gain = _select(d2)
  ok = _first_pick_ok(gain, thresh, stop_rule)
  idx = jnp.full((k, b), -1, jnp.int32).at[0].set(jnp.where(ok, j, -1))
  valid = jnp.zeros((k, b), bool).at[0].set(ok)

  def step(t, state, done_blocks, lo):
    # Pick j of step t is made; write its Cholesky row e, update d², then pick for step t + 1.
    cur, d2, idx, valid, j, gain, ok = state
    # c: [B, rows, M]; c[b, :, j_b] [B, rows] times c is one batched matrix-vector product per block.
    proj = sum(jnp.einsum("bt,btm->bm", jnp.take_along_axis(c, j[:, None, None], axis=2)[..., 0], c)
               for c in done_blocks + (cur,))
    row = jnp.where(mask, row_fn(j), 0)
    e = (row - proj) * lax.rsqrt(jnp.maximum(gain, tiny))[:, None]
    e = jnp.where(mask & ok[:, None], e, 0)
    cur = lax.dynamic_update_index_in_dim(cur, e, t - lo, axis=1)
    d2 = jnp.where(d2 > neg_inf, jnp.maximum(d2 - e * e, 0), neg_inf)
    d2 = jnp.where((cols == j[:, None]) & ok[:, None], neg_inf, d2)
    j, gain = _select(d2)
    ok = ok & (gain >= thresh)  # once a step fails, every later step fails
    idx = lax.dynamic_update_index_in_dim(idx, jnp.where(ok, j, -1), t + 1, axis=0)
    valid = lax.dynamic_update_index_in_dim(valid, ok, t + 1, axis=0)
    return cur, d2, idx, valid, j, gain, ok

  done_blocks = ()
  for lo in range(0, k - 1, block):
    hi = min(lo + block, k - 1)
    cur = jnp.zeros((b, hi - lo, m), dtype)
    state = (cur, d2, idx, valid, j, gain, ok)
    body = functools.partial(step, done_blocks=done_blocks, lo=lo)
    cur, d2, idx, valid, j, gain, ok = lax.fori_loop(lo, hi, body, state)
    done_blocks = done_blocks + (cur,)
  return idx.T, valid.T


def _run_chunks(one_chunk, r, k, chunk):
  """Runs one_chunk(base, size) -> (indices [size, k], valid [size, k]) over requests [0, r) in chunks."""
  n_full, rem = divmod(r, chunk)
  if n_full <= 1 and rem == 0:
    return one_chunk(0, r)
  idx = jnp.zeros((r, k), jnp.int32)
  valid = jnp.zeros((r, k), bool)
  if n_full:
    def body(c, carry):
      i, v = one_chunk(c * chunk, chunk)
      return (lax.dynamic_update_slice_in_dim(carry[0], i, c * chunk, 0),
              lax.dynamic_update_slice_in_dim(carry[1], v, c * chunk, 0))
    idx, valid = lax.fori_loop(0, n_full, body, (idx, valid))
  if rem:
    i, v = one_chunk(n_full * chunk, rem)
    idx, valid = idx.at[n_full * chunk:].set(i), valid.at[n_full * chunk:].set(v)
  return idx, valid


def _over_mesh(fn, mesh, n_batched, *args):
  """Runs fn on each device's share of the request axis (axis 0 of every arg), or directly without a mesh."""
  if mesh is None:
    return fn(*args)
  spec = jax.sharding.PartitionSpec(mesh.axis_names)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * n_batched, out_specs=spec, check_vma=False)(*args)


def _place_on_mesh(mesh, r, *arrays):
  """Checks R against the mesh and puts each array's request axis (axis 0) over all mesh devices."""
  if mesh is None:
    return arrays
  if r is None:
    raise ValueError("mesh= needs batched inputs (a leading request axis R)")
  if r % mesh.size:
    raise ValueError(f"the number of requests R={r} must be divisible by the mesh size {mesh.size}")
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
  return tuple(jax.device_put(a, sharding) for a in arrays)


def _greedy_native(L, k, eps, mask, eps_mode, stop_rule):
  """Algorithm 1 by the native CPU kernel (recjax/rerank/native/greedy_map.cc): L [..., M, M] ->
  (indices [..., k] int32, valid [..., k] bool), the same semantics as `_greedy_chunk`."""
  batch = L.shape[:-2]
  out = (jax.ShapeDtypeStruct(batch + (k,), jnp.int32), jax.ShapeDtypeStruct(batch + (k,), jnp.bool_))
  call = jax.ffi.ffi_call(native.GREEDY_MAP_TARGET, out, vmap_method="broadcast_all")
  eps = jnp.broadcast_to(jnp.asarray(eps, L.dtype), batch)
  return call(L, mask, eps, eps_mode=np.int32(_EPS_MODES[eps_mode]),
              stop_rule=np.int32(_STOP_RULES[stop_rule]))


def _greedy_xla(L, k, eps, mask, eps_mode, stop_rule, block, chunk):
  """Algorithm 1 in XLA ops: requests [R, M, M] in chunks through `_greedy_chunk`."""
  def one_chunk(base, size):
    reqs = base + jnp.arange(size)
    diag = L[reqs[:, None], jnp.arange(L.shape[-1])[None], jnp.arange(L.shape[-1])[None]]
    row_fn = lambda j: L[reqs, j]  # gathered from the full kernel: no copy of the chunk
    msk = lax.dynamic_slice_in_dim(mask, base, size, 0)
    return _greedy_chunk(row_fn, diag, msk, k, eps, eps_mode, stop_rule, block)
  return _run_chunks(one_chunk, L.shape[0], k, chunk)


@functools.partial(jax.jit, static_argnames=("k", "eps_mode", "stop_rule", "block", "chunk", "mesh", "impl"))
def _greedy_map_jit(L, k, eps, mask, eps_mode, stop_rule, block, chunk, mesh=None, impl="xla"):
  def local(L, mask):
    if impl == "native":
      return _greedy_native(L, k, eps, mask, eps_mode, stop_rule)
    return _greedy_xla(L, k, eps, mask, eps_mode, stop_rule, block, chunk)
  if L.ndim == 2:
    i, v = local(L[None], mask[None])
    return i[0], v[0]
  return _over_mesh(local, mesh, 2, L, mask)


def greedy_map_impl(impl="auto"):
  """The implementation `greedy_map(..., impl=impl)` runs here: "native" or "xla".

  "auto" gives "native" when JAX's default backend is the CPU and the native kernel builds (building it on
  the first call), else "xla" with one RuntimeWarning saying why. Raises ValueError for an unknown `impl`
  and RuntimeError for "native" when the kernel cannot be built.
  """
  if impl not in ("auto", "native", "xla"):
    raise ValueError(f"impl must be 'auto', 'native' or 'xla', got {impl!r}")
  if impl == "xla" or (impl == "auto" and jax.default_backend() != "cpu"):
    return "xla"
  why = native.reason()
  if why is None:
    return "native"
  if impl == "native":
    raise RuntimeError(f"impl='native' but the native greedy_map kernel is unavailable: {why}")
  _warn_native_once(why)
  return "xla"


@functools.cache
def _warn_native_once(why):
  # stacklevel 4: this function, greedy_map_impl, greedy_map, then the caller's line.
  warnings.warn(f"recjax: using the XLA greedy_map on CPU (slower); the native kernel is unavailable: {why}",
                RuntimeWarning, stacklevel=4)


def greedy_map(L, k, *, eps=1e-10, candidate_mask=None, eps_mode="absolute", stop_rule="epsilon", mesh=None,
               impl="auto"):
  """Greedy MAP for a DPP by incremental Cholesky (the paper's Algorithm 1).

  At each step picks argmax_i d_i², d_i² = det(L_{Y∪{i}}) / det(L_Y), among unselected candidates.

  Args:
    L: [M, M] or [R, M, M] float, symmetric PSD kernel(s) (bfloat16 / float16 are computed in float32;
      complex is an error). float32 by default; float64 under
      `jax_enable_x64`. Only rows of selected items and the diagonal are read.
    k: static Python int, 1 <= k <= M, the list length N.
    eps: stop threshold on the best remaining d² (official default 1e-10).
    candidate_mask: optional [M] / [R, M] bool; False items are never selected (padding).
    eps_mode: "absolute" (default, official) or "relative" (threshold eps·max_i L_ii) [our choice].
    stop_rule: "epsilon" (default) or "gain_lt_one" (threshold 1, unconstrained MAP) [our choice].
    mesh: optional `jax.sharding.Mesh`; batched requests are split over all its devices (shard_map on the
      request axis, R divisible by mesh.size). On a CPU host started with
      `--xla_force_host_platform_device_count=<cores>` this runs one request stream per core [our choice].
    impl: "auto" (default): when JAX's default backend is the CPU, the native kernel
      `recjax/rerank/native/greedy_map.cc` (XLA FFI, compiled on first use; see `recjax.rerank.native`),
      else XLA ops; falls back to XLA ops with one warning when the native kernel cannot be built.
      "native" requires the native kernel, "xla" uses XLA ops on every platform. Both give the same
      picks up to float rounding [our choice].

  Returns:
    (indices [..., k] int32, valid [..., k] bool); see the module docstring. A rank-r kernel gives at
    most r valid picks (in float64; in float32 use eps_mode="relative", eps≈1e-6).

  Cost: O(k²·M) time per request (step t reads the t Cholesky rows written so far), O(k·M) memory per
    request; only the selected rows of L and its diagonal are read. Native kernel: one request per
    thread of XLA's intra-op pool, its Cholesky rows in that core's L2 cache, the projection, d² update
    and argmax fused into one pass over the items per step. XLA ops: requests in chunks of 8 through all
    k steps, rows in blocks of 8.

  Raises:
    ValueError: if L is not [M, M] / [R, M, M] square, k is not an int in [1, M], the mask shape or dtype
      is wrong, eps_mode / stop_rule / impl is unknown, or R is not divisible by the mesh size.
    RuntimeError: if impl="native" and the native kernel cannot be built (the message says why).
    jax.errors.JaxRuntimeError: native kernel only, when the result is used: L has a NaN or infinity on
      the diagonal of a candidate or in the row of a pick (the message names the request and item). The
      XLA path does not check: non-finite kernels give unspecified picks there.

  Source: Chen, Zhang & Zhou (NeurIPS 2018), Algorithm 1; stop rule and masking as the official
    `fast-map-dpp` `dpp()`.
  """
  L = _as_float(L, "L")
  if L.ndim not in (2, 3) or L.shape[-1] != L.shape[-2]:
    raise ValueError(f"L must be square [M, M] or [R, M, M], got shape {L.shape}")
  m = L.shape[-1]
  _check_k(k, m)
  _check_eps(eps_mode, stop_rule)
  mask = _prep_mask(candidate_mask, L.shape[:-2], m)
  impl = greedy_map_impl(impl)
  L, mask = _place_on_mesh(mesh, L.shape[0] if L.ndim == 3 else None, L, mask)
  return _greedy_map_jit(L, int(k), eps, mask, eps_mode, stop_rule, _ROW_BLOCK, _CHUNK, mesh, impl)


@functools.partial(jax.jit, static_argnames=("k", "eps_mode", "stop_rule", "block", "chunk", "mesh"))
def _greedy_lowrank_jit(features, quality, k, eps, mask, eps_mode, stop_rule, block, chunk, mesh=None):
  def local(features, quality, mask):
    def one_chunk(base, size):
      f = lax.dynamic_slice_in_dim(features, base, size, 0)  # [B, M, D]: small next to an M × M kernel
      msk = lax.dynamic_slice_in_dim(mask, base, size, 0)
      q = jnp.where(msk, lax.dynamic_slice_in_dim(quality, base, size, 0), 0)
      diag = q * q * jnp.sum(f * f, axis=-1)

      def row_fn(j):
        fj = jnp.take_along_axis(f, j[:, None, None], axis=1)[:, 0]  # [B, D]
        qj = jnp.take_along_axis(q, j[:, None], axis=1)  # [B, 1]
        return qj * q * jnp.einsum("bmd,bd->bm", f, fj)

      return _greedy_chunk(row_fn, diag, msk, k, eps, eps_mode, stop_rule, block)
    return _run_chunks(one_chunk, features.shape[0], k, chunk)
  if features.ndim == 2:
    i, v = local(features[None], quality[None], mask[None])
    return i[0], v[0]
  return _over_mesh(local, mesh, 3, features, quality, mask)


def greedy_map_lowrank(features, quality, k, *, eps=1e-10, candidate_mask=None, eps_mode="absolute",
                       stop_rule="epsilon", mesh=None):
  """Algorithm 1 on L = diag(q)·F·Fᵀ·diag(q) without materialising the M × M kernel.

  Row j of L is q_j · q ⊙ (F f_j) and L_ii = q_i²·‖f_i‖², so a step costs O(M·D) for the row plus
  O(t·M) for the Cholesky update.

  Args:
    features: [M, D] or [R, M, D] float, item features F (unit rows give S_ii = 1; not required).
    quality: [M] or [R, M] float, per-item quality q (e.g. exp(α·score)).
    k: static Python int, 1 <= k <= M.
    eps, candidate_mask, eps_mode, stop_rule, mesh: as `greedy_map`.

  Returns:
    (indices [..., k] int32, valid [..., k] bool), identical to `greedy_map` on the materialised kernel
    (up to rounding). At most rank(F) <= D valid picks.

  Cost: O(k·M·D + k²·M) time, O(k·M + M·D) memory per request.

  Raises:
    ValueError: on shape mismatch between features and quality, k outside [1, M], bad mask/options.

  Source: spec §4 "low-rank / feature form" [our choice]; Algorithm 1 of Chen et al. (2018).
  """
  features = _as_float(features, "features")
  quality = _as_float(quality, "quality").astype(features.dtype)
  if features.ndim not in (2, 3) or quality.shape != features.shape[:-1]:
    raise ValueError(f"features must be [M, D] or [R, M, D] and quality [M] or [R, M] matching; got "
                     f"features {features.shape}, quality {quality.shape}")
  m = features.shape[-2]
  _check_k(k, m)
  _check_eps(eps_mode, stop_rule)
  mask = _prep_mask(candidate_mask, features.shape[:-2], m)
  features, quality, mask = _place_on_mesh(mesh, features.shape[0] if features.ndim == 3 else None,
                                           features, quality, mask)
  return _greedy_lowrank_jit(features, quality, int(k), eps, mask, eps_mode, stop_rule, _ROW_BLOCK, _CHUNK, mesh)


def _batched(fn, n_batch_dims, *args):
  for _ in range(n_batch_dims):
    fn = jax.vmap(fn)
  return fn(*args)


def _window_single(L, mask, k, w, eps, eps_mode, stop_rule):
  """Algorithm 2 for one request by exact recompute of the window factor each step."""
  dtype = L.dtype
  m = L.shape[0]
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  diag = jnp.diagonal(L)
  d2_0 = jnp.where(mask, diag, neg_inf)
  thresh = _threshold(d2_0[None], eps, eps_mode, stop_rule)[0]
  nw = w - 1
  eye = jnp.eye(max(nw, 1), dtype=dtype)

  def d2_of(hist, t, avail):
    if nw == 0:
      return jnp.where(avail, diag, neg_inf)
    # hist = [-1]*nw ++ idx: the last nw picks before step t are hist[t : t+nw].
    win = lax.dynamic_slice_in_dim(hist, t, nw)  # [nw]
    slot = win >= 0
    safe = jnp.where(slot, win, 0)
    rows = jnp.where(slot[:, None] & mask[None, :], L[safe], 0)  # [nw, M]
    lww = jnp.where(slot[:, None] & slot[None, :], rows[:, safe], eye)
    v = jnp.linalg.cholesky(lww)
    cw = jax.scipy.linalg.solve_triangular(v, rows, lower=True)  # [nw, M]
    d2 = jnp.maximum(diag - jnp.sum(cw * cw, axis=0), 0)
    return jnp.where(avail, d2, neg_inf)

  def step(t, state):
    hist, avail, valid, done = state
    d2 = d2_of(hist, t, avail)
    j, gain = _select(d2[None])
    j, gain = j[0], gain[0]
    ok = ~done & jnp.where(t == 0, _first_pick_ok(gain, thresh, stop_rule), gain >= thresh)
    hist = hist.at[t + nw].set(jnp.where(ok, j, -1))
    avail = avail & ~((jnp.arange(m) == j) & ok)
    valid = valid.at[t].set(ok)
    return hist, avail, valid, done | ~ok

  state = (jnp.full((k + nw,), -1, jnp.int32), mask, jnp.zeros((k,), bool), jnp.asarray(False))
  hist, _, valid, _ = lax.fori_loop(0, k, step, state)
  return hist[nw:], valid


@functools.partial(jax.jit, static_argnames=("k", "window", "eps_mode", "stop_rule"))
def _greedy_window_jit(L, k, window, eps, mask, eps_mode, stop_rule):
  one = functools.partial(_window_single, k=k, w=window, eps=eps, eps_mode=eps_mode, stop_rule=stop_rule)
  return _batched(one, L.ndim - 2, L, mask)


def greedy_map_window(L, k, window, *, eps=1e-10, candidate_mask=None, eps_mode="absolute",
                      stop_rule="epsilon"):
  """Sliding-window greedy MAP (the paper's Algorithm 2).

  Step t picks argmax_{i ∉ Y} det(L_{W_t ∪ {i}}) / det(L_{W_t}), where W_t are the `window − 1` most
  recent picks. Items that leave the window stay excluded. While t < window, this equals `greedy_map`.
  `window = 1` conditions on nothing (order by L_ii).

  The window factor is recomputed exactly each step [our choice, spec §3(b)]: Cholesky of
  L_{W,W} ((w−1)×(w−1)) and a triangular solve V⁻¹ L_{W,:}; no downdate error accumulates.

  Args:
    L: [M, M] or [R, M, M] float, symmetric PSD kernel(s).
    k: static Python int, 1 <= k <= M.
    window: static Python int >= 1, the window size w.
    eps, candidate_mask, eps_mode, stop_rule: as `greedy_map`.

  Returns:
    (indices [..., k] int32, valid [..., k] bool).

  Cost: O(k·(w²·M + w³)) time, O(w·M) extra memory per request (Givens downdating would be O(k·w·M)).

  Raises:
    ValueError: as `greedy_map`, and if window is not an int >= 1.

  Source: Chen, Zhang & Zhou (NeurIPS 2018), Algorithm 2; official `dpp_sw()` semantics.
  """
  L = _as_float(L, "L")
  if L.ndim not in (2, 3) or L.shape[-1] != L.shape[-2]:
    raise ValueError(f"L must be square [M, M] or [R, M, M], got shape {L.shape}")
  m = L.shape[-1]
  _check_k(k, m)
  if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
    raise ValueError(f"window must be a Python int >= 1, got {window!r}")
  _check_eps(eps_mode, stop_rule)
  mask = _prep_mask(candidate_mask, L.shape[:-2], m)
  return _greedy_window_jit(L, int(k), int(window), eps, mask, eps_mode, stop_rule)


def dpp_kernel(scores, item_features, theta, *, center=False):
  """Relevance/diversity DPP kernel L = diag(exp(α·s)) · S · diag(exp(α·s)), α = θ / (2(1 − θ)).

  S is the cosine similarity of the L2-normalised item features (PSD, S_ii = 1; an all-zero feature row
  gives a zero row of S). Greedy MAP on L maximises θ·Σ_{i∈Y} s_i + (1−θ)·log det S_Y (up to the factor
  1/(1−θ)). θ = 0 is pure diversity; θ → 1 approaches sorting by score.

  Args:
    scores: [M] or [R, M] float, relevance scores s.
    item_features: [M, D] or [R, M, D] float (a shared [M, D] is broadcast over R).
    theta: float in [0, 1).
    center: if True, use exp(α·(s − max s)) per request to avoid overflow at θ near 1 [our choice]. It
      scales every d² by one constant: greedy order unchanged, but an absolute eps stop is affected.
      Near θ = 1 without centring, L_ii reaches ~exp(2α·max s) (3e117 at θ = 0.99 for s ≈ 6), so an
      absolute eps = 1e-10 no longer separates rank from rounding: use center=True or eps_mode="relative".

  Returns:
    L [M, M] or [R, M, M], dtype of the promoted inputs.

  Raises:
    ValueError: if theta is outside [0, 1) or the shapes disagree.

  Source: spec §4 (kernel of the official test script / paper §5) [secondary, unverified].
  """
  theta_f = float(theta)
  if not (0.0 <= theta_f < 1.0) or math.isnan(theta_f):
    raise ValueError(f"theta must be in [0, 1), got {theta!r}")
  scores = _as_float(scores, "scores")
  feats = _as_float(item_features, "item_features")
  dtype = jnp.result_type(scores.dtype, feats.dtype)
  scores, feats = scores.astype(dtype), feats.astype(dtype)
  if scores.ndim not in (1, 2) or feats.ndim not in (2, 3) or feats.shape[-2] != scores.shape[-1]:
    raise ValueError(f"scores must be [M] or [R, M] and item_features [M, D] or [R, M, D] with the same M; "
                     f"got {scores.shape} and {feats.shape}")
  if feats.ndim == 3 and (scores.ndim != 2 or feats.shape[0] != scores.shape[0]):
    raise ValueError(f"batched item_features {feats.shape} need scores [R, M], got {scores.shape}")
  alpha = theta_f / (2.0 * (1.0 - theta_f))
  norm = jnp.linalg.norm(feats, axis=-1, keepdims=True)
  f = feats / jnp.where(norm > 0, norm, 1)
  sim = jnp.einsum("...id,...jd->...ij", f, f)
  # S_ii is exactly 1 (0 for an all-zero row): rounding in ‖f‖² must not decide ties at θ = 0.
  m = sim.shape[-1]
  sim = jnp.where(jnp.eye(m, dtype=bool), (norm[..., 0] > 0).astype(dtype)[..., None, :], sim)
  s = scores - jnp.max(scores, axis=-1, keepdims=True) if center else scores
  q = jnp.exp(alpha * s)
  return q[..., :, None] * sim * q[..., None, :]
