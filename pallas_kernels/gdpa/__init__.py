"""GDPA: reference, Pallas kernels (TPU / Triton-lowered GPU) and dispatcher."""
from pallas_kernels.gdpa.api import gdpa
__all__ = ["gdpa"]
