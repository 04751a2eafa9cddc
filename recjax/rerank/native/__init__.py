"""Native CPU kernels for the re-ranking stage, called from jitted code through XLA's FFI.

`greedy_map.cc` is Algorithm 1 of Chen, Zhang & Zhou (2018) for XLA:CPU (`recjax.rerank.dpp.greedy_map`
uses it on CPU by default). It is compiled on first use with the host's C++ compiler (`$CXX`, else
`c++`, `g++` or `clang++`), against the FFI headers shipped in jaxlib (`jax.ffi.include_dir()`), for the
host CPU (`-march=native`), and cached as a shared library keyed by the source, the compiler, the flags,
the jaxlib version and the CPU, so later processes load it in milliseconds [our choice, like
`torch.utils.cpp_extension.load`].

Cache: `$RECJAX_CACHE_DIR/native` if that variable is set, else `~/.cache/recjax/native`, else a folder
in the temp directory. The library is written to a temporary file and moved into place, so concurrent
first uses (pytest -n 2) and killed runs never leave a truncated library behind.

Set `RECJAX_NATIVE=0` (or false/no/off) to never build or use it; `greedy_map(..., impl="xla")` does the
same for one call. Without a working compiler, `available()` is False, `reason()` says why, and
`impl="auto"` falls back to the XLA implementation with one warning.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import tempfile
import time

import jax

from recjax import env
from recjax.data import cache as data_cache

__all__ = ["ENV_NATIVE", "GREEDY_MAP_TARGET", "available", "cache_dir", "load", "reason"]

log = logging.getLogger(__name__)

GREEDY_MAP_TARGET = "recjax_greedy_map"
ENV_NATIVE = "RECJAX_NATIVE"
_SOURCE = pathlib.Path(__file__).with_name("greedy_map.cc")
_SYMBOL = "RecjaxGreedyMap"
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-w")
_COMPILE_TIMEOUT_S = 300


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept (see the module docstring); created if needed."""
  configured = os.environ.get(data_cache.ENV_CACHE_DIR)
  candidates = ([pathlib.Path(configured).expanduser() / "native"] if configured else []) + [
      pathlib.Path("~/.cache/recjax/native").expanduser(),
      pathlib.Path(tempfile.gettempdir()) / f"recjax-native-{os.getuid() if hasattr(os, 'getuid') else 0}",
  ]
  for d in candidates:
    if data_cache.writable(d, create=True):
      return d
  raise OSError(f"no writable folder for native kernels among {[str(c) for c in candidates]}")


def _compiler() -> list[str] | None:
  """The compiler command: `$CXX` (split like a shell would, e.g. "ccache g++"), else the first of c++,
  g++ and clang++ on PATH."""
  cxx = os.environ.get("CXX", "").strip()
  if cxx:
    return shlex.split(cxx)
  found = next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
  return [found] if found else None


def _cpu_signature() -> str:
  """Identifies the host CPU for `-march=native` builds (the flags line of /proc/cpuinfo on Linux)."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("flags", "Features", "model name")):
        return line
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _compile(cxx: list[str], flags: tuple[str, ...], out: pathlib.Path) -> str | None:
  """Compiles the kernel into `out` atomically; returns None on success, else the compiler's message."""
  with tempfile.NamedTemporaryFile(dir=out.parent, prefix=out.name + ".", suffix=".tmp", delete=False) as tmp:
    tmp_path = pathlib.Path(tmp.name)
  cmd = [*cxx, *flags, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(tmp_path)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
    if proc.returncode != 0:
      return f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-2000:]}"
    os.replace(tmp_path, out)
    return None
  except (OSError, subprocess.SubprocessError) as e:
    return f"`{' '.join(cmd)}` failed: {e}"
  finally:
    tmp_path.unlink(missing_ok=True)


@functools.cache
def load() -> str | None:
  """Builds (once per host and source) and registers the FFI targets; returns None when they are ready,
  else the reason they are not. Never raises."""
  if not env.switched_on(ENV_NATIVE):
    return f"disabled by {ENV_NATIVE}={os.environ.get(ENV_NATIVE)!r}"
  cxx = _compiler()
  if cxx is None:
    return "no C++ compiler found (set CXX, or install g++ or clang++)"
  try:
    version = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    src = _SOURCE.read_bytes()
    folder = cache_dir()
  except (OSError, subprocess.SubprocessError) as e:
    return f"cannot prepare the native build: {e}"
  errors = []
  for flags in (_BASE_FLAGS + ("-march=native",), _BASE_FLAGS):
    parts = [src, version, " ".join(flags), importlib.metadata.version("jaxlib"), _cpu_signature()]
    joined = b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    key = hashlib.sha256(joined).hexdigest()[:20]
    lib_path = folder / f"greedy_map-{key}.so"
    if not lib_path.exists():
      t0 = time.perf_counter()
      err = _compile(cxx, flags, lib_path)
      if err:
        errors.append(err)
        continue
      log.info("compiled the native greedy_map kernel in %.1f s: %s", time.perf_counter() - t0, lib_path)
    try:
      lib = ctypes.CDLL(str(lib_path))
      jax.ffi.register_ffi_target(GREEDY_MAP_TARGET, jax.ffi.pycapsule(getattr(lib, _SYMBOL)), platform="cpu")
      return None
    except Exception as e:  # noqa: BLE001 - any failure to load or register means "unavailable"
      errors.append(f"loading {lib_path} failed: {type(e).__name__}: {e}")
  return "; ".join(errors)


def available() -> bool:
  """Whether the native kernels are built and registered (builds them on first call)."""
  return load() is None


def reason() -> str | None:
  """Why the native kernels are not available, or None when they are."""
  return load()
