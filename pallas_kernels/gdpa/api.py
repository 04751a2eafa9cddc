"""GDPA public entry point and dispatcher.

Source: docs/specs/kernels.md §1 (API), §2.1 (semantics), §4 (dispatcher, custom_vjp).
"""
from pallas_kernels import _flash
from pallas_kernels import activations as acts
from pallas_kernels import dispatch
from pallas_kernels import masks
from pallas_kernels.gdpa import reference

import jax.numpy as jnp

# Tuned defaults are placeholders until measured on device (no accelerator was lent when written).
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def gdpa(q, k, v, *, activation="silu", q_lengths=None, kv_lengths=None, window=None,
         pre_scale=1.0, post_scale=1.0, implementation=None, block_q=None, block_k=None,
         backward="pallas"):
  """Generalized dot-product attention (no softmax), differentiable.

  out[b,i,h] = post_scale · Σ_j visible(b,i,j) · act_h(pre_scale · q[b,i,h]·k[b,j,g(h)]) · v[b,j,g(h)],
  visible = (i < q_len[b]) ∧ (j < kv_len[b]) ∧ (i − wl ≤ j ≤ i + wr).

  Args:
    q: [B, Tq, H, D] float (f32, bf16, f16).
    k: [B, Tk, Hkv, D], v: [B, Tk, Hkv, Dv], same dtype as q; H % Hkv == 0 (GQA, head h uses kv head
      h // (H / Hkv)).
    activation: identity | relu | relu2 | leaky_relu | silu | gelu | gelu_tanh | hardswish, or a tuple of
      H names (heads sharing an activation are run as one kernel call).
    q_lengths, kv_lengths: [B] int32 or None; positions ≥ length are padding (clipped to [0, T]).
    window: None, int w (|i − j| ≤ w) or (wl, wr).
    pre_scale, post_scale: Python floats.
    implementation: None | "xla" | "pallas" | "pallas_tpu" | "pallas_triton" (see `dispatch.resolve`).
    block_q, block_k: kernel tile sizes (default 128 / 128); the sequence is padded to a block multiple.
    backward: "pallas" (fused dq / dkv kernels) or "xla" (VJP of the reference).

  Returns:
    [B, Tq, H, Dv] in q's dtype; padded query rows are 0. Accumulation is float32.

  Raises:
    ValueError: bad shapes, unknown activation / implementation / backward, bad window or block size.

  Source: Meta ads_model_kernel_library GDPA (spec §2.1); masking after the activation is our choice.
  """
  b, tq, tk, h, hkv = masks.check_qkv(q, k, v)
  names = acts.normalize(activation, h)
  window = masks.normalize_window(window)
  ql = masks.check_lengths(q_lengths, b, tq, "q_lengths")
  kl = masks.check_lengths(kv_lengths, b, tk, "kv_lengths")
  dispatch.check_backward(backward)
  kind, backend, interpret = dispatch.resolve(implementation)
  pre_scale, post_scale = float(pre_scale), float(post_scale)
  if kind == "xla":
    return reference.gdpa(q, k, v, activation=names, q_lengths=ql, kv_lengths=kl, window=window,
                          pre_scale=pre_scale, post_scale=post_scale)

  def run(name, qq, kk, vv):
    p = _flash.FlashParams(mode="gdpa", activation=name, scale=pre_scale, post_scale=post_scale,
                           window=window, block_q=DEFAULT_BLOCK_Q if block_q is None else block_q,
                           block_k=DEFAULT_BLOCK_K if block_k is None else block_k, backend=backend,
                           interpret=interpret,
                           backward=backward)

    def ref(a, bb, c, qlen, klen):
      return reference.gdpa(a, bb, c, activation=name, q_lengths=qlen, kv_lengths=klen, window=window,
                            pre_scale=pre_scale, post_scale=post_scale)

    return _flash.make_op(p, ref)(qq, kk, vv, ql, kl)

  distinct = sorted(set(names))
  if len(distinct) == 1:
    return run(distinct[0], q, k, v)
  group = h // hkv
  outs = [None] * h
  for name in distinct:
    heads = [i for i, n in enumerate(names) if n == name]
    idx = jnp.asarray(heads)
    kv_idx = jnp.asarray([i // group for i in heads])
    o = run(name, q[:, :, idx], k[:, :, kv_idx], v[:, :, kv_idx])
    for pos, hh in enumerate(heads):
      outs[hh] = o[:, :, pos]
  return jnp.stack(outs, axis=2)
