"""Relevance and diversity metrics for re-ranked lists (spec `dpp.md` §7).

All functions take lists as arrays of positions [..., N] and return one value per list (NumPy float64,
shape [...]); average over users with `np.nanmean`. Lists shorter than N are expressed by `valid [..., N]`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mrr", "precision_recall_at_n", "ilad", "ilmd", "pairwise_distance"]


def _hits(hits, valid):
  hits = np.asarray(hits, bool)
  if hits.ndim == 0:
    raise ValueError("hits must be at least 1-D [..., N]")
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != hits.shape:
      raise ValueError(f"valid shape {valid.shape} != hits shape {hits.shape}")
    hits = hits & valid
  return hits


def mrr(hits, valid=None):
  """Reciprocal rank of the first relevant item per list (0 when none).

  Args:
    hits: [..., N] bool, hits[..., p] = the item at position p (0-based) is relevant.
    valid: optional [..., N] bool; invalid positions never count as hits.

  Returns:
    [...] float64 in [0, 1].

  Raises:
    ValueError: on a scalar input or mismatched shapes.

  Source: standard definition (spec §7) [our choice; the paper's exact variant is unverified].
  """
  hits = _hits(hits, valid)
  first = np.argmax(hits, axis=-1)
  return np.where(hits.any(axis=-1), 1.0 / (first + 1.0), 0.0)


def precision_recall_at_n(hits, n_relevant, valid=None):
  """Precision@N and Recall@N per list.

  Args:
    hits: [..., N] bool, as `mrr`.
    n_relevant: [...] int, number of held-out relevant items of each user (|T|).
    valid: optional [..., N] bool.

  Returns:
    (precision [...], recall [...]) float64. Precision divides by N (the requested list length, so
    short lists are penalised); recall divides by |T| and is NaN where |T| = 0.

  Raises:
    ValueError: on mismatched shapes or negative n_relevant.
  """
  hits = _hits(hits, valid)
  n_relevant = np.asarray(n_relevant)
  if n_relevant.shape != hits.shape[:-1]:
    raise ValueError(f"n_relevant shape {n_relevant.shape} != hits batch shape {hits.shape[:-1]}")
  if np.any(n_relevant < 0):
    raise ValueError("n_relevant must be >= 0")
  n_hit = hits.sum(axis=-1).astype(np.float64)
  precision = n_hit / hits.shape[-1]
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(n_relevant > 0, n_hit / np.maximum(n_relevant, 1), np.nan)
  return precision, recall


def pairwise_distance(item_features, indices):
  """1 − cosine similarity between the items of each list.

  Args:
    item_features: [M, D] float, item features (normalised here; an all-zero row has similarity 0).
    indices: [..., N] int, item ids into item_features (negative entries are clipped; mask with `valid`).

  Returns:
    [..., N, N] float64 distances 1 − S_ij.
  """
  f = np.asarray(item_features, np.float64)
  if f.ndim != 2:
    raise ValueError(f"item_features must be [M, D], got {f.shape}")
  norm = np.linalg.norm(f, axis=-1, keepdims=True)
  f = f / np.where(norm > 0, norm, 1.0)
  idx = np.clip(np.asarray(indices), 0, f.shape[0] - 1)
  g = f[idx]
  # Clamped at 0: 1 − cos of two equal unit vectors can round to -1e-16.
  return np.maximum(1.0 - np.einsum("...id,...jd->...ij", g, g), 0.0)


def _pair_mask(shape, valid, window):
  n = shape[-1]
  pos = np.arange(n)
  pm = pos[:, None] != pos[None, :]
  if window is not None:
    if window < 2:
      raise ValueError(f"window must be >= 2 for pairwise metrics, got {window}")
    pm &= np.abs(pos[:, None] - pos[None, :]) < window
  pm = np.broadcast_to(pm, shape[:-1] + (n, n))
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != shape:
      raise ValueError(f"valid shape {valid.shape} != indices shape {shape}")
    pm = pm & valid[..., :, None] & valid[..., None, :]
  return pm


def ilad(item_features, indices, valid=None, window=None):
  """Intra-list average distance: mean over pairs i ≠ j of (1 − S_ij).

  Args:
    item_features: [M, D] float, the features that define S (cosine similarity).
    indices: [..., N] int item ids in display order.
    valid: optional [..., N] bool; invalid positions are ignored.
    window: None for all pairs, or w >= 2 for the window-local variant (pairs with |pos_i − pos_j| < w).

  Returns:
    [...] float64; NaN for lists with no eligible pair.

  Raises:
    ValueError: on bad shapes or window < 2.

  Source: spec §7 (ILAD; the window-local variant's exact definition is [secondary, unverified]).
  """
  idx = np.asarray(indices)
  dist = pairwise_distance(item_features, idx)
  pm = _pair_mask(idx.shape, valid, window)
  cnt = pm.sum(axis=(-1, -2))
  tot = np.where(pm, dist, 0.0).sum(axis=(-1, -2))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def ilmd(item_features, indices, valid=None, window=None):
  """Intra-list minimal distance: min over pairs i ≠ j of (1 − S_ij). Arguments and errors as `ilad`.

  Returns:
    [...] float64; NaN for lists with no eligible pair.
  """
  idx = np.asarray(indices)
  dist = pairwise_distance(item_features, idx)
  pm = _pair_mask(idx.shape, valid, window)
  out = np.where(pm, dist, np.inf).min(axis=(-1, -2))
  return np.where(np.isfinite(out), out, np.nan)
