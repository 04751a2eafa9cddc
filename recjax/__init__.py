"""recjax: JAX/Flax reimplementation of large-scale recommendation research models."""

__version__ = "0.1.0"
