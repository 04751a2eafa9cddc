"""recjax Pallas kernels: GDPA and softmax sliding-window attention (forward + backward).

Public API (docs/specs/kernels.md §1):
  gdpa(q, k, v, *, activation="silu", q_lengths=None, kv_lengths=None, window=None, pre_scale=1.0,
       post_scale=1.0, implementation=None) -> out
  sliding_window_attention(q, k, v, *, window, q_lengths=None, kv_lengths=None, scale=None,
       implementation=None) -> out
"""
from pallas_kernels.gdpa.api import gdpa
from pallas_kernels.sliding_window.api import sliding_window_attention

__all__ = ["gdpa", "sliding_window_attention"]
