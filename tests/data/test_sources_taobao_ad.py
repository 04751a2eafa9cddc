"""taobao_ad source: DMR reader (dedup, padding conversion, btag) and BARS TaobaoAd_x1 CSV reader (vocab with
min-count + OOV, shared tables, protocols), checked against hand-computed fixtures and the shared DMR files."""

from __future__ import annotations

import os
import pathlib
from collections import Counter

import numpy as np
import pytest

from recjax.data.dataset import load_dataset
from recjax.data.sources import taobao_ad
from recjax.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
CAT = taobao_ad.CATEGORICAL
TAIL = ("uid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
        "occupation", "new_user_class_level", "mid", "cate_id", "campaign_id", "customer", "brand", "price", "pid",
        "target")


def dmr_row(hist, pad="left", uid=7, cate=5, brand=9, price=0.5, target=0):
  """hist: [(btag, cate, brand)] oldest first; padded on `pad` side to 50."""
  n = len(hist)
  z = [0] * (50 - n)
  def side(v):
    return z + v if pad == "left" else v + z
  cols = side([h[0] for h in hist]) + side([h[1] for h in hist]) + side([h[2] for h in hist]) + side([1] * n)
  cols += side([int(h[1] == cate) for h in hist])
  tail = [uid, 3, 4, 1, 2, 0, 3, 0, 2, 1000 + uid, cate, 2000 + uid, 3000 + uid, brand, price, 1, target]
  return ",".join(str(x) for x in cols + tail)


def write_dmr(root, head_rows, body_rows):
  d = root / "taobao_ad_dmr"
  d.mkdir(parents=True, exist_ok=True)
  header = ["cont_btag"] * 50 + ["his_cate"] * 50 + ["his_brand"] * 50 + ["mask"] * 50 + ["match_mask"] * 50
  (d / "deepctr_alimama_sample.txt").write_text(",".join(header + list(TAIL)) + "\n" + "\n".join(head_rows) + "\n")
  (d / "paddlerec_alimama_sampled_train.txt").write_text("\n".join(body_rows) + "\n")
  return root


def test_dmr_fixture(tmp_path, cache_dir):
  a = dmr_row([(1, 5, 9), (2, 6, 8)], "left", uid=1, price=0.1, target=1)
  b = dmr_row([(3, 6, 8), (1, 5, 9), (4, 7, 7)], "right", uid=2, price=0.2)   # right-padded on purpose
  c = dmr_row([(1, 5, 9)] * 50, uid=3, price=0.3)
  rows = [dmr_row([(1, 5 + k % 3, 9)], uid=10 + k, price=1 + k, target=int(k % 4 == 0)) for k in range(17)]
  root = write_dmr(tmp_path, [a, b], [c, a, c] + rows + [b])   # 23 lines, 20 distinct
  ds = load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root), "max_seq_len": 4})
  assert ds.meta["rows_read"] == 23 and ds.meta["rows_distinct"] == 20
  assert [len(ds.split(s)["label"]) for s in SPLITS] == [16, 2, 2]
  for s in SPLITS:                                   # stratified: 6 positives -> 5/1/0 (round 4.8, 0.6)
    assert ds.split(s)["label"].sum() == {"train": 5, "valid": 1, "test": 0}[s]
  allrows = {s: ds.split(s) for s in SPLITS}
  # Vocabulary of table cate_id: train target cate_id values + train history cate tokens, sorted -> ids 2..
  cat = {}
  for s in SPLITS:
    for r in range(len(allrows[s]["label"])):
      cat[round(float(allrows[s]["dense"][r, 0]), 3)] = (s, r)
  raw_hist = {0.1: [(1, 5, 9), (2, 6, 8)], 0.2: [(3, 6, 8), (1, 5, 9), (4, 7, 7)], 0.3: [(1, 5, 9)] * 50}
  raw_hist.update({round(1.0 + k, 3): [(1, 5 + k % 3, 9)] for k in range(17)})
  train_prices = [p for p, (s, _) in cat.items() if s == "train"]
  cate_vocab = sorted({5} | {h[1] for p in train_prices for h in raw_hist[p]})
  btag_vocab = sorted({1} | {h[0] for p in train_prices for h in raw_hist[p]})
  for p, (s, r) in cat.items():
    x = allrows[s]
    h = raw_hist[p][-4:]
    def enc(v, vocab):
      return vocab.index(v) + 2 if v in vocab else 1
    np.testing.assert_array_equal(x["seq/cate_his"][r], [0] * (4 - len(h)) + [enc(e[1], cate_vocab) for e in h])
    np.testing.assert_array_equal(x["seq/btag_his"][r], [0] * (4 - len(h)) + [enc(e[0], btag_vocab) for e in h])
    assert x["seq_len/hist"][r] == len(h)
    assert x["sparse"][r, CAT.index("btag")] == enc(1, btag_vocab)             # constant btag = 1
    assert x["sparse"][r, CAT.index("cate_id")] == enc(5, cate_vocab)
  assert ds.schema.dense == ("price",)
  assert [(f.name, f.table_name) for f in ds.schema.sequences] == [
      ("btag_his", "btag"), ("cate_his", "cate_id"), ("brand_his", "brand")]
  assert ds.schema.tables["cate_id"] == len(cate_vocab) + 2
  assert ds.meta["histories_partial"] == 19 and ds.meta["partial_left_padded"] == 18   # b is right-padded


