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
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["greedy_map", "greedy_map_window", "greedy_map_lowrank", "dpp_kernel"]

# Cholesky rows are read in blocks of this many steps: step t reads ceil-to-block(t) rows instead of all k,
# so the per-step work is O(t·M) and not O(k·M) (our choice; see experiments/bench/dpp.py).
_ROW_BLOCK = 8


def _check_k(k, m):
  if not isinstance(k, int) or isinstance(k, bool):
    raise ValueError(f"k must be a Python int (static), got {k!r}")
  if k < 1 or k > m:
    raise ValueError(f"k must satisfy 1 <= k <= M={m}, got k={k}")


def _check_eps(eps_mode, stop_rule):
  if eps_mode not in ("absolute", "relative"):
    raise ValueError(f"eps_mode must be 'absolute' or 'relative', got {eps_mode!r}")
  if stop_rule not in ("epsilon", "gain_lt_one"):
    raise ValueError(f"stop_rule must be 'epsilon' or 'gain_lt_one', got {stop_rule!r}")


def _as_float(x, name):
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
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
  dtype = diag_masked.dtype
  if stop_rule == "gain_lt_one":
    return jnp.asarray(1.0, dtype)
  if eps_mode == "relative":
    return jnp.asarray(eps, dtype) * jnp.maximum(jnp.max(diag_masked), 0)
  return jnp.asarray(eps, dtype)


def _select(d2, t, done, thresh, check_first):
  """argmax (lowest index on ties) and whether step t accepts it."""
  # max + first index attaining it: same result as jnp.argmax (no NaNs here), but two plain reductions
  # instead of XLA:CPU's slower variadic (value, index) reduce.
  gain = jnp.max(d2)
  j = jnp.min(jnp.where(d2 == gain, jnp.arange(d2.shape[0], dtype=jnp.int32), d2.shape[0]))
  j = jnp.minimum(j, d2.shape[0] - 1)
  first_ok = gain >= thresh if check_first else gain > -jnp.inf
  ok = ~done & jnp.where(t == 0, first_ok, gain >= thresh)
  return j, gain, ok


def _greedy_single(row_fn, diag, mask, k, eps, eps_mode, stop_rule, block):
  """Algorithm 1 for one request. row_fn(j) -> L[j, :] [M]; diag [M]; mask [M] bool."""
  dtype = diag.dtype
  m = diag.shape[0]
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
  d2 = jnp.where(mask, diag, neg_inf)
  thresh = _threshold(d2, eps, eps_mode, stop_rule)
  check_first = stop_rule == "gain_lt_one"
  state = (
      jnp.zeros((k, m), dtype),  # C: row t holds e of pick t (zero until written)
      d2,
      jnp.full((k,), -1, jnp.int32),
      jnp.zeros((k,), bool),
      jnp.asarray(False),
  )

  def step(t, state, rows):
    c, d2, idx, valid, done = state
    j, gain, ok = _select(d2, t, done, thresh, check_first)
    # Only the first `rows` rows of C can be non-zero at this step (static slice: no wasted traffic).
    cr = c[:rows]
    cj = lax.dynamic_index_in_dim(cr, j, axis=1, keepdims=False)  # [rows]
    proj = jnp.sum(cj[:, None] * cr, axis=0) if rows else jnp.zeros((m,), dtype)
    row = jnp.where(mask, row_fn(j), 0)
    e = (row - proj) * lax.rsqrt(jnp.maximum(gain, tiny))
    e = jnp.where(mask & ok, e, 0)
    c = lax.dynamic_update_index_in_dim(c, e, t, axis=0)
    d2 = jnp.where(d2 > neg_inf, jnp.maximum(d2 - e * e, 0), neg_inf)
    d2 = jnp.where((jnp.arange(m) == j) & ok, neg_inf, d2)
    idx = idx.at[t].set(jnp.where(ok, j, -1))
    valid = valid.at[t].set(ok)
    return c, d2, idx, valid, done | ~ok

  # Steps 0..k-2 select and update; step k-1 only selects. Blocked by _ROW_BLOCK: a block of steps
  # [lo, hi) reads rows [0, hi-1), which covers every row written before step hi-1.
  for lo in range(0, k - 1, block):
    hi = min(lo + block, k - 1)
    state = lax.fori_loop(lo, hi, functools.partial(step, rows=hi - 1), state)
  c, d2, idx, valid, done = state
  j, _, ok = _select(d2, k - 1, done, thresh, check_first)
  idx = idx.at[k - 1].set(jnp.where(ok, j, -1))
  valid = valid.at[k - 1].set(ok)
  return idx, valid


def _batched(fn, n_batch_dims, *args):
  for _ in range(n_batch_dims):
    fn = jax.vmap(fn)
  return fn(*args)


def _chunked(one, chunk, *args):
  """vmap over the leading axis in chunks of `chunk` requests (lax.map), so that each chunk's [chunk, k, M]
  Cholesky buffer stays in cache for all k steps instead of streaming every request's buffer each step."""
  r = args[0].shape[0]
  if chunk is None or r <= chunk:
    return jax.vmap(one)(*args)
  return lax.map(lambda a: one(*a), args, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("k", "eps_mode", "stop_rule", "block", "chunk"))
