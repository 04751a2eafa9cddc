"""Taobao UserBehavior (Alibaba Tianchi dataset 649) as CTR samples with sampled negatives.

File: `<data_dir>/<folder>/<file>`, CSV without header, one event per line:
`user_id,item_id,category_id,behavior_type,timestamp` with behavior_type in {pv, cart, fav, buy} and unix
seconds. Default file `UserBehavior_head84k.csv` (the first 84,475 lines of the original `UserBehavior.csv`;
its last user is cut off and kept as is). Source: Zhu et al., "Learning Tree-based Deep Model for Recommender
Systems" (KDD 2018). Timestamps outside the official 2017-11-25..12-03 window are kept (they are in the
original too).

Samples (issue 3): each user's events are sorted by (timestamp, file order) (stable). Every event with at least
one earlier event of the same user emits two rows, in this order:
- a positive: the event's item and category, label 1, with the histories of the events before it;
- a negative: label 0, same histories, an item drawn (seeded by `dataset.seed`) among the items of the event's
  category that the user never interacts with in the file (our choice: the whole file, not only the past, so
  no future positive becomes a negative); if the category has no such item, among all items of the file the
  user never touches, with that item's category (the category of its first line in the file).

How the negative's item is drawn is `dataset.negatives`:
- `"uniform"` (default; the issue's "a random item"): uniformly over the distinct (category, item) pairs.
- `"popularity"` (our choice, an option): proportionally to the item's number of events in the file, so that
  negatives' items follow the same distribution as positives' items. On the 84k-event head, uniform draws
  make item identity anti-predictive out of time: 82 % of the validation negatives' items were training
  positives, against 37 % of the validation positives' items (most items have one event, and the later
  positives are often new items), so a model that memorises item popularity scores below chance
  (`experiments/analysis/taobao_ub_item_prior.py`). Drawing by count over the whole file does not help.
- `"split_popularity"` (our choice, an option): by event count among the events of the row's own split
  (train / valid / test), so that a validation negative's item is as new to the training data as a validation
  positive's. Rows whose split has no allowed item draw by count over the whole file.

Sequences (T = `max_seq_len`, left-padded with 0, most recent last, strictly earlier events only):

| group  | features (table)                                                   | events                    |
|--------|--------------------------------------------------------------------|---------------------------|
| `pv`   | hist_pv_item (item_id), hist_pv_cate (category_id)                 | earlier pv events         |
| `cart` | hist_cart_item, hist_cart_cate                                     | earlier cart events       |
| `fav`  | hist_fav_item, hist_fav_cate                                       | earlier fav events        |
| `buy`  | hist_buy_item, hist_buy_cate                                       | earlier buy events        |
| `hist` | hist_item (item_id), hist_cate (category_id), hist_btag (btag, 1..4 = pv/cart/fav/buy) | all earlier events |

Each group has its own `seq_len/<group>`.

Sparse features: user_id (dense re-index 1..U in sorted raw order), item_id (1..I, sorted raw item ids),
category_id (1..C, sorted raw category ids). No dense features. The target's behaviour type is not a
feature (negatives have none, so it would leak the label). `group_id` = raw user id; `time` = event time
(negatives carry the time of their positive).

Split (per user, chronological, over the user's n events, floor as in ml-100k): the last floor(n/10) events
→ test, the floor(n/10) before them → valid, the rest → train; a negative goes with its positive. A user's
first event only feeds histories.
"""

from __future__ import annotations

import pathlib

import numpy as np

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.data.sources import _common as C
from recjax.errors import DataError

DEFAULTS: dict = dict(
    name="taobao_userbehavior",
    folder="taobao_userbehavior",
    file="UserBehavior_head84k.csv",   # the full release is UserBehavior.csv
    data_dir="",
    max_seq_len=50,                    # T of every group (issue 3)
    seed=0,                            # negative sampling seed
    negatives="uniform",               # how negatives' items are drawn: uniform | popularity | split_popularity
    features=(),
    use_cache=True,
)

BEHAVIORS = ("pv", "cart", "fav", "buy")
FIELDS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
NEGATIVES = ("uniform", "popularity", "split_popularity")
HOW = ("Download UserBehavior.csv from Alibaba Tianchi (https://tianchi.aliyun.com/dataset/649, login "
       "required) and place it there, or set dataset.file.")


