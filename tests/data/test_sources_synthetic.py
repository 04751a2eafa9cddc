"""Synthetic TaobaoAd_x1 generator: schema equal to the BARS reader's, chunking, determinism, flat memory,
the planted signal, and the in-memory `synthetic` source."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from test_sources_taobao_ad import bars_rows, write_bars

from recjax.data import synthetic
from recjax.data.dataset import load_dataset
from recjax.data.sources import taobao_ad
from recjax.errors import ConfigError


def shape_of(schema):
  return ([f.name for f in schema.sparse], list(schema.dense),
          [(f.name, f.group, f.table_name, f.max_len) for f in schema.sequences])


def test_schema_matches_bars_reader(tmp_path, cache_dir):
  root = write_bars(tmp_path, bars_rows(12), bars_rows(4))
  bars = load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root), "variant": "bars"})
  assert shape_of(synthetic.schema("small")) == shape_of(bars.schema)
  assert synthetic.schema("bars").tables["userid"] == 403958


def test_chunks_deterministic_and_valid():
  sch = synthetic.schema("small", t=8)
  chunks = list(synthetic.iter_chunks(10, 4, seed=3, t=8, vocab="small"))
  assert [len(c["label"]) for c in chunks] == [4, 4, 2]
  again = list(synthetic.iter_chunks(10, 4, seed=3, t=8, vocab="small"))
  other = list(synthetic.iter_chunks(10, 4, seed=4, t=8, vocab="small"))
  for a, b, c in zip(chunks, again, other):
    sch.validate(a)
    assert set(a) == {"sparse", "dense", "seq/btag_his", "seq/cate_his", "seq/brand_his", "seq_len/hist",
                      "label", "group_id"}
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["sparse"], c["sparse"])
    assert (a["sparse"] >= 2).all()                             # never padding / OOV
    pos = np.arange(8)[None, :] >= 8 - a["seq_len/hist"][:, None]
    for f in ("btag_his", "cate_his", "brand_his"):
      np.testing.assert_array_equal(a[f"seq/{f}"] > 0, pos)    # left-padded, length = seq_len
  threaded = list(synthetic.iter_chunks(10, 4, seed=3, t=8, vocab="small", workers=3))
  for a, b in zip(chunks, threaded, strict=True):                 # threads do not change the rows
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(ConfigError):
    next(synthetic.iter_chunks(10, 4, seed=0, workers=0))
  with pytest.raises(ConfigError):
    next(synthetic.iter_chunks(10, 0, seed=0))
  with pytest.raises(ConfigError):
    next(synthetic.iter_chunks(10, 4, seed=0, vocab="huge"))


def test_planted_signal():
  c = next(synthetic.iter_chunks(60_000, 60_000, seed=0, vocab="small", with_logit=True))
  p = 1 / (1 + np.exp(-c["logit"].astype(np.float64)))
  assert abs(c["label"].mean() - p.mean()) < 0.01                       # labels drawn from the logit
  assert roc_auc_score(c["label"], c["logit"]) > 0.75                    # learnable
  ci = taobao_ad.CATEGORICAL.index("cate_id")
  ln = c["seq_len/hist"]
  share = ((c["seq/cate_his"] == c["sparse"][:, [ci]]).sum(1) / np.maximum(ln, 1))[ln > 10]
  lab = c["label"][ln > 10]
  assert lab[share > 0.4].mean() > lab[share < 0.2].mean() + 0.05        # history-target match matters (~+0.09)


def _peak(n_chunks):
  tracemalloc.start()
  for c in synthetic.iter_chunks(2000 * n_chunks, 2000, seed=0, vocab="small"):
    c["label"].sum()
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak


def test_memory_flat_in_rows():
  small, big = _peak(3), _peak(30)
  assert big < 1.3 * small, (small, big)


def test_source(cache_dir):
  ds = load_dataset({"name": "synthetic", "n_rows": 1000, "max_seq_len": 10})
  assert [len(ds.split(s)["label"]) for s in ("train", "valid", "test")] == [800, 100, 100]
  assert ds.meta["synthetic"] is True
  first = next(synthetic.iter_chunks(1000, 65536, 0, t=10, vocab="small"))
  np.testing.assert_array_equal(ds.train["sparse"], first["sparse"][:800])
  with pytest.raises(ConfigError):
    load_dataset({"name": "synthetic", "n_rows": 0})
