"""Softmax sliding-window attention: public entry point and dispatcher.

Source: docs/specs/kernels.md §1 (API), §2.2 (semantics), §3 (FlashAttention-2 backward with saved LSE).
"""
from pallas_kernels import _flash
from pallas_kernels import dispatch
from pallas_kernels import masks
from pallas_kernels.sliding_window import reference

DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def sliding_window_attention(q, k, v, *, window, q_lengths=None, kv_lengths=None, scale=None,
                             implementation=None, block_q=None, block_k=None, backward="pallas"):
  """Softmax attention over the keys inside a window, differentiable.

  Args:
    q: [B, Tq, H, D] float; k: [B, Tk, Hkv, D]; v: [B, Tk, Hkv, Dv]; H % Hkv == 0.
    window: None (full attention), int w (|i − j| ≤ w) or (wl, wr) (i − wl ≤ j ≤ i + wr). Required.
    q_lengths, kv_lengths: [B] int32 or None; positions ≥ length are padding.
    scale: logit scale; default 1/√D.
    implementation: None | "xla" | "pallas" | "pallas_tpu" | "pallas_triton".
    block_q, block_k: kernel tile sizes (default 128 / 128).
    backward: "pallas" (fused dq / dkv kernels using the saved log-sum-exp) or "xla".

  Returns:
    [B, Tq, H, Dv] in q's dtype; a row with no visible key (padding included) is 0.

  Raises:
    ValueError: bad shapes, window, implementation, backward or block size.

  Source: spec §2.2; FlashAttention-2 (Dao, 2023) for the kernel's online softmax and backward.
  """
  b, tq, tk, h, hkv = masks.check_qkv(q, k, v)
  window = masks.normalize_window(window)
  ql = masks.check_lengths(q_lengths, b, tq, "q_lengths")
  kl = masks.check_lengths(kv_lengths, b, tk, "kv_lengths")
  dispatch.check_backward(backward)
  kind, backend, interpret = dispatch.resolve(implementation)
  scale = 1.0 / float(q.shape[-1]) ** 0.5 if scale is None else float(scale)
  if kind == "xla":
    return reference.sliding_window_attention(q, k, v, window=window, q_lengths=ql, kv_lengths=kl,
                                              scale=scale)
  p = _flash.FlashParams(mode="softmax", scale=scale, window=window,
                         block_q=DEFAULT_BLOCK_Q if block_q is None else block_q,
                         block_k=DEFAULT_BLOCK_K if block_k is None else block_k, backend=backend,
                         interpret=interpret, backward=backward)

  def ref(a, bb, c, qlen, klen):
    return reference.sliding_window_attention(a, bb, c, window=window, q_lengths=qlen, kv_lengths=klen,
                                              scale=scale)

  return _flash.make_op(p, ref)(q, k, v, ql, kl)
