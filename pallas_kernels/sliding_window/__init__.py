"""Softmax sliding-window attention: reference, Pallas kernels and dispatcher."""
from pallas_kernels.sliding_window.api import sliding_window_attention
__all__ = ["sliding_window_attention"]
