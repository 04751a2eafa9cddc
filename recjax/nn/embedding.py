"""Embedding tables, one per `schema.tables` entry, looked up by feature name."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.data.schema import Schema
from recjax.nn.common import Dtype, partitioned

# Table rows are padded to a multiple of this, so a table row-shards evenly over any `model` mesh axis
# that divides it, and a checkpoint restores onto any such mesh (or one device) unchanged. Our choice.
VOCAB_PAD_MULTIPLE = 64


class Embeddings(nn.Module):
  """One [vocab_size, dim] table per `schema.tables` entry; sequences share tables per the schema.

  Attributes:
    schema: the dataset schema.
    dim: embedding width d.
    init_std: std of the normal initializer.
    dtype: dtype of returned embeddings (tables are float32).

  Params: `<table name>` [padded_vocab, dim] with logical axes ("vocab", "embed"), so tables are
  row-sharded over the `model` mesh axis; `padded_vocab` rounds vocab_size up to a multiple of
  `VOCAB_PAD_MULTIPLE` (the extra rows are never looked up). Row 0 (padding) is an ordinary row; callers
  mask padding.
  Source: InterFormer §3 (one table per categorical feature); BARS for the table sharing.
  """
  schema: Schema
  dim: int
  init_std: float = 0.01
  dtype: Dtype = jnp.float32

  def setup(self):
    init = partitioned(nn.initializers.normal(self.init_std), ("vocab", "embed"))
    self.tables = {t: self.param(t, init, (padded_vocab(v), self.dim), jnp.float32)
                   for t, v in self.schema.tables.items()}

  def lookup(self, feature: str, ids: jax.Array) -> jax.Array:
    """Embeds ids of the sparse or sequence feature named `feature`.

    Args:
      feature: a name in schema.sparse or schema.sequences.
      ids: int array of any shape, values in [0, vocab_size).
    Returns:
      ids.shape + [dim] in `dtype`.
    Raises:
      KeyError: unknown feature name.
    """
    for f in (*self.schema.sparse, *self.schema.sequences):
      if f.name == feature:
        # mode="clip": ids are range-checked when the data is read (recjax.data), and a clamped gather has
        # no per-element select in either direction (our choice).
        return jnp.take(self.tables[f.table_name], ids, axis=0, mode="clip").astype(self.dtype)
    raise KeyError(f"unknown feature {feature!r}; known: "
                   f"{[f.name for f in (*self.schema.sparse, *self.schema.sequences)]}")

  def sparse(self, sparse_ids: jax.Array) -> jax.Array:
    """sparse_ids [B, n_sparse] i32 in schema.sparse order -> [B, n_sparse, dim], one token per feature."""
    return jnp.stack([self.lookup(f.name, sparse_ids[:, j]) for j, f in enumerate(self.schema.sparse)], axis=1)

  def __call__(self, sparse_ids: jax.Array) -> jax.Array:
    return self.sparse(sparse_ids)


def padded_vocab(vocab_size: int) -> int:
  """Rows of a table of `vocab_size` ids: rounded up to a multiple of `VOCAB_PAD_MULTIPLE`."""
  return -(-vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE
