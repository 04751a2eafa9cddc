"""Backend selection shared by the GDPA and sliding-window dispatchers.

Source: docs/specs/kernels.md §1 (`implementation=` semantics), §4 (dispatcher).
"""
import jax

IMPLEMENTATIONS = (None, "xla", "pallas", "pallas_tpu", "pallas_triton")


def resolve(implementation) -> tuple[str, str | None, bool]:
  """Maps `implementation` to `(kind, backend, interpret)`.

  kind is "xla" or "pallas"; backend is "tpu" | "triton" (None for xla); interpret is True on CPU.
    * None: Pallas TPU kernel on TPU, Pallas Triton-lowered kernel on GPU, the XLA reference elsewhere.
    * "xla": the reference.
    * "pallas": the platform's kernel; on CPU the TPU-style kernel in interpret mode.
    * "pallas_tpu" / "pallas_triton": that kernel family explicitly (interpret mode on CPU).

  Raises:
    ValueError: unknown name, or an explicit kernel family that cannot run on this backend.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown implementation {implementation!r}; expected one of {IMPLEMENTATIONS}")
  platform = jax.default_backend()
  if implementation == "xla" or (implementation is None and platform not in ("tpu", "gpu")):
    return "xla", None, False
  interpret = platform == "cpu"
  if implementation in (None, "pallas"):
    backend = "triton" if platform == "gpu" else "tpu"
  else:
    backend = "tpu" if implementation == "pallas_tpu" else "triton"
    if (platform == "gpu" and backend == "tpu") or (platform == "tpu" and backend == "triton"):
      raise ValueError(f"implementation={implementation!r} cannot run on platform {platform!r}")
  return "pallas", backend, interpret


def check_backward(backward: str):
  if backward not in ("pallas", "xla"):
    raise ValueError(f"backward must be 'pallas' or 'xla', got {backward!r}")
