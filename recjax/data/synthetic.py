"""Schema-faithful synthetic TaobaoAd_x1 rows with a planted signal, streamed in chunks (scale runs, tests).

Never a substitute for real data in a result table: the labels come from the formula below, not from users.

Schema: exactly the feature names, kinds and tables of the `taobao_ad` source (BARS TaobaoAd_x1): 16 sparse
fields `taobao_ad.CATEGORICAL`, dense `price`, sequences `btag_his` / `cate_his` / `brand_his` in group `hist`
sharing the tables btag / cate_id / brand. `vocab="bars"` uses the vocabulary sizes of the BARS TaobaoAd_x1
feature map (FuxiCTR log, min_categr_count 10, e.g. userid 403,958, brand 308,870); `vocab="small"` caps
every table at 1,000 ids (tests).

Generation (our choice), per row:
- each sparse id uniform in [2, V) (ids 0 = padding and 1 = OOV are never drawn);
- price ~ U(0, 1);
- history length L ~ U{0..T}; the last L steps (left-padded, most recent last) hold cate ids that equal the
  target's cate_id with probability 0.3 and are uniform otherwise, brand ids likewise for the target brand,
  btag ids uniform over real btag ids;
- logit = -1.5 + Σ_f w_f[id_f] + 2.0 · (share of the L history cates equal to the target cate, 0 if L = 0)
  + 0.5 · (price − 0.5), with w_f[id] ~ N(0, 0.5²) drawn once per table from `seed` (a table of V floats,
  so memory depends on the vocabulary, never on the number of rows);
- label ~ Bernoulli(sigmoid(logit)).
`group_id` = the userid id; no `time`.

Chunk c is drawn from `np.random.default_rng([seed, 1, c])`, so a stream is reproducible for a given
(n_rows, chunk_rows, seed) and chunks can be generated independently.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator

import numpy as np

from recjax.data.schema import Schema, SequenceFeature, SparseFeature
from recjax.errors import ConfigError

# BARS TaobaoAd_x1 vocabulary sizes (FuxiCTR 2.0.3 feature map of the BARS runs, incl. padding and OOV ids).
BARS_VOCAB = {
    "userid": 403958, "cms_segid": 99, "cms_group_id": 15, "final_gender_code": 4, "age_level": 9,
    "pvalue_level": 6, "shopping_level": 5, "occupation": 4, "new_user_class_level": 7, "adgroup_id": 246851,
    "cate_id": 11330, "campaign_id": 191771, "customer": 132136, "brand": 308870, "pid": 4, "btag": 6,
}
SMALL_CAP = 1000
MATCH_P = 0.3
BIAS, W_STD, MATCH_W, PRICE_W = -1.5, 0.5, 2.0, 0.5


def _names():
  from recjax.data.sources.taobao_ad import CATEGORICAL, SEQUENCES
  return CATEGORICAL, SEQUENCES


def vocab_sizes(vocab: str = "bars") -> dict[str, int]:
  """Table name -> vocabulary size for `vocab` in {"bars", "small"}. Raises ConfigError otherwise."""
  if vocab == "bars":
    return dict(BARS_VOCAB)
  if vocab == "small":
    return {k: min(v, SMALL_CAP) for k, v in BARS_VOCAB.items()}
  raise ConfigError(f"dataset.vocab: {vocab!r} is not one of ['bars', 'small']")


def schema(vocab: str = "bars", t: int = 50) -> Schema:
  """The TaobaoAd_x1 schema (same names / kinds / tables as the taobao_ad source) with `vocab` sizes."""
  cats, seqs = _names()
  v = vocab_sizes(vocab)
  return Schema(sparse=tuple(SparseFeature(c, v[c]) for c in cats), dense=("price",),
                sequences=tuple(SequenceFeature(n, v[tab], t, group="hist", table=tab) for n, tab in seqs))


def _weights(seed: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([seed, 0])
  return {k: (rng.standard_normal(v) * W_STD).astype(np.float32) for k, v in sizes.items()}


def _chunk(rng: np.random.Generator, n: int, t: int, sizes, weights) -> dict[str, np.ndarray]:
  cats, _ = _names()
  i32 = np.int32
  sparse = np.empty((n, len(cats)), i32)
  for j, c in enumerate(cats):
    sparse[:, j] = rng.integers(2, sizes[c], n, dtype=i32)
  price = rng.random(n, dtype=np.float32)
  length = rng.integers(0, t + 1, n, dtype=i32)
  valid = np.arange(t, dtype=i32)[None, :] >= (t - length)[:, None]
  tc, tb = sparse[:, cats.index("cate_id")], sparse[:, cats.index("brand")]
  # int32 draws and float32 uniforms: about half the generator time of the int64 / float64 defaults.
  cate_his = np.where(rng.random((n, t), dtype=np.float32) < MATCH_P, tc[:, None],
                      rng.integers(2, sizes["cate_id"], (n, t), dtype=i32))
  brand_his = np.where(rng.random((n, t), dtype=np.float32) < MATCH_P, tb[:, None],
                       rng.integers(2, sizes["brand"], (n, t), dtype=i32))
  btag_his = rng.integers(2, sizes["btag"], (n, t), dtype=i32)
  for x in (cate_his, brand_his, btag_his):
    x[~valid] = 0
  share = np.where(length > 0, ((cate_his == tc[:, None]) & valid).sum(1) / np.maximum(length, 1), 0.0)
  logit = BIAS + sum(weights[c][sparse[:, j]] for j, c in enumerate(cats)) + MATCH_W * share + \
      PRICE_W * (price - 0.5)
  label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
  return {"sparse": sparse, "dense": price[:, None], "seq/btag_his": btag_his, "seq/cate_his": cate_his,
          "seq/brand_his": brand_his, "seq_len/hist": length, "label": label,
          "group_id": sparse[:, 0].copy(), "logit": logit.astype(np.float32)}


def iter_chunks(n_rows: int, chunk_rows: int, seed: int, *, t: int = 50, vocab: str = "bars",
                with_logit: bool = False, workers: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Streams `n_rows` synthetic rows in Batch-format chunks of `chunk_rows` (the last one may be shorter).

  Args:
    n_rows: total rows, >= 0.
    chunk_rows: rows per chunk, >= 1.
    seed: generator seed (weights and rows).
    t: history length T.
    vocab: "bars" (full TaobaoAd_x1 vocabulary sizes) or "small" (capped at 1,000).
    with_logit: also yield `logit` [n] f32, the planted true logit (for checks; not a feature).
    workers: threads generating chunks ahead, in order (NumPy's generators release the GIL). The rows do
      not depend on it: chunk c always comes from its own generator. At most 2·workers chunks are held.

  Yields:
    {"sparse" [n,16] i32, "dense" [n,1] f32, "seq/btag_his" | "seq/cate_his" | "seq/brand_his" [n,T] i32,
    "seq_len/hist" [n] i32, "label" [n] f32, "group_id" [n] i32}. Memory per step is
    O(workers·chunk_rows·T + Σ V), independent of n_rows.

  Raises:
    ConfigError: n_rows < 0, chunk_rows < 1, t < 1, workers < 1 or an unknown vocab.
  """
  for k, v, lo in (("n_rows", n_rows, 0), ("chunk_rows", chunk_rows, 1), ("max_seq_len", t, 1),
                   ("workers", workers, 1)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ConfigError(f"{k}: expected an integer >= {lo}, got {v!r}")
  sizes = vocab_sizes(vocab)
  weights = _weights(seed, sizes)

  def make(c: int) -> dict[str, np.ndarray]:
    start = c * chunk_rows
    out = _chunk(np.random.default_rng([seed, 1, c]), min(chunk_rows, n_rows - start), t, sizes, weights)
    if not with_logit:
      del out["logit"]
    return out

  n_chunks = -(-n_rows // chunk_rows)
  if workers == 1:
    yield from map(make, range(n_chunks))
    return
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="synthetic") as pool:
    pending: collections.deque = collections.deque()
    for c in range(n_chunks):
      pending.append(pool.submit(make, c))
      if len(pending) >= 2 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
