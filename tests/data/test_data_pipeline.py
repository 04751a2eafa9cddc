"""grain pipeline: seeded per-epoch shuffles, fixed batch size, checkpointable state, padded eval batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recjax.data import pipeline
from recjax.errors import ConfigError


def columns(n: int) -> dict[str, np.ndarray]:
  """Columns whose values encode the row index, so gathered rows can be checked for alignment."""
  r = np.arange(n)
  return {"sparse": np.stack([r, r + 100], 1).astype(np.int32), "dense": (r[:, None] * 0.5).astype(np.float32),
          "seq/hist_item": np.tile(r[:, None], (1, 3)).astype(np.int32), "label": (r % 2).astype(np.float32),
          "group_id": r.astype(np.int32), "time": r.astype(np.int64) * 10}


def rows_of(b) -> list[int]:
  return b["group_id"].tolist()


def check_aligned(b):
  r = b["group_id"]
  np.testing.assert_array_equal(b["sparse"][:, 1], r + 100)
  np.testing.assert_array_equal(b["dense"][:, 0], r * 0.5)
  np.testing.assert_array_equal(b["seq/hist_item"][:, 2], r)
  np.testing.assert_array_equal(b["time"], r * 10)


def take(it, k):
  return [next(it) for _ in range(k)]


def test_train_epochs_shuffled_deterministic_fixed_size():
  a = columns(10)
  batches = take(pipeline.train_iterator(a, 3, seed=7), 12)       # 3 batches per epoch, 1 row dropped
  for b in batches:
    assert {k: v.shape[0] for k, v in b.items()} == dict.fromkeys([*a, "mask"], 3)
    np.testing.assert_array_equal(b["mask"], np.ones(3, np.float32))
    assert b["sparse"].dtype == np.int32 and b["mask"].dtype == np.float32
    check_aligned(b)
  epochs = [[r for b in batches[3 * e:3 * e + 3] for r in rows_of(b)] for e in range(4)]
  for e, rows in enumerate(epochs):
    assert len(set(rows)) == 9                                     # no repeats within an epoch
    assert rows == pipeline.epoch_permutation(7, e, 10)[:9].tolist()
  assert len({tuple(r) for r in epochs}) == 4                      # a different order every epoch
  assert len({r for rows in epochs for r in set(range(10)) - set(rows)}) > 1   # dropped row varies
  again = take(pipeline.train_iterator(a, 3, seed=7), 12)
  assert [rows_of(b) for b in again] == [rows_of(b) for b in batches]
  other = take(pipeline.train_iterator(a, 3, seed=8), 3)
  assert [rows_of(b) for b in other] != [rows_of(b) for b in batches[:3]]


def test_train_state_roundtrip_continues_identically():
  a = columns(23)
  it = pipeline.train_iterator(a, 4, seed=1)
  take(it, 9)                                                     # mid second epoch (5 batches / epoch)
  state = json.loads(json.dumps(it.get_state()))                  # what a checkpoint would store
  want = take(it, 8)
  resumed = pipeline.train_iterator(a, 4, seed=1, start_state=state)
  got = take(resumed, 8)
  for w, g in zip(want, got):
    assert w.keys() == g.keys()
    for k in w:
      np.testing.assert_array_equal(w[k], g[k])
  fresh = pipeline.train_iterator(a, 4, seed=1)
  fresh.set_state(state)
  assert rows_of(next(fresh)) == rows_of(want[0])


def test_train_keep_remainder_pads_with_mask():
  a = columns(10)
  batches = take(pipeline.train_iterator(a, 4, seed=0, drop_remainder=False), 6)   # 3 per epoch
  for e in range(2):
    ep = batches[3 * e:3 * e + 3]
    assert all(b["label"].shape == (4,) for b in ep)
    assert [b["mask"].sum() for b in ep] == [4, 4, 2]
    real = [r for b in ep for r, m in zip(rows_of(b), b["mask"]) if m]
    assert sorted(real) == list(range(10))
    assert rows_of(ep[2])[2:] == [0, 0]                           # padding copies row 0


def test_eval_batches_pad_last_and_cover_each_row_once():
  a = columns(10)
  assert pipeline.num_examples(a) == 10 and pipeline.num_eval_batches(a, 4) == 3
  bs = list(pipeline.eval_batches(a, 4))
  assert [b["label"].shape for b in bs] == [(4,)] * 3
  assert [b["mask"].tolist() for b in bs] == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
  assert [r for b in bs for r in rows_of(b)] == [*range(10), 0, 0]
  for b in bs:
    check_aligned(b)
  # a masked sum over the stream equals the sum over the split
  assert sum(float((b["label"] * b["mask"]).sum()) for b in bs) == a["label"].sum()
  assert [b["mask"].sum() for b in pipeline.eval_batches(a, 5)] == [5, 5]


def test_bad_batch_sizes():
  a = columns(5)
  with pytest.raises(ConfigError, match="larger than the 5 training examples"):
    pipeline.train_iterator(a, 6, seed=0)
  with pytest.raises(ConfigError, match="batch_size"):
    list(pipeline.eval_batches(a, 0))
  assert next(pipeline.train_iterator(a, 6, seed=0, drop_remainder=False))["mask"].sum() == 5
