"""Host allocator settings for XLA:CPU training loops [our choice; measured in experiments/bench].

XLA:CPU allocates each jitted call's temporaries as one large block (GBs for an InterFormer step at batch
2048) and frees it when the call ends. glibc serves every allocation above its mmap threshold (at most
32 MiB) with a fresh `mmap` and returns it with `munmap`, so every step faults in and zero-fills all its
temporary pages again: on a 2-core host about a third of the CPU time of the main command and of
`interformer:medium` went to the kernel (system time).
`keep_freed_memory()` makes glibc serve large blocks from its heap and keep freed memory there, so the next
step reuses the same pages. The cost is that the process's resident memory stays at its peak instead of
shrinking between steps, and can grow when a step's block no longer fits a freed hole; training loops
call `release_if_above()` after each step to cap it at a share of RAM.

The setting applies to the process that calls it, from then on. Only glibc (Linux) is affected; elsewhere,
or with RECJAX_KEEP_FREED_MEMORY set to 0, false, no, off or empty, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform
from typing import Any

from recjax import env

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ENV = "RECJAX_KEEP_FREED_MEMORY"
RELEASE_FRACTION = 0.55  # release_if_above's default share of physical memory; our choice
GROWTH_FRACTION = 0.85  # ... and the limit for resident memory plus the largest growth between two calls
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_kept = False
_releases = 0
_last_rss: int | None = None  # resident bytes at the previous release_if_above call
_max_growth = 0  # largest growth of resident bytes between two calls
log = logging.getLogger(__name__)


def on_glibc() -> bool:
  """Whether this process runs on Linux with glibc, the only C library the setting applies to."""
  return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
  """Tells glibc malloc to use one arena, never to use mmap, and never to trim its heap (`mallopt`).

  One arena: with per-thread arenas, blocks freed by XLA's worker threads were not reused by the next
  step's allocations and the step time did not improve. Call it early, before the first jitted call.

  Logs one INFO line (logger `recjax.host_memory`) when the settings are applied.

  Returns:
    True if the settings were applied; False if the C library is not glibc, mallopt is unavailable or
    refused a setting, or RECJAX_KEEP_FREED_MEMORY is 0, false, no, off or empty.
  """
  global _kept
  if not env.switched_on(_ENV) or not on_glibc():
    return False
  try:
    mallopt = _libc().mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  _kept = all(mallopt(param, value) for param, value in
              ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  if _kept:
    log.info("host memory: glibc keeps freed memory for reuse by the next step (%s=0 turns this off)", _ENV)
  return _kept


def release_if_above(fraction: float = RELEASE_FRACTION) -> bool:
  """Returns the heap's free pages to the OS (`malloc_trim(0)`) when this process's resident memory is
  above `fraction` of the host's physical memory, or when it plus the largest growth seen between two
  calls is above `GROWTH_FRACTION` of it (so a model whose step block is too large to keep twice gets
  released after every step, as glibc does by default); does nothing unless `keep_freed_memory()` is on.

  With one arena and no trimming, a step's temporary block sometimes does not fit the hole the previous
  step left (small allocations in between split it), so the heap grows by a whole block; measured on
  `interformer.py:medium` at batch 2048: 6 -> 11 -> 16 -> 20 GB over 19 steps. Training loops call this
  after every step (through `release_after`), which bounds resident memory near `fraction` of RAM; the
  step after a release faults its pages in again (our choice). Cost: one read of /proc/self/statm.

  Args:
    fraction: in (0, 1].
  Returns:
    True if memory was released.
  """
  global _last_rss, _max_growth, _releases
  if not _kept:
    return False
  rss = _rss_bytes()
  if _last_rss is not None:
    _max_growth = max(_max_growth, rss - _last_rss)
  _last_rss = rss
  if rss <= fraction * _physical_bytes() and rss + _max_growth <= GROWTH_FRACTION * _physical_bytes():
    return False
  _libc().malloc_trim(0)
  _releases += 1
  _last_rss = _rss_bytes()
  log.info("host memory: resident memory %.1f GB (largest growth per step %.1f GB); returned the heap's "
           "free pages to the OS", rss / 1e9, _max_growth / 1e9)
  return True


def release_after(previous: Any) -> bool:
  """`release_if_above()` once `previous` (a pytree of arrays, e.g. the previous step's loss) is ready.

  A training loop that dispatches steps asynchronously calls this after dispatching step i with step
  i − 1's output, so the resident memory read is that of at most one step in flight. Read with several
  steps queued, it showed their growth as one: `interformer.py:medium`'s 4.8 GB step block looked like
  14.4 GB of growth and the guard released the heap after most steps (our choice). Does nothing, and does
  not wait, unless `keep_freed_memory()` is on.

  Returns:
    True if memory was released.
  """
  if not _kept:
    return False
  import jax
  jax.block_until_ready(previous)
  return release_if_above()


def releases() -> int:
  """How many times `release_if_above` has released memory in this process."""
  return _releases


@functools.cache
def _libc() -> ctypes.CDLL:
  return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * _PAGE


def _physical_bytes() -> int:
  return os.sysconf("SC_PHYS_PAGES") * _PAGE


def kept() -> bool:
  """Whether `keep_freed_memory()` has been applied in this process (reported by the benches)."""
  return _kept
