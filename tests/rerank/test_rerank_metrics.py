"""Re-ranking metrics against hand-worked cases and explicit pair loops."""

import numpy as np
import pytest

from recjax.rerank.metrics import ilad, ilmd, mrr, precision_recall_at_n


def test_mrr_hand_cases():
  hits = np.array([[0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]], bool)
  np.testing.assert_allclose(mrr(hits), [1 / 3, 1.0, 0.0, 0.5])
  valid = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
  np.testing.assert_allclose(mrr(hits, valid), [0.0, 1.0, 0.0, 0.5])


def test_precision_recall_hand_cases():
  hits = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
  p, r = precision_recall_at_n(hits, np.array([4, 0, 8]))
  np.testing.assert_allclose(p, [0.5, 0.0, 1.0])
  np.testing.assert_allclose(r, [0.5, np.nan, 0.5])
  with pytest.raises(ValueError):
    precision_recall_at_n(hits, np.array([1, 2]))


def _loop_metrics(feats, idx, valid, window):
  f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  d = []
  for a in range(len(idx)):
    for b in range(len(idx)):
      if a != b and valid[a] and valid[b] and (window is None or abs(a - b) < window):
        d.append(1.0 - float(f[idx[a]] @ f[idx[b]]))
  return (np.mean(d), np.min(d)) if d else (np.nan, np.nan)


@pytest.mark.parametrize("window", [None, 2, 3, 5])
def test_ilad_ilmd_match_pair_loop(window):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(30, 6))
  idx = np.stack([rng.permutation(30)[:8] for _ in range(5)])
  valid = np.ones_like(idx, bool)
  valid[1, 5:] = False
  valid[2, 1:] = False  # a single item: no pairs -> NaN
  got_a, got_m = ilad(feats, idx, valid, window), ilmd(feats, idx, valid, window)
  for u in range(5):
    want_a, want_m = _loop_metrics(feats, idx[u], valid[u], window)
    np.testing.assert_allclose(got_a[u], want_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_m[u], want_m, rtol=1e-12, atol=1e-12)
  assert np.isnan(got_a[2]) and np.isnan(got_m[2])


def test_ilad_closed_form_orthogonal_and_identical():
  feats = np.eye(4)
  np.testing.assert_allclose(ilad(feats, np.array([0, 1, 2, 3])), 1.0)
  np.testing.assert_allclose(ilmd(feats, np.array([0, 1, 2, 3])), 1.0)
  feats = np.array([[1.0, 0], [2.0, 0], [0, 3.0]])  # items 0 and 1 point the same way
  np.testing.assert_allclose(ilmd(feats, np.array([0, 1, 2])), 0.0, atol=1e-15)
  np.testing.assert_allclose(ilad(feats, np.array([0, 1, 2])), 4 / 6)
  with pytest.raises(ValueError):
    ilad(feats, np.array([0, 1]), window=1)
