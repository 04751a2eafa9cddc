"""Metrics against scikit-learn and hand-computed cases (with ties)."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recjax import metrics


def test_auc_hand_case_with_ties():
  # pos scores {0.8, 0.5}, neg scores {0.5, 0.2}: pairs (0.8>0.5)=1, (0.8>0.2)=1, (0.5=0.5)=0.5, (0.5>0.2)=1.
  labels = np.array([1, 1, 0, 0])
  scores = np.array([0.8, 0.5, 0.5, 0.2])
  assert metrics.auc(labels, scores) == pytest.approx(3.5 / 4)


def test_auc_all_tied_is_half():
  assert metrics.auc(np.array([0, 1, 0, 1, 1]), np.zeros(5)) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_heavy_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, size=2000)
  scores = rng.integers(0, 20, size=2000).astype(np.float64)  # many ties
  assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_single_class_is_nan():
  assert math.isnan(metrics.auc(np.ones(4), np.arange(4.0)))


def _brute_gauc(labels, scores, groups, weight):
  num = den = 0.0
  for g in np.unique(groups):
    m = groups == g
    y = labels[m]
    if y.min() == y.max():
      continue
    w = {"samples": m.sum(), "clicks": y.sum(), "uniform": 1.0}[weight]
    num += w * roc_auc_score(y, scores[m])
    den += w
  return num / den


@pytest.mark.parametrize("weight", ["samples", "clicks", "uniform"])
def test_gauc_matches_per_user_sklearn(weight):
  rng = np.random.default_rng(1)
  groups = rng.integers(0, 40, size=1500)
  labels = rng.integers(0, 2, size=1500)
  labels[groups == 3] = 1  # a single-class user, skipped
  scores = rng.integers(0, 10, size=1500).astype(float)
  assert metrics.gauc(labels, scores, groups, weight) == pytest.approx(
      _brute_gauc(labels, scores, groups, weight), abs=1e-12)


def test_gauc_hand_case():
  # user 7: labels [1,0,0] scores [0.9,0.1,0.9] -> pairs (0.9 vs 0.1)=1, (0.9 vs 0.9)=0.5 -> 0.75, weight 3
  # user 8: labels [0,1] scores [0.2,0.3] -> 1.0, weight 2; user 9 single class: skipped
  labels = np.array([1, 0, 0, 0, 1, 1, 1])
  scores = np.array([0.9, 0.1, 0.9, 0.2, 0.3, 0.5, 0.6])
  groups = np.array([7, 7, 7, 8, 8, 9, 9])
  assert metrics.gauc(labels, scores, groups) == pytest.approx((3 * 0.75 + 2 * 1.0) / 5)


def test_logloss_matches_sklearn_and_clips():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, size=500)
  probs = rng.uniform(size=500)
  assert metrics.logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=1e-10)
  # p = 0 for a positive is clipped to 1e-7.
  assert metrics.logloss(np.array([1.0]), np.array([0.0])) == pytest.approx(-math.log(1e-7))


def test_ne_is_one_for_base_rate_predictor():
  labels = np.array([1, 0, 0, 0] * 25)
  probs = np.full(100, 0.25)
  assert metrics.ne(labels, probs, 0.25) == pytest.approx(1.0)
  # Hand case: logloss of p=0.5 is log 2; base rate 0.25 entropy = -(.25 ln .25 + .75 ln .75).
  h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
  assert metrics.ne(labels, np.full(100, 0.5), 0.25) == pytest.approx(math.log(2) / h)


def test_errors():
  with pytest.raises(ValueError, match="shape"):
    metrics.auc(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match="empty"):
    metrics.auc(np.zeros(0), np.zeros(0))
  with pytest.raises(ValueError, match="NaN"):
    metrics.auc(np.array([0, 1]), np.array([0.1, np.nan]))
  with pytest.raises(ValueError, match=r"\(0, 1\)"):
    metrics.ne(np.array([0, 1]), np.array([0.1, 0.2]), 1.0)


def test_ctr_metrics_from_logits():
  labels = np.array([1, 0, 1, 0])
  logits = np.array([2.0, -1.0, 0.5, 0.7])
  out = metrics.ctr_metrics(labels, logits, np.array([1, 1, 2, 2]), base_rate=0.5)
  p = 1 / (1 + np.exp(-logits))
  assert out["auc"] == pytest.approx(roc_auc_score(labels, logits))
  assert out["logloss"] == pytest.approx(log_loss(labels, p))
  assert out["ne"] == pytest.approx(log_loss(labels, p) / math.log(2))
  assert out["gauc"] == pytest.approx((2 * 1.0 + 2 * 0.0) / 4)
