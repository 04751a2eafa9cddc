"""Plain-jnp softmax sliding-window attention: the semantics and the test oracle.

Source: docs/specs/kernels.md §2.2.
"""
import jax
import jax.numpy as jnp

from pallas_kernels import masks

# Finite "minus infinity" for masked logits, as in JAX's Pallas attention ops (spec §2.2).
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def sliding_window_attention(q, k, v, *, window, q_lengths=None, kv_lengths=None, scale=None,
                             compute_dtype=None):
  """Softmax attention restricted to the visible keys, materialising the [B, H, Tq, Tk] scores.

  Args:
    q: [B, Tq, H, D] float.
    k: [B, Tk, Hkv, D], v: [B, Tk, Hkv, Dv]; H % Hkv == 0.
    window: None, int w (|i − j| ≤ w) or (wl, wr) (i − wl ≤ j ≤ i + wr).
    q_lengths, kv_lengths: [B] int, or None.
    scale: multiplies q·k before the softmax; default 1/√D.

    compute_dtype: dtype of the intermediate math; default float32 (float64 for f64 inputs). The tests
      set it to the input dtype to get the "naive same-precision" baseline of the tolerance rule.

  Returns:
    [B, Tq, H, Dv] in q's dtype. Rows with no visible key (padding rows included) are 0. Computes in
    float32 (float64 for f64 input).

  Raises:
    ValueError: bad shapes or window.
  """
  b, tq, tk, h, hkv = masks.check_qkv(q, k, v)
  window = masks.normalize_window(window)
  ql = masks.check_lengths(q_lengths, b, tq, "q_lengths")
  kl = masks.check_lengths(kv_lengths, b, tk, "kv_lengths")
  ct = compute_dtype or jnp.promote_types(q.dtype, jnp.float32)
  if scale is None:
    scale = 1.0 / float(q.shape[-1]) ** 0.5
  group = h // hkv
  kk = jnp.repeat(k.astype(ct), group, axis=2)
  vv = jnp.repeat(v.astype(ct), group, axis=2)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(ct), kk, precision=jax.lax.Precision.HIGHEST)
  s = s * jnp.asarray(scale, ct)
  m = masks.visible_mask(tq, tk, window, ql, kl)[:, None]
  s = jnp.where(m, s, jnp.asarray(MASK_VALUE, ct))
  mx = jnp.max(s, axis=-1, keepdims=True)
  e = jnp.where(m, jnp.exp(s - jax.lax.stop_gradient(mx)), jnp.zeros_like(s))
  denom = jnp.sum(e, axis=-1, keepdims=True)
  p = e / jnp.where(denom == 0, jnp.ones_like(denom), denom)
  o = jnp.einsum("bhqk,bkhd->bqhd", p, vv, precision=jax.lax.Precision.HIGHEST)
  return o.astype(q.dtype)
