"""Amazon reviews (2014, 5-core) as released with S3-Rec: DIN-style CTR samples with sampled negatives.

Files (in `<data_dir>/<folder>/`, folder default `amazon_<category.lower()>`):
- `<Category>.txt`: one line per user, `user_id item_id item_id ...` separated by single spaces, items in
  time order (oldest first), ids from 1.
- `<Category>_item2attributes.json`: `{"item_id": [attribute ids]}` (brand / categories).
Source: Zhou et al., "S3-Rec" (CIKM 2020) data release; McAuley et al. (2015) reviews. The same code reads
Beauty, Sports_and_Outdoors, Toys_and_Games by setting `dataset.category`.

Samples (issue 3): for each user sequence s[0..L-1] and each position k = 1..L-1, two rows, in this order:
- a positive: history s[max(0, k-T):k] (most recent last), target item s[k], label 1;
- a negative: the same history, target an item drawn uniformly from 1..max item id among the items the
  user never interacted with (anywhere in the sequence), label 0. Seeded by `dataset.seed`, deterministic.

Split (leave-one-out): the rows of position k = L-1 (positive and its negative) → test, k = L-2 → valid,
the rest → train. A user with L = 2 has no validation rows; L = 1 gives no rows.

Features (id 0 = padding / unknown):

| name          | kind     | vocab                   | meaning                                                   |
|---------------|----------|-------------------------|-----------------------------------------------------------|
| user_id       | sparse   | max user id + 1         | raw user id                                               |
| item_id       | sparse   | max item id + 1         | raw item id (txt and json ids)                             |
| category      | sparse   | max attribute id + 1    | the item's first attribute (issue 3); no attributes → 0    |
| hist_item     | sequence | table item_id           | items before k, left-padded, group `hist`                  |
| hist_category | sequence | table category          | first attribute of each history item, group `hist`        |

No dense features; no timestamps, so no `time` key. `group_id` = user id.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.data.sources import _common as C
from recjax.errors import ConfigError, DataError

DEFAULTS: dict = dict(
    name="amazon",
    category="Beauty",     # S3-Rec file prefix: Beauty | Sports_and_Outdoors | Toys_and_Games | ...
    folder="",             # "" = amazon_<category.lower()> under data_dir
    data_dir="",           # "" = resolve: $RECJAX_DATA_DIR, then ~/.cache/recjax
    max_seq_len=50,        # T of the "hist" group
    seed=0,                # negative sampling seed
    features=(),
    use_cache=True,
)

HOW = ("Get the S3-Rec data release (https://github.com/RUCAIBox/CIKM2020-S3Rec, folder data/) and place "
       "<Category>.txt and <Category>_item2attributes.json there.")


def _check_cfg(cfg):
  cat = C.get(cfg, "category", DEFAULTS)
  if not isinstance(cat, str) or not cat or "/" in cat or cat.strip() != cat:
    raise ConfigError(f"dataset.category: expected a file prefix such as 'Beauty', got {cat!r}")
  folder = C.get(cfg, "folder", DEFAULTS)
  if not isinstance(folder, str):
    raise ConfigError(f"dataset.folder: expected a string, got {folder!r}")
  t = C.check_int("max_seq_len", C.get(cfg, "max_seq_len", DEFAULTS), 1)
  seed = C.check_int("seed", C.get(cfg, "seed", DEFAULTS))
  return cat, folder or f"amazon_{cat.lower()}", t, seed


def _names(cat: str) -> tuple[str, str]:
  return f"{cat}.txt", f"{cat}_item2attributes.json"


def prepare(cfg, data_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Checks `<category>.txt` and `<category>_item2attributes.json` exist under `<data_dir>/<folder>`.

  Raises:
    DataError: files missing (names them, the directory, and where to get them).
    ConfigError: bad config values.
  """
  cat, folder, _, _ = _check_cfg(cfg)
  seq_name, attr_name = _names(cat)
  d = C.require_files(data_dir, folder, (seq_name, attr_name), HOW)
  return {"sequences": d / seq_name, "attributes": d / attr_name}


def preprocess_options(cfg) -> dict:
  cat, _, t, seed = _check_cfg(cfg)
  return {"category": cat, "max_seq_len": t, "seed": seed}


