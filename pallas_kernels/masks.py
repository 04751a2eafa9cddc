"""Window / padding masks and block ranges shared by the references and the kernels.

Conventions (docs/specs/kernels.md §1): query i may see key j iff
`i < q_len and j < kv_len and i - wl <= j <= i + wr` (inclusive bounds). `window=None` means no window;
an int `w` means `(w, w)`.
"""
from typing import Optional

import jax.numpy as jnp
import numpy as np

# Stands for "no bound" inside kernels; small enough that i ± NO_WINDOW never overflows int32.
NO_WINDOW = 1 << 29


def normalize_window(window) -> Optional[tuple[int, int]]:
  """Returns `None` or `(wl, wr)` with non-negative Python ints.

  Raises:
    ValueError: for a negative int, a pair of the wrong length or with negative or non-int entries, or
      any other type.

  Source: docs/specs/kernels.md §1 (window convention); our choice to reject negatives.
  """
  if window is None:
    return None
  if isinstance(window, (bool, np.bool_)):
    raise ValueError(f"window must be None, an int or a (left, right) pair, got {window!r}")
  if isinstance(window, (int, np.integer)):
    if window < 0:
      raise ValueError(f"window must be >= 0, got {window}")
    return (int(window), int(window))
  if isinstance(window, (tuple, list)):
    if len(window) != 2:
      raise ValueError(f"window pair must have 2 entries (left, right), got {window!r}")
    out = []
    for w in window:
      if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 0:
        raise ValueError(f"window entries must be non-negative ints, got {window!r}")
      out.append(int(w))
    return (out[0], out[1])
  raise ValueError(f"window must be None, an int or a (left, right) pair, got {window!r}")


def window_bounds(window) -> tuple[int, int]:
  """`(wl, wr)` for an already normalized window, with `NO_WINDOW` standing for "unbounded"."""
  if window is None:
    return (NO_WINDOW, NO_WINDOW)
  return (min(window[0], NO_WINDOW), min(window[1], NO_WINDOW))


def check_qkv(q, k, v):
  """Validates `q [B,Tq,H,D]`, `k [B,Tk,Hkv,D]`, `v [B,Tk,Hkv,Dv]` and returns `(B, Tq, Tk, H, Hkv)`.

  Raises:
    ValueError: wrong rank, mismatched batch / length / head dims, or `H % Hkv != 0`.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"q, k, v must be rank 4 [B, T, H, D]; got {q.shape}, {k.shape}, {v.shape}")
  b, tq, h, d = q.shape
  bk, tk, hkv, dk = k.shape
  if bk != b or v.shape[0] != b:
    raise ValueError(f"batch sizes differ: q {q.shape}, k {k.shape}, v {v.shape}")
  if dk != d:
    raise ValueError(f"q and k head dims differ: q {q.shape}, k {k.shape}")
  if v.shape[1] != tk or v.shape[2] != hkv:
    raise ValueError(f"k and v must agree on [B, Tk, Hkv]: k {k.shape}, v {v.shape}")
  if hkv == 0 or h % hkv != 0:
    raise ValueError(f"H={h} must be a multiple of Hkv={hkv}")
  return b, tq, tk, h, hkv


def check_lengths(lengths, batch: int, max_len: int, name: str):
  """Returns `lengths` as int32 [B], defaulting to `max_len`; clipped to [0, max_len].

  Raises:
    ValueError: if the shape is not [B].
  """
  if lengths is None:
    return jnp.full((batch,), max_len, jnp.int32)
  lengths = jnp.asarray(lengths)
  if lengths.shape != (batch,):
    raise ValueError(f"{name} must have shape [B]=({batch},), got {lengths.shape}")
  return jnp.clip(lengths.astype(jnp.int32), 0, max_len)


def visible_mask(tq: int, tk: int, window, q_lengths, kv_lengths):
  """Boolean mask [B, Tq, Tk]: True where query i may see key j.

  Args:
    window: normalized window (None or (wl, wr)).
    q_lengths, kv_lengths: [B] int32.
  """
  i = jnp.arange(tq, dtype=jnp.int32)[:, None]
  j = jnp.arange(tk, dtype=jnp.int32)[None, :]
  m = (i < q_lengths[:, None, None]) & (j < kv_lengths[:, None, None])
  if window is not None:
    wl, wr = window
    m = m & (j >= i - wl) & (j <= i + wr)
  return m


def kv_block_range(q_block, block_q: int, block_k: int, q_len, kv_len, wl: int, wr: int):
  """First and last (inclusive) kv block visible from a query block; `last < first` means none.

  Works on Python ints or traced int32 scalars / arrays. Query rows [qs, qe) with qe clipped to q_len
  see keys in [max(0, qs - wl), min(kv_len, qe - 1 + wr + 1)).
  """
  qs = q_block * block_q
  qe = jnp.minimum(qs + block_q, q_len)
  lo = jnp.maximum(qs - wl, 0)
  hi = jnp.minimum(kv_len, qe + wr)
  first = lo // block_k
  last = jnp.where((hi > lo) & (qe > qs), (hi - 1) // block_k, first - 1)
  return first, last


def q_block_range(kv_block, block_q: int, block_k: int, q_len, kv_len, wl: int, wr: int):
  """First and last (inclusive) query block that sees a kv block; `last < first` means none."""
  ks = kv_block * block_k
  ke = jnp.minimum(ks + block_k, kv_len)
  lo = jnp.maximum(ks - wr, 0)
  hi = jnp.minimum(q_len, ke + wl)
  first = lo // block_q
  last = jnp.where((hi > lo) & (ke > ks), (hi - 1) // block_q, first - 1)
  return first, last


def max_blocks_visited(block_outer: int, block_inner: int, n_inner: int, span: int) -> int:
  """Static upper bound on inner blocks touched by one outer block for a window of total `span`.

  An outer block of `block_outer` rows sees at most `block_outer - 1 + span + 1` consecutive inner
  positions, which straddle at most `ceil(that / block_inner) + 1` inner blocks.
  """
  if span >= NO_WINDOW:
    return n_inner
  width = block_outer + span
  return max(1, min(n_inner, -(-width // block_inner) + 1))