def test_dmr_bad_rows(tmp_path, cache_dir):
  good = dmr_row([(1, 5, 9)], uid=1)
  cols = good.split(",")
  cols[3] = "2"                                       # a btag where the mask says padding
  root = write_dmr(tmp_path, [good], [good, ",".join(cols)])
  with pytest.raises(DataError, match=r"paddlerec_alimama_sampled_train.txt: line 2: field 'cont_btag\[3\]'"):
    load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root)})
  root = write_dmr(tmp_path / "b", [good], [",".join(cols[:-1])])
  with pytest.raises(DataError, match=r"line 1: field 'columns'"):
    load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root)})
  for kw in (dict(variant="full"), dict(protocol="x"), dict(min_count=0)):
    with pytest.raises(ConfigError):
      load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root), **kw})


BARS_HEAD = ["clk", "btag_his", "cate_his", "brand_his", *CAT[:-1], "price", "pid", "btag"]


def bars_rows(n, offset=0):
  """Row k: userid 100+k%3, cate_id 5 (x n-1) or 99 (last), hist of k%4 steps over cates 5/6, brands 8/9."""
  out = []
  for k in range(n):
    steps = k % 4
    cates = [5 + (j % 2) for j in range(steps)]
    vals = {"clk": k % 2, "btag_his": "^".join("1" for _ in cates), "cate_his": "^".join(map(str, cates)),
            "brand_his": "^".join(str(8 + c - 5) for c in cates), "price": 0.25 * k}
    vals.update({c: 0 for c in CAT})
    vals.update(userid=100 + (k + offset) % 3, cate_id=99 if k == n - 1 else 5, brand=8, adgroup_id=k, btag=1)
    out.append(",".join(str(vals[h]) for h in BARS_HEAD))
  return out


def write_bars(root, train, test, head=BARS_HEAD):
  d = root / "TaobaoAd_x1"
  d.mkdir(parents=True, exist_ok=True)
  for name, rows in (("train.csv", train), ("test.csv", test)):
    (d / name).write_text(",".join(head) + "\n" + "\n".join(rows) + "\n")
  return root


