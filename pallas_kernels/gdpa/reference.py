"""Plain-jnp GDPA: the semantics and the test oracle.

Source: docs/specs/kernels.md §2.1 (Meta `ads_model_kernel_library` GDPA, masked after the activation).
"""
import jax
import jax.numpy as jnp

from pallas_kernels import activations as acts
from pallas_kernels import masks


def reference_compute_dtype(dtype):
  """float32 for f32/bf16/f16 inputs, float64 for f64 inputs (used by the float64 test oracle)."""
  return jnp.promote_types(dtype, jnp.float32)


def gdpa(q, k, v, *, activation="silu", q_lengths=None, kv_lengths=None, window=None,
         pre_scale=1.0, post_scale=1.0, compute_dtype=None):
  """Generalized dot-product attention, materialising the [B, H, Tq, Tk] scores.

  out[b,i,h] = post_scale · Σ_j visible(b,i,j) · act_h(pre_scale · q[b,i,h]·k[b,j,g(h)]) · v[b,j,g(h)]

  Args:
    q: [B, Tq, H, D] float.
    k: [B, Tk, Hkv, D], v: [B, Tk, Hkv, Dv]; H % Hkv == 0, query head h reads kv head h // (H/Hkv).
    activation: a name from `activations.ACTIVATIONS`, or a tuple of H names.
    q_lengths, kv_lengths: [B] int, or None for "no padding".
    window: None, int w, or (wl, wr).
    pre_scale, post_scale: Python floats.

    compute_dtype: dtype of the intermediate math; default float32 (float64 for f64 inputs). The tests
      set it to the input dtype to get the "naive same-precision" baseline of the tolerance rule.

  Returns:
    [B, Tq, H, Dv] in q's dtype; padded query rows are 0. Accumulates in float32 (float64 for f64 input).

  Raises:
    ValueError: bad shapes, unknown activation, bad window.
  """
  b, tq, tk, h, hkv = masks.check_qkv(q, k, v)
  names = acts.normalize(activation, h)
  window = masks.normalize_window(window)
  ql = masks.check_lengths(q_lengths, b, tq, "q_lengths")
  kl = masks.check_lengths(kv_lengths, b, tk, "kv_lengths")
  ct = compute_dtype or reference_compute_dtype(q.dtype)
  group = h // hkv
  kk = jnp.repeat(k.astype(ct), group, axis=2)
  vv = jnp.repeat(v.astype(ct), group, axis=2)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(ct), kk, precision=jax.lax.Precision.HIGHEST)
  s = s * jnp.asarray(pre_scale, ct)
  if len(set(names)) == 1:
    p = acts.get(names[0])[0](s)
  else:
    p = jnp.stack([acts.get(n)[0](s[:, i]) for i, n in enumerate(names)], axis=1)
  m = masks.visible_mask(tq, tk, window, ql, kl)[:, None]
  p = jnp.where(m, p, jnp.zeros_like(p)) * jnp.asarray(post_scale, ct)
  o = jnp.einsum("bhqk,bkhd->bqhd", p, vv, precision=jax.lax.Precision.HIGHEST)
  return o.astype(q.dtype)
