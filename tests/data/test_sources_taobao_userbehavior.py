"""Taobao UserBehavior source: samples, per-behaviour and merged histories, negatives, split, bad inputs."""

from __future__ import annotations

import os
import pathlib
import time
from collections import defaultdict

import numpy as np
import pytest

from recjax.data.dataset import load_dataset
from recjax.data.sources import taobao_userbehavior as tub
from recjax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
B = ("pv", "cart", "fav", "buy")

# (user, item, category, behaviour, time), file order. Ties in time are broken by file order.
EVENTS = [
    (1, 100, 10, "pv", 5), (1, 101, 10, "cart", 3), (1, 102, 20, "pv", 5), (1, 100, 10, "buy", 9),
    (2, 200, 30, "pv", 1), (2, 201, 30, "fav", 2), (2, 103, 10, "pv", 3), (2, 100, 10, "cart", 3),
] + [(3, 300 + k, 40, "pv" if k % 3 else "fav", 100 + k) for k in range(12)]


def write(root: pathlib.Path, events=EVENTS, name="ub.csv"):
  d = root / "taobao_userbehavior"
  d.mkdir(parents=True, exist_ok=True)
  (d / name).write_text("".join(",".join(map(str, e)) + "\n" for e in events))
  return root


def cfg(data_dir, **kw):
  return {**tub.DEFAULTS, "data_dir": str(data_dir), "file": "ub.csv", **kw}


def oracle(events, t):
  """Pure Python: per split, positives as (user, item, cat, time, {channel: hist}) in (user, time, line) order."""
  by_user = defaultdict(list)
  for line, (u, i, c, b, ts) in enumerate(events):
    by_user[u].append((ts, line, i, c, b))
  out = {s: [] for s in SPLITS}
  for u in sorted(by_user):
    seq = sorted(by_user[u])
    n, k = len(seq), len(seq) // 10
    for p in range(1, n):
      ts, _, i, c, _ = seq[p]
      prev = seq[:p]
      h = {}
      for b in B:
        e = [x for x in prev if x[4] == b][-t:]
        h[f"hist_{b}_item"] = [x[2] for x in e]
        h[f"hist_{b}_cate"] = [x[3] for x in e]
      e = prev[-t:]
      h["hist_item"], h["hist_cate"] = [x[2] for x in e], [x[3] for x in e]
      h["hist_btag"] = [B.index(x[4]) + 1 for x in e]
      split = "test" if p >= n - k else "valid" if p >= n - 2 * k else "train"
      out[split].append((u, i, c, ts, h))
  return out


def check(ds, events, t):
  items = sorted({e[1] for e in events})
  cats = sorted({e[2] for e in events})
  users = sorted({e[0] for e in events})
  iid = {x: j + 1 for j, x in enumerate(items)}
  cid = {x: j + 1 for j, x in enumerate(cats)}
  iid[0] = cid[0] = 0
  user_items = defaultdict(set)
  cat_items = defaultdict(set)
  for u, i, c, _, _ in events:
    user_items[u].add(iid[i])
    cat_items[cid[c]].add(iid[i])
  want = oracle(events, t)
  for s in SPLITS:
    a = ds.split(s)
    w = want[s]
    assert len(a["label"]) == 2 * len(w), s
    np.testing.assert_array_equal(a["label"], [1.0, 0.0] * len(w))
    for r, (u, i, c, ts, h) in enumerate(w):
      pos, neg = 2 * r, 2 * r + 1
      for row in (pos, neg):
        assert a["group_id"][row] == u and a["time"][row] == ts
        assert a["sparse"][row, 0] == users.index(u) + 1
        for name, vals in h.items():
          m = {"item": iid, "cate": cid}.get(name.rsplit("_", 1)[1])
          v = [m[x] for x in vals] if m else vals
          np.testing.assert_array_equal(a[f"seq/{name}"][row], [0] * (t - len(v)) + v, err_msg=name)
        for g in B:
          assert a[f"seq_len/{g}"][row] == len(h[f"hist_{g}_item"])
        assert a["seq_len/hist"][row] == len(h["hist_item"])
      assert (a["sparse"][pos, 1], a["sparse"][pos, 2]) == (iid[i], cid[c])
      ni, nc = int(a["sparse"][neg, 1]), int(a["sparse"][neg, 2])
      assert ni not in user_items[u]
      assert ni in cat_items[nc]
      eligible = cat_items[cid[c]] - user_items[u]
      if eligible:
        assert nc == cid[c] and ni in eligible
  return iid


def test_fixture_against_oracle(tmp_path, cache_dir):
  ds = load_dataset(cfg(write(tmp_path), max_seq_len=2))
  iid = check(ds, EVENTS, 2)
  tr = ds.train
  # Hand-worked: user 1's first sample (target 100, after 101 cart) -> negative 103, the only other cat-10
  # item; user 2's target 103 -> negative 101 (cat 10 minus {100, 103}).
  assert tr["sparse"][1, 1] == iid[103]
  np.testing.assert_array_equal(tr["seq/hist_btag"][0], [0, 2])
  assert [len(ds.split(s)["label"]) for s in SPLITS] == [2 * (3 + 3 + 9), 2, 2]


def test_fixture_long_history_and_seed(tmp_path, cache_dir):
  ds = load_dataset(cfg(write(tmp_path), max_seq_len=50))
  check(ds, EVENTS, 50)
  other = load_dataset(cfg(write(tmp_path), max_seq_len=50, seed=1, use_cache=False))
  check(other, EVENTS, 50)
  again = load_dataset(cfg(write(tmp_path), max_seq_len=50, use_cache=False))
  np.testing.assert_array_equal(ds.train["sparse"], again.train["sparse"])