def parse_sequences(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Parses `<Category>.txt`.

  Returns:
    (user [N] int64, item [N] int64, line [N] int64): one row per interaction, in file order (users in
    file order, items in time order); `line` is the 1-based line number.

  Raises:
    DataError: file, line and field for a non-integer or non-positive id, a user id seen on an earlier
      line, or an empty file.
  """
  lines = C.read_lines(path)
  users, items, line_no = [], [], []
  seen: dict[int, int] = {}
  for i, ln in enumerate(lines, 1):
    p = ln.split()
    if not p:
      continue
    vals = []
    for j, s in enumerate(p):
      try:
        v = int(s)
      except ValueError:
        raise C.bad(path, i, "user_id" if j == 0 else f"item_id[{j}]", f"expected an integer, got {s!r}") from None
      if v < 1:
        raise C.bad(path, i, "user_id" if j == 0 else f"item_id[{j}]", f"expected an id >= 1, got {v}")
      vals.append(v)
    if vals[0] in seen:
      raise C.bad(path, i, "user_id", f"user {vals[0]} already has a line ({seen[vals[0]]})")
    seen[vals[0]] = i
    users.append(np.full(len(vals) - 1, vals[0], np.int64))
    items.append(np.array(vals[1:], np.int64))
    line_no.append(np.full(len(vals) - 1, i, np.int64))
  if not users:
    raise DataError(f"{path}: no users (empty file); expected lines 'user_id item_id item_id ...'")
  return np.concatenate(users), np.concatenate(items), np.concatenate(line_no)


def parse_attributes(path: pathlib.Path) -> dict[int, list[int]]:
  """Parses `<Category>_item2attributes.json` into {item id: [attribute ids]}.

  Raises:
    DataError: invalid JSON (with its line), not an object, a key that is not a positive integer, or a value
      that is not a list of non-negative integers (naming the item).
  """
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise C.bad(path, e.lineno, "json", f"invalid JSON: {e.msg}") from None
  if not isinstance(raw, dict):
    raise DataError(f"{path}: expected a JSON object {{item_id: [attribute ids]}}, got {type(raw).__name__}")
  out = {}
  for k, v in raw.items():
    try:
      item = int(k)
    except ValueError:
      item = 0
    if item < 1:
      raise DataError(f"{path}: field 'item_id': key {k!r} is not a positive integer")
    if not isinstance(v, list) or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in v):
      raise DataError(f"{path}: field 'attributes' of item {k}: expected a list of integers >= 0, got {v!r}")
    out[item] = v
  return out


def build(cfg, files: dict[str, pathlib.Path]):
  """Parses, samples negatives, splits. Rows are ordered by (user in file order, position k, pos before neg).

  Returns:
    (schema, {"train", "valid", "test": arrays}, meta).
  """
  _, _, t, seed = _check_cfg(cfg)
  user, item, _ = parse_sequences(files["sequences"])
  attrs = parse_attributes(files["attributes"])

  n_item = max(int(item.max()), max(attrs, default=0)) + 1
  cat_of = np.zeros(n_item, np.int64)
  for it, a in attrs.items():
    if a:
      cat_of[it] = a[0]
  n_cat = int(cat_of.max()) + 1
  n_user = int(user.max()) + 1

  pos, count = C.user_positions(user)
  (h_item,), h_len = C.histories([item], user, None, t)
  h_cat = cat_of[h_item].astype(np.int32)
  keep = pos >= 1
  which_pos = np.where(pos == count - 1, 2, np.where(pos == count - 2, 1, 0)).astype(np.int8)[keep]
  u, it_pos = user[keep], item[keep]

  forbidden = np.unique(C.pair_keys(user, item, n_item))
  pool = np.arange(1, int(item.max()) + 1, dtype=np.int64)   # items that occur in the sequences file
  rng = np.random.default_rng(seed)
  j = C.sample_excluding(rng, u, np.zeros(len(u), np.int64), np.full(len(u), pool.size), pool, forbidden, n_item)
  if (j < 0).any():
    r = int(np.flatnonzero(j < 0)[0])
    raise DataError(f"{files['sequences']}: user {int(u[r])} interacted with every item; no negative exists")
  it_neg = pool[j]

  def inter(a, b):   # [M, ...] x2 -> [2M, ...], rows a0, b0, a1, b1, ...
    return np.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])

  hi, hc, hl = h_item[keep], h_cat[keep], h_len[keep]
  target = inter(it_pos, it_neg)
  uu = inter(u, u)
  arrays = {
      "sparse": np.stack([uu, target, cat_of[target]], axis=1).astype(np.int32),
      "seq/hist_item": inter(hi, hi),
      "seq/hist_category": inter(hc, hc),
      "seq_len/hist": inter(hl, hl),
      "label": inter(np.ones(len(u), np.float32), np.zeros(len(u), np.float32)),
      "group_id": uu.astype(np.int32),
  }
  splits = C.take_splits(arrays, inter(which_pos, which_pos))
  schema = Schema(
      sparse=(SparseFeature("user_id", n_user), SparseFeature("item_id", n_item),
              SparseFeature("category", n_cat)),
      sequences=(SequenceFeature("hist_item", n_item, t, group="hist", table="item_id"),
                 SequenceFeature("hist_category", n_cat, t, group="hist", table="category")),
  )
  meta = {
      "num_users": len(np.unique(user)), "num_interactions": len(user), "num_items": int(pool.size),
      "num_categories": len(np.unique(cat_of[cat_of > 0])),
      "items_without_attributes": int(np.sum(cat_of[1:int(item.max()) + 1] == 0)),
      "label": "1 = the user's next item, 0 = a sampled item the user never interacted with",
      "split": "leave-one-out: last position test, second last valid (with their negatives), rest train",
  }
  return schema, splits, meta