def _check_cfg(cfg):
  folder, file = C.folder_and_file(cfg, DEFAULTS)
  t = C.check_int("max_seq_len", C.get(cfg, "max_seq_len", DEFAULTS), 1)
  seed = C.check_int("seed", C.get(cfg, "seed", DEFAULTS))
  negatives = C.check_choice("negatives", C.get(cfg, "negatives", DEFAULTS), NEGATIVES)
  return folder, file, t, seed, negatives


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Checks `<data_dir>/<folder>/<file>` exists. Raises DataError (file, directory, how to get it)."""
  folder, file, _, _, _ = _check_cfg(cfg)
  return {"events": C.require_files(data_dir, folder, (file,), HOW) / file}


def preprocess_options(cfg) -> dict:
  _, _, t, seed, negatives = _check_cfg(cfg)
  return {"max_seq_len": t, "seed": seed, "negatives": negatives}


def parse_events(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Parses the CSV (vectorised).

  Returns:
    {"user", "item", "category", "btag" (1..4 = pv/cart/fav/buy), "time", "line"}: [N] int64, file order.

  Raises:
    DataError: file, 1-based line and field for a wrong field count, a non-integer id/timestamp, an id < 0, a
      negative timestamp, an unknown behaviour type, or an empty file.
  """
  lines = C.read_lines(path)
  keep = [i for i, ln in enumerate(lines) if ln.strip()]
  if not keep:
    raise DataError(f"{path}: no events (empty file); expected lines '{','.join(FIELDS)}'")
  rows = [lines[i] for i in keep]
  parts = [r.split(",") for r in rows]
  for j, p in enumerate(parts):
    if len(p) != 5:
      raise C.bad(path, keep[j] + 1, "columns", f"expected 5 comma-separated fields {list(FIELDS)}, got "
                  f"{len(p)}: {rows[j][:200]!r}")
  a = np.array(parts, dtype=object)
  line = np.array(keep, np.int64) + 1
  out = {"line": line}
  for col, key in ((0, "user"), (1, "item"), (2, "category"), (4, "time")):
    try:
      out[key] = a[:, col].astype(np.int64)
    except (ValueError, OverflowError):
      for j, s in enumerate(a[:, col]):
        try:
          int(s)
        except ValueError:
          raise C.bad(path, int(line[j]), FIELDS[col], f"expected an integer, got {s!r}") from None
      raise
    bad = np.flatnonzero(out[key] < 0)
    if bad.size:
      raise C.bad(path, int(line[bad[0]]), FIELDS[col], f"value {int(out[key][bad[0]])} is negative")
  names, inv = np.unique(a[:, 3].astype(str), return_inverse=True)
  code = np.array([BEHAVIORS.index(n) + 1 if n in BEHAVIORS else 0 for n in names], np.int64)
  out["btag"] = code[inv]
  bad = np.flatnonzero(out["btag"] == 0)
  if bad.size:
    raise C.bad(path, int(line[bad[0]]), "behavior_type",
                f"expected one of {list(BEHAVIORS)}, got {a[bad[0], 3]!r}")
  return out