def test_bars_reader(tmp_path, cache_dir):
  train, test = bars_rows(12), bars_rows(4, offset=1)
  root = write_bars(tmp_path, train, test)
  base = {**taobao_ad.DEFAULTS, "data_dir": str(root), "variant": "bars", "min_count": 2, "max_seq_len": 2}
  ds = load_dataset(base)
  assert [len(ds.split(s)["label"]) for s in SPLITS] == [12, 4, 4]
  for k in ds.test:
    np.testing.assert_array_equal(ds.valid[k], ds.test[k])          # BARS protocol: valid = test
  assert ds.meta["protocol"] == "bars"
  # Table cate_id over train: target 5 x11, 99 x1; history tokens 5/6 -> counts 5: 11 + 9, 6: 3, 99: 1.
  # min_count 2 -> vocab [5, 6] -> ids 2, 3; 99 -> OOV 1.
  ci = CAT.index("cate_id")
  np.testing.assert_array_equal(ds.train["sparse"][:, ci], [2] * 11 + [1])
  np.testing.assert_array_equal(ds.test["sparse"][:, ci], [2, 2, 2, 1])
  # adgroup_id k appears once in train -> all OOV; userid 100/101/102 x4 -> ids 2/3/4.
  assert (ds.train["sparse"][:, CAT.index("adgroup_id")] == 1).all()
  np.testing.assert_array_equal(ds.train["sparse"][:, 0], [2 + k % 3 for k in range(12)])
  np.testing.assert_array_equal(ds.train["group_id"], [100 + k % 3 for k in range(12)])
  # Row 3: 3 steps (5, 6, 5), T = 2 keeps the last two -> cate ids (3, 2), brands 9, 8 -> brand vocab [8, 9].
  np.testing.assert_array_equal(ds.train["seq/cate_his"][3], [3, 2])
  np.testing.assert_array_equal(ds.train["seq/brand_his"][3], [3, 2])
  np.testing.assert_array_equal(ds.train["seq_len/hist"], [min(k % 4, 2) for k in range(12)])
  np.testing.assert_array_equal(ds.train["seq/cate_his"][0], [0, 0])
  np.testing.assert_allclose(ds.train["dense"][:, 0], [0.25 * k for k in range(12)])
  np.testing.assert_array_equal(ds.train["label"], [k % 2 for k in range(12)])
  assert ds.schema.tables["cate_id"] == 4 and ds.schema.tables["btag"] == 3
  honest = load_dataset({**base, "protocol": "honest"})
  assert [len(honest.split(s)["label"]) for s in SPLITS] == [11, 1, 4]
  np.testing.assert_array_equal(honest.valid["sparse"][:, CAT.index("adgroup_id")], [1])
  # Same schema (names, kinds, tables) as the DMR reader.
  assert [f.name for f in ds.schema.sparse] == list(CAT) and ds.schema.dense == ("price",)


@pytest.mark.parametrize("protocol", ["bars", "honest"])
def test_bars_chunked_equals_whole(tmp_path, cache_dir, monkeypatch, protocol):
  # 4-row chunks: the honest protocol's vocabulary cut (row 21 of 23) falls inside a chunk.
  root = write_bars(tmp_path, bars_rows(23), bars_rows(7, offset=1))
  base = {**taobao_ad.DEFAULTS, "data_dir": str(root), "variant": "bars", "min_count": 2, "max_seq_len": 2,
          "protocol": protocol, "use_cache": False}
  whole = load_dataset(base)
  monkeypatch.setattr(taobao_ad, "BARS_CHUNK_ROWS", 4)
  chunked = load_dataset(base)
  assert chunked.schema == whole.schema
  assert [len(chunked.split(s)["label"]) for s in SPLITS] == ([21, 2, 7] if protocol == "honest" else [23, 7, 7])
  for s in SPLITS:
    for k, v in whole.split(s).items():
      np.testing.assert_array_equal(chunked.split(s)[k], v, err_msg=f"{s} {k}")
      assert isinstance(chunked.split(s)[k], np.memmap)              # disk-backed, not held in memory


def test_bars_long_histories_are_cut_to_the_last_t(tmp_path, cache_dir):
  rows = bars_rows(3)
  head = BARS_HEAD
  cells = rows[1].split(",")
  cells[head.index("btag_his")], cells[head.index("cate_his")], cells[head.index("brand_his")] = \
      "1^1^1^1^1", "5^5^6^6^5", "8^9^8^9^9"
  rows[1] = ",".join(cells)
  root = write_bars(tmp_path, rows, bars_rows(2))
  ds = load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(root), "variant": "bars", "min_count": 1,
                     "max_seq_len": 3})
  # cate vocab over train (targets 5, 5, 99 and tokens 5 6 6 5 of row 1... ) -> 5: 2, 6: 3, 99: 4.
  np.testing.assert_array_equal(ds.train["seq/cate_his"][1], [3, 3, 2])   # last three of 5 5 6 6 5
  np.testing.assert_array_equal(ds.train["seq/brand_his"][1], [2, 3, 3])  # brands 8 9 9 -> ids 2 3 3
  assert ds.train["seq_len/hist"][1] == 3