def test_negative_item_distribution(tmp_path, cache_dir):
  # Category 90: item 900 has 9 events (users 50-58), item 901 one (user 59). Users 60-459 each view 902
  # then 903, so each emits one positive (903) whose negative must be 900 or 901: drawn 1:1 under
  # "uniform" and 9:1 under "popularity" (by event count). Seeded, so the counts are fixed; the bounds are
  # about 4 standard deviations of a binomial(400, p).
  events = [(u, 900, 90, "pv", 1) for u in range(50, 59)] + [(59, 901, 90, "pv", 1)]
  events += [e for u in range(60, 460) for e in ((u, 902, 90, "pv", 1), (u, 903, 90, "pv", 2))]
  root = write(tmp_path, events)
  frac = {}
  for mode in tub.NEGATIVES:
    ds = load_dataset(cfg(root, negatives=mode, max_seq_len=2))
    iid = check(ds, events, 2)
    neg = np.concatenate([ds.split(s)["sparse"][1::2, 1] for s in SPLITS])
    assert neg.size == 400 and set(neg.tolist()) <= {iid[900], iid[901]}
    frac[mode] = float(np.mean(neg == iid[900]))
  assert 0.40 <= frac["uniform"] <= 0.60, frac
  assert 0.84 <= frac["popularity"] <= 0.96, frac
  with pytest.raises(ConfigError, match="dataset.negatives"):
    load_dataset(cfg(root, negatives="hard"))


def test_split_popularity_draws_from_the_rows_split(tmp_path, cache_dir):
  # Four users, ten category-90 events each on their own items u*1000+j at time j: positions 0-7 are train,
  # 8 valid, 9 test. Under "split_popularity" a row's negative is another user's item of the same split:
  # position 8 for valid rows, 9 for test rows, 0-7 for train rows.
  users = (1, 2, 3, 9)
  events = [(u, u * 1000 + j, 90, "pv", j) for u in users for j in range(10)]
  ds = load_dataset(cfg(write(tmp_path, events), negatives="split_popularity", max_seq_len=3))
  iid = check(ds, events, 3)
  raw = {v: k for k, v in iid.items()}
  for s, positions in (("train", range(8)), ("valid", (8,)), ("test", (9,))):
    a = ds.split(s)
    for u, item in zip(a["group_id"][1::2], a["sparse"][1::2, 1]):
      owner, j = divmod(raw[int(item)], 1000)
      assert owner != u and owner in users and j in positions, (s, u, raw[int(item)])
  assert len(ds.valid["label"]) == len(ds.test["label"]) == 8


def test_bad_inputs(tmp_path, cache_dir):
  root = write(tmp_path, EVENTS[:3] + [(1, 104, 10, "click", 7)])
  with pytest.raises(DataError, match=r"ub.csv: line 4: field 'behavior_type'.*'click'"):
    load_dataset(cfg(root))
  (root / "taobao_userbehavior" / "ub.csv").write_text("1,2,3,pv,5\n1,2,x,pv,6\n")
  with pytest.raises(DataError, match=r"line 2: field 'category_id'"):
    load_dataset(cfg(root))
  (root / "taobao_userbehavior" / "ub.csv").write_text("1,2,3,pv,5\n1,2,3,pv\n")
  with pytest.raises(DataError, match=r"line 2: field 'columns'"):
    load_dataset(cfg(root))
  with pytest.raises(DataError, match="nope.csv"):
    load_dataset(cfg(root, file="nope.csv"))
  for kw in (dict(max_seq_len=0), dict(seed=1.5)):
    with pytest.raises(ConfigError):
      load_dataset(cfg(root, **kw))


REAL = pathlib.Path(os.environ.get("RECJAX_DATA_DIR", "/nonexistent"))


@pytest.mark.skipif(not (REAL / "taobao_userbehavior" / "UserBehavior_head84k.csv").is_file(),
                    reason="RECJAX_DATA_DIR has no taobao_userbehavior/UserBehavior_head84k.csv")
def test_real_file(cache_dir):
  t0 = time.perf_counter()
  ds = load_dataset({**tub.DEFAULTS, "data_dir": str(REAL)})
  assert time.perf_counter() - t0 < 30
  rows = [ln.split(",") for ln in (REAL / "taobao_userbehavior" / "UserBehavior_head84k.csv").read_text().split()]
  assert len(rows) == 84475
  count = defaultdict(int)
  for r in rows:
    count[r[0]] += 1
  k = {u: n // 10 for u, n in count.items()}
  want = {"test": sum(k.values()), "valid": sum(k.values()),
          "train": sum(n - 1 - 2 * k[u] for u, n in count.items())}
  for s in SPLITS:
    assert len(ds.split(s)["label"]) == 2 * want[s], s
  assert len(count) == 815                                # README: 815 users, the last one cut off
  assert ds.meta["events_per_behavior"] == {"pv": 75872, "cart": 4497, "fav": 2356, "buy": 1750}
  assert ds.schema.tables == {"user_id": 815 + 1, "item_id": 55369, "category_id": 2915, "btag": 5}
  # Negatives never items of the user; histories strictly before the target (time non-decreasing).
  ui = defaultdict(set)
  for r in rows:
    ui[int(r[0])].add(int(r[1]))
  raw = np.array(sorted({int(r[1]) for r in rows}))     # item_id j <-> j-th smallest raw id
  tr = ds.train
  neg_raw = raw[tr["sparse"][1::2, 1] - 1]
  assert all(int(x) not in ui[int(u)] for u, x in zip(tr["group_id"][1::2], neg_raw))
  assert np.all(tr["seq_len/hist"] == np.minimum(
      tr["seq_len/pv"] + tr["seq_len/cart"] + tr["seq_len/fav"] + tr["seq_len/buy"], 50))
