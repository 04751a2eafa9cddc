"""Re-ranking: fast greedy MAP inference for DPPs and list diversity metrics."""

from recjax.rerank.dpp import dpp_kernel, greedy_map, greedy_map_lowrank, greedy_map_window

__all__ = ["dpp_kernel", "greedy_map", "greedy_map_lowrank", "greedy_map_window"]