def test_bars_bad_rows(tmp_path, cache_dir):
  train = bars_rows(5)
  train[2] = train[2].replace("5^6", "5^x", 1)
  root = write_bars(tmp_path, train, bars_rows(2))
  cfg = {**taobao_ad.DEFAULTS, "data_dir": str(root), "variant": "bars"}
  with pytest.raises(DataError, match=r"train.csv: line 4: field 'cate_his'"):
    load_dataset(cfg)
  train = bars_rows(11)
  cells = train[9].split(",")
  cells[BARS_HEAD.index("userid")] = "five"
  train[9] = ",".join(cells)                                        # line 11, in the third 4-row chunk
  root = write_bars(tmp_path / "c", train, bars_rows(2))
  with pytest.MonkeyPatch.context() as m:
    m.setattr(taobao_ad, "BARS_CHUNK_ROWS", 4)
    with pytest.raises(DataError, match=r"train.csv: line 11: field 'userid': expected an integer, got 'five'"):
      load_dataset({**cfg, "data_dir": str(root)})
  train = bars_rows(6)
  train[3] = train[3].replace("5^6^5", "5^0^5", 1)                  # row 3 has 3 steps: 5^6^5 (cates)
  root = write_bars(tmp_path / "d", train, bars_rows(2))
  with pytest.raises(DataError, match=r"train.csv: line 5: field 'cate_his': history ids must be > 0"):
    load_dataset({**cfg, "data_dir": str(root)})
  root = write_bars(tmp_path / "b", bars_rows(3), bars_rows(2), head=[h if h != "clk" else "label" for h in BARS_HEAD])
  with pytest.raises(DataError, match=r"line 1: field 'clk'"):
    load_dataset({**cfg, "data_dir": str(root)})
  with pytest.raises(DataError, match="test.csv"):
    load_dataset({**cfg, "data_dir": str(tmp_path / "nothing")})
  root = write_bars(tmp_path / "e", [], bars_rows(2))                # header only
  with pytest.raises(DataError, match=r"train.csv: no data rows"):
    load_dataset({**cfg, "data_dir": str(root)})


REAL = pathlib.Path(os.environ.get("RECJAX_DATA_DIR", "/nonexistent")) / "taobao_ad_dmr"


@pytest.mark.skipif(not (REAL / "deepctr_alimama_sample.txt").is_file(), reason="RECJAX_DATA_DIR has no taobao_ad_dmr")
def test_real_dmr(cache_dir):
  ds = load_dataset({**taobao_ad.DEFAULTS, "data_dir": str(REAL.parent)})
  lines = (REAL / "deepctr_alimama_sample.txt").read_text().split("\n")[1:] + \
      (REAL / "paddlerec_alimama_sampled_train.txt").read_text().split("\n")
  lines = [ln for ln in lines if ln.strip()]
  distinct = set(lines)
  assert (len(lines), len(distinct)) == (599, 324)
  n = [len(ds.split(s)["label"]) for s in SPLITS]
  assert sum(n) == 324
  assert sum(int(ds.split(s)["label"].sum()) for s in SPLITS) == sum(ln.endswith(",1") for ln in distinct) == 15
  assert all(ds.split(s)["label"].sum() >= 1 for s in SPLITS)
  # seq_len = mask sum; multiset over all rows equals the file's.
  want = Counter(sum(int(float(x)) for x in ln.split(",")[150:200]) for ln in distinct)
  got = Counter(int(v) for s in SPLITS for v in ds.split(s)["seq_len/hist"])
  assert got == want
  for s in SPLITS:                                  # left-padded: zeros exactly before the last seq_len steps
    a = ds.split(s)
    pos = np.arange(50)[None, :] >= 50 - a["seq_len/hist"][:, None]
    for f in ("btag_his", "cate_his", "brand_his"):
      np.testing.assert_array_equal(a[f"seq/{f}"] > 0, pos)
