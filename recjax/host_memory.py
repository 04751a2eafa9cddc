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

The kept glibc heap fragments: a step's block sometimes no longer fits the hole the previous step left, the
heap grows by a whole block, and `release_if_above()` then returns it to the OS, after which the next steps
fault their pages in again (on a 2-core AVX2 EPYC VM a step that faulted in fresh memory took 15-18 s
against 5-6 s). An allocator that keeps large and small allocations apart (jemalloc, tcmalloc) has no such
growth: `use_preferred_allocator()` restarts the script with one preloaded when the host has it
(`LD_PRELOAD`), and the glibc settings are the fallback.

The settings apply to the process that calls them, from then on. Only Linux with glibc is affected;
elsewhere, or with RECJAX_KEEP_FREED_MEMORY set to 0, false, no, off or empty, they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from recjax import env
from recjax.errors import ConfigError

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_ENV = "RECJAX_KEEP_FREED_MEMORY"
_ALLOCATOR_ENV = "RECJAX_ALLOCATOR"  # auto (default), glibc, or the path of an allocator library
_PRELOADED_ENV = "RECJAX_ALLOCATOR_PRELOADED"  # set on the restarted process, so it restarts only once
# Allocators searched by `RECJAX_ALLOCATOR=auto`, in order, with the settings they are preloaded with.
# jemalloc: never return freed pages to the OS (its default purges blocks over 8 MiB at once, so every
# InterFormer step faulted its whole block in again; measured). tcmalloc keeps them by default.
ALLOCATORS = (("jemalloc", {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
              ("tcmalloc_minimal", {}), ("tcmalloc", {}))
_RETAINING = ("jemalloc", "tcmalloc", "mimalloc")  # allocators `allocator_in_use()` recognises when loaded
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


@functools.cache
def allocator_in_use() -> str:
  """The malloc this process runs on: "jemalloc", "tcmalloc" or "mimalloc" when one is loaded (read from
  /proc/self/maps), else "libc"."""
  try:
    with open("/proc/self/maps") as f:
      maps = f.read()
  except OSError:
    return "libc"
  return next((name for name in _RETAINING if f"lib{name}" in maps), "libc")


def find_allocator() -> tuple[str, dict[str, str]] | None:
  """The allocator library `use_preferred_allocator()` preloads, and the environment settings it gets.

  RECJAX_ALLOCATOR unset or `auto`: the first of `ALLOCATORS` the dynamic linker finds (Debian/Ubuntu
  packages libjemalloc2, libtcmalloc-minimal4); `glibc` (or 0/false/no/off/empty): none; anything else:
  the path of a library to preload.

  Raises:
    ConfigError: RECJAX_ALLOCATOR names a file that does not exist.
  """
  choice = os.environ.get(_ALLOCATOR_ENV, "auto").strip()
  if choice.lower() == "glibc" or not env.switched_on(_ALLOCATOR_ENV):
    return None
  if choice.lower() == "auto":
    for name, settings in ALLOCATORS:
      found = ctypes.util.find_library(name)
      if found:
        return found, settings
    return None
  if not os.path.isfile(choice):
    raise ConfigError(f"{_ALLOCATOR_ENV}={choice!r}: no such file; set it to auto, glibc, or the path of "
                      f"an allocator library such as /usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
  return choice, next((settings for name, settings in ALLOCATORS if f"lib{name}." in choice), {})


def preload_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
  """The environment to restart this process with so that `find_allocator()`'s library serves malloc, or
  None when there is nothing to do: not Linux with glibc, RECJAX_KEEP_FREED_MEMORY off, already restarted,
  jemalloc, tcmalloc or mimalloc already loaded, or no allocator found.

  The library goes first in LD_PRELOAD (an existing LD_PRELOAD is kept after it); its settings are added
  unless `environ` already sets them.

  Raises:
    ConfigError: from `find_allocator()`.
  """
  if not env.switched_on(_ENV) or not on_glibc() or _PRELOADED_ENV in environ or allocator_in_use() != "libc":
    return None
  found = find_allocator()
  if found is None:
    return None
  library, settings = found
  new = {**settings, **environ}
  new["LD_PRELOAD"] = ":".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
  new[_PRELOADED_ENV] = library
  return new


def use_preferred_allocator() -> None:
  """Restarts this script (`os.execve` of `sys.orig_argv`, same process id) with `preload_environment()`
  when it is not None; otherwise returns. Scripts call it first, through `recjax.cli.setup_host()`; never
  call it in a notebook or a test process, which it would replace [our choice].

  Measured on `interformer.py:medium` at batch 2048 (2-core AVX2 EPYC VM, 20 steps per run, runs
  alternated): with the kept glibc heap, one heap release per run, median steps of 6.4-6.6 s and slowest
  steps of 17-18 s, 14.7 GB peak; with jemalloc, no page faults after the first two steps, medians of
  5.7-5.9 s, slowest 6.5-7.9 s, 10.4 GB; tcmalloc: median 6.4 s, slowest 8.2 s, 10.2 GB. Like the glibc heap,
  jemalloc keeps up to two step blocks (two steps are in flight): `interformer.py:large` at batch 2048
  (12.7 GB each) was OOM-killed on a 24 GB host, so use RECJAX_KEEP_FREED_MEMORY=0 there.

  Raises:
    ConfigError: from `find_allocator()`.
  """
  new = preload_environment(os.environ)
  if new is None:
    return
  log.info("host memory: restarting with %s preloaded (%s=glibc keeps glibc malloc)", new[_PRELOADED_ENV],
           _ALLOCATOR_ENV)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, new)


def keep_freed_memory() -> bool:
  """Tells glibc malloc to use one arena, never to use mmap, and never to trim its heap (`mallopt`).

  One arena: with per-thread arenas, blocks freed by XLA's worker threads were not reused by the next
  step's allocations and the step time did not improve. Call it early, before the first jitted call.

  Logs one INFO line (logger `recjax.host_memory`) when the settings are applied, and one when
  RECJAX_KEEP_FREED_MEMORY turns them off; nothing when another allocator serves malloc.

  Returns:
    True if the settings were applied; False if the C library is not glibc, another allocator serves
    malloc (`allocator_in_use()`), mallopt is unavailable or refused a setting, or
    RECJAX_KEEP_FREED_MEMORY is 0, false, no, off or empty.
  """
  global _kept
  if not env.switched_on(_ENV):
    log.info("host memory: the C library's malloc with its defaults (%s is off)", _ENV)
    return False
  if not on_glibc() or allocator_in_use() != "libc":
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


def retains_freed_memory() -> bool:
  """Whether freed memory stays with this process for the next step: jemalloc, tcmalloc or mimalloc serves
  malloc, or `keep_freed_memory()` is on."""
  return _kept or allocator_in_use() != "libc"


def release_after(previous: Any) -> bool:
  """`release_if_above()` once `previous` (a pytree of arrays, e.g. the previous step's loss) is ready.

  A training loop that dispatches steps asynchronously calls this after dispatching step i with step
  i − 1's output, so at most two steps are in flight and the resident memory read is that of at most one
  step still running. Read with several steps queued, it showed their growth as one:
  `interformer.py:medium`'s 4.8 GB step block looked like 14.4 GB of growth and the guard released the
  heap after most steps (our choice). Does nothing, and does not wait, unless `retains_freed_memory()`;
  releases only the glibc heap (under jemalloc or tcmalloc it waits and returns False).

  Returns:
    True if memory was released.
  """
  if not retains_freed_memory():
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
