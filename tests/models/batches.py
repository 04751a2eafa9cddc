"""Random `Batch` dicts for a schema, shared by the model tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from recjax.data.schema import Schema


def make_batch(sch: Schema, batch_size: int, lengths=None, seed: int = 0, max_sparse_id: int = 5) -> dict:
  """Sparse ids in [1, max_sparse_id], dense N(0, 1), sequences left-padded to random (or given) lengths."""
  rng = np.random.default_rng(seed)
  b = {"sparse": rng.integers(1, max_sparse_id, (batch_size, len(sch.sparse))).astype(np.int32),
       "label": np.zeros(batch_size, np.float32)}
  if sch.dense:
    b["dense"] = rng.normal(size=(batch_size, len(sch.dense))).astype(np.float32)
  for g in sch.sequence_groups:
    t = sch.group_max_len(g)
    ln = np.asarray(lengths if lengths is not None else rng.integers(0, t + 1, batch_size)).astype(np.int32)
    ln = np.minimum(ln, t)
    b[f"seq_len/{g}"] = ln
    for f in sch.group_features(g):
      ids = rng.integers(1, f.vocab_size, (batch_size, t)).astype(np.int32)
      ids[np.arange(t)[None] < t - ln[:, None]] = 0
      b[f"seq/{f.name}"] = ids
  return {k: jnp.asarray(v) for k, v in b.items()}