def build(cfg, files: dict[str, pathlib.Path]):
  """Parses, builds histories, samples negatives, splits. Rows within a split: (user, time, file order),
  positive before its negative.

  Returns:
    (schema, {"train", "valid", "test": arrays}, meta).
  """
  _, _, t, seed, negatives = _check_cfg(cfg)
  ev = parse_events(files["events"])
  order = np.lexsort((np.arange(len(ev["user"])), ev["time"], ev["user"]))
  raw_user, raw_item, raw_cat, btag, ts = (ev[k][order] for k in ("user", "item", "category", "btag", "time"))

  users, uid = np.unique(raw_user, return_inverse=True)
  items, iid = np.unique(raw_item, return_inverse=True)
  cats, cid = np.unique(raw_cat, return_inverse=True)
  uid, iid, cid = uid + 1, iid + 1, cid + 1
  n_item, n_cat = len(items) + 1, len(cats) + 1

  pos, count = C.user_positions(uid)
  which = C.split_by_position(pos, count)
  seqs, lens = {}, {}
  for b, name in enumerate(BEHAVIORS, 1):
    (hi, hc), ln = C.histories([iid, cid], uid, btag == b, t)
    seqs[f"seq/hist_{name}_item"], seqs[f"seq/hist_{name}_cate"], lens[f"seq_len/{name}"] = hi, hc, ln
  (hi, hc, hb), ln = C.histories([iid, cid, btag], uid, None, t)
  seqs["seq/hist_item"], seqs["seq/hist_cate"], seqs["seq/hist_btag"], lens["seq_len/hist"] = hi, hc, hb, ln

  # Negatives: first within the category, else over all items.
  keep = np.flatnonzero(pos >= 1)
  forbidden = np.unique(C.pair_keys(uid, iid, n_item))
  _, first = np.unique(ev["item"], return_index=True)    # first line of each item, in `items` order
  first_cat = np.r_[0, np.searchsorted(cats, ev["category"][first]) + 1]
  keys = C.pair_keys(cid, iid, n_item)
  rng = np.random.default_rng(seed)
  draw = lambda rows, events: _draw_negatives(rng, uid[rows], cid[rows], keys[events], iid[events], first_cat,
                                              forbidden, n_item, by_count=negatives != "uniform")
  if negatives == "split_popularity":
    neg_item, neg_cat = np.zeros(keep.size, np.int64), np.zeros(keep.size, np.int64)
    for s in range(3):
      rows = np.flatnonzero(which[keep] == s)
      neg_item[rows], neg_cat[rows] = draw(keep[rows], which == s)
    # Rows whose split has no allowed item at all (tiny files): by event count over the whole file.
    rows = np.flatnonzero(neg_item == 0)
    if rows.size:
      neg_item[rows], neg_cat[rows] = draw(keep[rows], slice(None))
  else:
    neg_item, neg_cat = draw(keep, slice(None))
  if (neg_item == 0).any():
    r = keep[int(np.flatnonzero(neg_item == 0)[0])]
    raise DataError(f"{files['events']}: user {int(raw_user[r])} interacts with every item; no negative exists")

  def inter(a, b):
    return np.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])

  u = uid[keep]
  arrays = {
      "sparse": np.stack([inter(u, u), inter(iid[keep], neg_item), inter(cid[keep], neg_cat)], axis=1
                         ).astype(np.int32),
      **{k: inter(v[keep], v[keep]) for k, v in seqs.items()},
      **{k: inter(v[keep], v[keep]) for k, v in lens.items()},
      "label": inter(np.ones(keep.size, np.float32), np.zeros(keep.size, np.float32)),
      "group_id": inter(raw_user[keep], raw_user[keep]).astype(np.int32),
      "time": inter(ts[keep], ts[keep]).astype(np.int64),
  }
  splits = C.take_splits(arrays, inter(which[keep], which[keep]))
  sequences = []
  for name in BEHAVIORS:
    sequences += [SequenceFeature(f"hist_{name}_item", n_item, t, group=name, table="item_id"),
                  SequenceFeature(f"hist_{name}_cate", n_cat, t, group=name, table="category_id")]
  sequences += [SequenceFeature("hist_item", n_item, t, group="hist", table="item_id"),
                SequenceFeature("hist_cate", n_cat, t, group="hist", table="category_id"),
                SequenceFeature("hist_btag", len(BEHAVIORS) + 1, t, group="hist", table="btag")]
  schema = Schema(
      sparse=(SparseFeature("user_id", len(users) + 1), SparseFeature("item_id", n_item),
              SparseFeature("category_id", n_cat)),
      sequences=tuple(sequences),
  )
  meta = {
      "num_events": len(uid), "num_users": len(users), "num_items": len(items),
      "num_categories": len(cats), "negatives": negatives, "negatives_outside_category": int(np.sum(neg_cat != cid[keep])),
      "events_per_behavior": {b: int(np.sum(btag == k)) for k, b in enumerate(BEHAVIORS, 1)},
      "label": "1 = the user's event, 0 = a sampled item (same category when possible) the user never touches",
      "split": "per user by (timestamp, file order) over events: last floor(n/10) test, floor(n/10) before valid",
  }
  return schema, splits, meta


def _draw_negatives(rng, users, cats, pool_keys, pool_items, first_cat, forbidden, n_item, *, by_count):
  """One negative per row: an item of the row's category the user never touches, else any such item.

  Args:
    users, cats: [N] the rows' user and category ids.
    pool_keys, pool_items: [E] `pair_keys(category, item)` and item ids of the events to draw from.
    first_cat: [n_item] each item's category (of its first line), for the any-item fallback.
    forbidden: sorted `pair_keys(user, item)` of every (user, item) in the file.
    by_count: False = uniformly over distinct items; True = proportionally to their number of events in the
      pool (the pool keeps one entry per event, so a uniform index draws by count).
  Returns:
    (items, categories), each [N] int64; 0 where no item of the pool is allowed.
  """
  pairs = np.sort(pool_keys) if by_count else np.unique(pool_keys)
  pool_item, pool_cat = pairs % n_item, pairs // n_item
  j = C.sample_excluding(rng, users, np.searchsorted(pool_cat, cats, "left"),
                         np.searchsorted(pool_cat, cats, "right"), pool_item, forbidden, n_item)
  item = np.where(j >= 0, pool_item[np.maximum(j, 0)], 0)
  cat = np.where(j >= 0, pool_cat[np.maximum(j, 0)], 0)
  fb = np.flatnonzero(j < 0)
  if fb.size:
    any_item = np.sort(pool_items).astype(np.int64) if by_count else np.unique(pool_items).astype(np.int64)
    k = C.sample_excluding(rng, users[fb], np.zeros(fb.size, np.int64), np.full(fb.size, any_item.size),
                           any_item, forbidden, n_item)
    item[fb] = np.where(k >= 0, any_item[np.maximum(k, 0)], 0)
    cat[fb] = np.where(k >= 0, first_cat[item[fb]], 0)
  return item, cat