def _greedy_map_jit(L, k, eps, mask, eps_mode, stop_rule, block, chunk=None):
  def one(l, msk):
    return _greedy_single(lambda j: lax.dynamic_index_in_dim(l, j, 0, keepdims=False),
                          jnp.diagonal(l), msk, k, eps, eps_mode, stop_rule, block)
  if L.ndim == 2:
    return one(L, mask)
  return _chunked(one, chunk, L, mask)


def greedy_map(L, k, *, eps=1e-10, candidate_mask=None, eps_mode="absolute", stop_rule="epsilon"):
  """Greedy MAP for a DPP by incremental Cholesky (the paper's Algorithm 1).

  At each step picks argmax_i d_i², d_i² = det(L_{Y∪{i}}) / det(L_Y), among unselected candidates.

  Args:
    L: [M, M] or [R, M, M] float, symmetric PSD kernel(s). float32 by default; float64 under
      `jax_enable_x64`. Only rows of selected items and the diagonal are read.
    k: static Python int, 1 <= k <= M, the list length N.
    eps: stop threshold on the best remaining d² (official default 1e-10).
    candidate_mask: optional [M] / [R, M] bool; False items are never selected (padding).
    eps_mode: "absolute" (default, official) or "relative" (threshold eps·max_i L_ii) [our choice].
    stop_rule: "epsilon" (default) or "gain_lt_one" (threshold 1, unconstrained MAP) [our choice].

  Returns:
    (indices [..., k] int32, valid [..., k] bool); see the module docstring. A rank-r kernel gives at
    most r valid picks (in float64; in float32 use eps_mode="relative", eps≈1e-6).

  Cost: O(k²·M) time per request (step t reads t rows of the [k, M] Cholesky buffer, rounded up to a
    block of 8), O(k·M) memory per request; requests are batched with vmap.

  Raises:
    ValueError: if L is not [M, M] / [R, M, M] square, k is not an int in [1, M], the mask shape or dtype
      is wrong, or eps_mode / stop_rule is unknown.

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
  return _greedy_map_jit(L, k, eps, mask, eps_mode, stop_rule, _ROW_BLOCK)


@functools.partial(jax.jit, static_argnames=("k", "eps_mode", "stop_rule", "block"))
def _greedy_lowrank_jit(features, quality, k, eps, mask, eps_mode, stop_rule, block):
  def one(f, q, msk):
    q = jnp.where(msk, q, 0)
    diag = q * q * jnp.sum(f * f, axis=-1)

    def row(j):
      fj = lax.dynamic_index_in_dim(f, j, 0, keepdims=False)
      return q[j] * q * (f @ fj)

    return _greedy_single(row, diag, msk, k, eps, eps_mode, stop_rule, block)
  return _batched(one, features.ndim - 2, features, quality, mask)


def greedy_map_lowrank(features, quality, k, *, eps=1e-10, candidate_mask=None, eps_mode="absolute",
                       stop_rule="epsilon"):
  """Algorithm 1 on L = diag(q)·F·Fᵀ·diag(q) without materialising the M × M kernel.

  Row j of L is q_j · q ⊙ (F f_j) and L_ii = q_i²·‖f_i‖², so a step costs O(M·D) for the row plus
  O(t·M) for the Cholesky update.

  Args:
    features: [M, D] or [R, M, D] float, item features F (unit rows give S_ii = 1; not required).
    quality: [M] or [R, M] float, per-item quality q (e.g. exp(α·score)).
    k: static Python int, 1 <= k <= M.
    eps, candidate_mask, eps_mode, stop_rule: as `greedy_map`.

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
  return _greedy_lowrank_jit(features, quality, k, eps, mask, eps_mode, stop_rule, _ROW_BLOCK)


def _window_single(L, mask, k, w, eps, eps_mode, stop_rule):
  """Algorithm 2 for one request by exact recompute of the window factor each step."""
  dtype = L.dtype
  m = L.shape[0]
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  diag = jnp.diagonal(L)
  d2_0 = jnp.where(mask, diag, neg_inf)
  thresh = _threshold(d2_0, eps, eps_mode, stop_rule)
  check_first = stop_rule == "gain_lt_one"
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
    j, _, ok = _select(d2, t, done, thresh, check_first)
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
  if not isinstance(window, int) or isinstance(window, bool) or window < 1:
    raise ValueError(f"window must be a Python int >= 1, got {window!r}")
  _check_eps(eps_mode, stop_rule)
  mask = _prep_mask(candidate_mask, L.shape[:-2], m)
  return _greedy_window_jit(L, k, window, eps, mask, eps_mode, stop_rule)


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
  s = scores - jnp.max(scores, axis=-1, keepdims=True) if center else scores
  q = jnp.exp(alpha * s)
  return q[..., :, None] * sim * q[..., None, :]
