"""CTR evaluation metrics: exact AUC, gAUC, LogLoss, NE.

All metrics are computed on the host in float64 over the full evaluation set (InterFormer spec §9).
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-7


def _check(labels: np.ndarray, scores: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  labels = np.asarray(labels, dtype=np.float64).reshape(-1)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  if labels.shape != scores.shape:
    raise ValueError(f"{name}: labels {labels.shape} and scores {scores.shape} differ in shape")
  if labels.size == 0:
    raise ValueError(f"{name}: empty input")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{name}: scores contain NaN or inf (first at index {int(np.argmin(np.isfinite(scores)))})")
  return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Exact ROC-AUC: the Mann–Whitney U statistic with average ranks for tied scores.

  Equals `sklearn.metrics.roc_auc_score` (no threshold-bucket approximation).

  Args:
    labels: [N] 0/1 labels (any numeric dtype).
    scores: [N] float scores (logits or probabilities; only their order matters).

  Returns:
    AUC in [0, 1]; NaN if only one class is present.

  Raises:
    ValueError: if shapes differ, N == 0, or a score is NaN/inf.

  Source: Hanley & McNeil (1982); InterFormer spec §9.
  """
  labels, scores = _check(labels, scores, "auc")
  pos = labels > 0.5
  n_pos = int(pos.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  s = scores[order]
  # Average (1-based) rank of each run of tied scores.
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  ends = np.r_[starts[1:], s.size]
  avg_rank = (starts + ends + 1) / 2.0
  ranks = np.empty(s.size, dtype=np.float64)
  ranks[order] = np.repeat(avg_rank, ends - starts)
  u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, weight: str = "samples") -> float:
  """Group AUC: per-user AUC, users with a single class skipped, weighted average.

  Args:
    labels: [N] 0/1 labels.
    scores: [N] float scores.
    groups: [N] int group key (user id).
    weight: "samples" (FuxiCTR default: the user's number of samples), "clicks" (number of positives) or
      "uniform" (torchrec-style).

  Returns:
    gAUC as a float; NaN if every group is single-class.

  Raises:
    ValueError: on shape mismatch, empty input, non-finite scores or an unknown `weight`.

  Source: Zhou et al., DIN (2018) §6.1; FuxiCTR `metrics.py` (sample-count weighting); InterFormer spec §9.
  """
  labels, scores = _check(labels, scores, "gauc")
  groups = np.asarray(groups).reshape(-1)
  if groups.shape != labels.shape:
    raise ValueError(f"gauc: groups {groups.shape} and labels {labels.shape} differ in shape")
  if weight not in ("samples", "clicks", "uniform"):
    raise ValueError(f"gauc: weight must be one of samples|clicks|uniform, got {weight!r}")
  order = np.argsort(groups, kind="stable")
  g, y, s = groups[order], labels[order], scores[order]
  bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
  total, wsum = 0.0, 0.0
  for a, b in zip(bounds[:-1], bounds[1:]):
    yy = y[a:b]
    npos = float((yy > 0.5).sum())
    if npos == 0 or npos == b - a:
      continue
    w = {"samples": b - a, "clicks": npos, "uniform": 1.0}[weight]
    total += w * auc(yy, s[a:b])
    wsum += w
  return float(total / wsum) if wsum > 0 else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
  """Mean binary cross-entropy (natural log), probabilities clipped to [1e-7, 1 - 1e-7].

  Args:
    labels: [N] 0/1 labels.
    probs: [N] predicted click probabilities.

  Raises:
    ValueError: on shape mismatch, empty input or non-finite probabilities.

  Source: InterFormer spec §9 (FuxiCTR's clipping).
  """
  labels, probs = _check(labels, probs, "logloss")
  p = np.clip(probs, _EPS, 1 - _EPS)
  return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def entropy(rate: float) -> float:
  """Binary entropy H(p) = -[p log p + (1-p) log(1-p)] in nats; raises ValueError outside (0, 1)."""
  if not 0.0 < rate < 1.0:
    raise ValueError(f"base rate must be in (0, 1), got {rate}")
  return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def ne(labels: np.ndarray, probs: np.ndarray, base_rate: float) -> float:
  """Normalized entropy: LogLoss divided by the entropy of `base_rate`.

  Args:
    labels: [N] 0/1 labels.
    probs: [N] predicted probabilities.
    base_rate: the positive rate of the *training* set (spec default `ne_base_rate="train"`), in (0, 1).

  Returns:
    NE; lower is better; 1.0 equals always predicting `base_rate` on data with that rate.

  Raises:
    ValueError: if shapes differ, N == 0, or `base_rate` is outside (0, 1).

  Source: He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook" (2014) §2.2.
  """
  return logloss(labels, probs) / entropy(base_rate)


def sigmoid(logits: np.ndarray) -> np.ndarray:
  """Numerically stable logistic function in float64."""
  x = np.asarray(logits, dtype=np.float64)
  return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def ctr_metrics(labels: np.ndarray, logits: np.ndarray, groups: np.ndarray, base_rate: float,
                gauc_weight: str = "samples") -> dict[str, float]:
  """AUC, gAUC, LogLoss and NE of one evaluation set, from logits.

  Args:
    labels: [N] 0/1; logits: [N] float; groups: [N] int user ids; base_rate: NE normaliser in (0, 1).

  Returns:
    {"auc", "gauc", "logloss", "ne", "num_examples"}.
  """
  probs = sigmoid(logits)
  return {
      "auc": auc(labels, logits),
      "gauc": gauc(labels, logits, groups, weight=gauc_weight),
      "logloss": logloss(labels, probs),
      "ne": ne(labels, probs, base_rate),
      "num_examples": int(np.asarray(labels).size),
  }
