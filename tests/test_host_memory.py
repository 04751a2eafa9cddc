"""recjax.host_memory: glibc keeps a large freed block in its heap instead of mmap/munmap per block.

Each case runs in a child process (the setting is process-wide) and reads glibc's own counters
(`mallinfo2`) around a 256 MiB malloc/free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recjax import host_memory

pytestmark = pytest.mark.skipif(not host_memory.on_glibc(), reason="the setting applies to glibc only")

_CHILD = r"""
import ctypes, json, sys
from recjax import host_memory

class MallInfo2(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in
              ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
               "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
applied = host_memory.keep_freed_memory() if sys.argv[1] == "call" else None
kept = host_memory.kept()
before = libc.mallinfo2()
p = libc.malloc(256 << 20)
during = libc.mallinfo2()
libc.free(p)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "kept": kept, "mmapped": during.hblkhd - before.hblkhd,
                  "heap_grew": during.arena - before.arena, "heap_kept": after.arena - before.arena}))
"""

_N = 256 << 20


def _child(mode: str, **env) -> dict:
  res = subprocess.run([sys.executable, "-c", _CHILD, mode], env={**os.environ, **env}, capture_output=True,
                       text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


def test_default_glibc_maps_and_unmaps_a_large_block():
  got = _child("none")
  assert got["mmapped"] >= _N  # served by mmap: the premise of the setting
  assert got["heap_kept"] < _N


def test_keep_freed_memory_serves_from_the_heap_and_keeps_it():
  got = _child("call")
  assert got["applied"] is True and got["kept"] is True
  assert got["mmapped"] == 0
  assert got["heap_grew"] >= _N
  assert got["heap_kept"] >= _N  # not trimmed after free: the next step reuses these pages


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no", ""])
def test_opt_out_by_environment(value):
  got = _child("call", RECJAX_KEEP_FREED_MEMORY=value)
  assert got["applied"] is False and got["kept"] is False
  assert got["mmapped"] >= _N


_RELEASE_CHILD = r"""
import ctypes, json, sys
from recjax import host_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
host_memory.keep_freed_memory()
p = libc.malloc(256 << 20)
ctypes.memset(p, 1, 256 << 20)  # resident
libc.free(p)
rss = host_memory._rss_bytes()
frac = float(sys.argv[1])
released = host_memory.release_if_above(frac)
print(json.dumps({"released": released, "releases": host_memory.releases(), "rss_before": rss,
                  "rss_after": host_memory._rss_bytes()}))
"""


def _release_child(fraction: float, **env) -> dict:
  res = subprocess.run([sys.executable, "-c", _RELEASE_CHILD, str(fraction)], env={**os.environ, **env},
                       capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


def test_release_returns_kept_pages_only_above_the_threshold():
  # A 256 MiB block, written and freed, stays resident in the kept heap; a threshold below the resident
  # size releases it (RSS drops by about the block), one above it keeps it.
  got = _release_child(1e-9)
  assert got["released"] is True and got["releases"] == 1
  assert got["rss_before"] - got["rss_after"] >= 200 << 20
  kept = _release_child(1.0)
  assert kept["released"] is False and kept["releases"] == 0
  assert kept["rss_before"] - kept["rss_after"] < 16 << 20


def test_release_does_nothing_when_the_setting_is_off():
  got = _release_child(1e-9, RECJAX_KEEP_FREED_MEMORY="0")
  assert got["released"] is False


_GROWTH_CHILD = r"""
import ctypes, json
from recjax import host_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
host_memory.keep_freed_memory()
ram = host_memory._physical_bytes()
first = host_memory.release_if_above(1.0)       # records the resident size
p = libc.malloc(512 << 20)
ctypes.memset(p, 1, 512 << 20)                  # the heap grows by a 512 MiB "step block"
libc.free(p)
rss = host_memory._rss_bytes()
# Resident memory alone is under both limits; with one more block of the growth just seen it would pass
# the growth limit.
host_memory.GROWTH_FRACTION = (rss + (256 << 20)) / ram
second = host_memory.release_if_above(1.0)
print(json.dumps({"first": first, "second": second, "dropped": rss - host_memory._rss_bytes()}))
"""


def test_release_counts_one_more_block_of_growth():
  res = subprocess.run([sys.executable, "-c", _GROWTH_CHILD], capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(res.stdout.strip().splitlines()[-1])
  assert got["first"] is False and got["second"] is True
  assert got["dropped"] >= 400 << 20


_AFTER_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from recjax import host_memory
if sys.argv[1] == "on":
  host_memory.keep_freed_memory()
elif sys.argv[1] == "jemalloc":  # as if the script had restarted with jemalloc preloaded
  host_memory.allocator_in_use = lambda: "jemalloc"

# A "step" of about 100 GFLOP (a second or more here), dispatched asynchronously.
w = jnp.eye(1024, dtype=jnp.float32)
f = jax.jit(lambda x: jax.lax.fori_loop(0, 48, lambda i, a: a @ w, x))
f(w).block_until_ready()
y = f(w)
at_dispatch = y.is_ready()
released = host_memory.release_after(y)
print(json.dumps({"at_dispatch": at_dispatch, "after": y.is_ready(), "released": released}))
"""


@pytest.mark.parametrize("mode", ["on", "off", "jemalloc"])
def test_release_after_waits_for_the_previous_step_only_when_kept(mode):
  # The "previous step" takes a second or more; with freed memory kept (glibc setting on, or jemalloc),
  # release_after returns only once it is done (so at most two steps are in flight); off, it neither waits
  # nor releases.
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  res = subprocess.run([sys.executable, "-c", _AFTER_CHILD, mode], env=env, capture_output=True, text=True,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(res.stdout.strip().splitlines()[-1])
  assert got["at_dispatch"] is False
  assert got["after"] is (mode != "off")
  assert got["released"] is False  # a small process stays under both limits


# --- use_preferred_allocator: restart the script with jemalloc/tcmalloc preloaded -----------------------


def _fake_allocator(monkeypatch, found=("libfake.so", {"MALLOC_CONF": "theirs"})):
  monkeypatch.setattr(host_memory, "find_allocator", lambda: found)
  monkeypatch.delenv("RECJAX_KEEP_FREED_MEMORY", raising=False)


def test_preload_environment_puts_the_allocator_first_and_keeps_user_settings(monkeypatch):
  _fake_allocator(monkeypatch)
  got = host_memory.preload_environment({"LD_PRELOAD": "user.so", "MALLOC_CONF": "mine", "PATH": "/bin"})
  assert got == {"LD_PRELOAD": "libfake.so:user.so", "MALLOC_CONF": "mine", "PATH": "/bin",
                 "RECJAX_ALLOCATOR_PRELOADED": "libfake.so"}
  got = host_memory.preload_environment({})
  assert got == {"LD_PRELOAD": "libfake.so", "MALLOC_CONF": "theirs", "RECJAX_ALLOCATOR_PRELOADED": "libfake.so"}


def test_preload_environment_restarts_at_most_once_and_only_when_asked(monkeypatch):
  _fake_allocator(monkeypatch)
  assert host_memory.preload_environment({"RECJAX_ALLOCATOR_PRELOADED": "libfake.so"}) is None
  monkeypatch.setenv("RECJAX_KEEP_FREED_MEMORY", "0")
  assert host_memory.preload_environment({}) is None
  _fake_allocator(monkeypatch, found=None)
  assert host_memory.preload_environment({}) is None


def test_find_allocator_choices(monkeypatch, tmp_path):
  found = {"tcmalloc_minimal": "libtcmalloc_minimal.so.4"}
  monkeypatch.setattr(host_memory.ctypes.util, "find_library", found.get)
  monkeypatch.delenv("RECJAX_ALLOCATOR", raising=False)
  assert host_memory.find_allocator() == ("libtcmalloc_minimal.so.4", {})  # jemalloc absent: the next one
  found["jemalloc"] = "libjemalloc.so.2"
  assert host_memory.find_allocator() == ("libjemalloc.so.2",
                                          {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"})
  for off in ("glibc", "GLIBC", "0", "off"):
    monkeypatch.setenv("RECJAX_ALLOCATOR", off)
    assert host_memory.find_allocator() is None
  lib = tmp_path / "libjemalloc.so.2"
  lib.write_bytes(b"")
  monkeypatch.setenv("RECJAX_ALLOCATOR", str(lib))
  assert host_memory.find_allocator() == (str(lib), {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"})
  monkeypatch.setenv("RECJAX_ALLOCATOR", str(tmp_path / "missing.so"))
  with pytest.raises(host_memory.ConfigError, match=r"RECJAX_ALLOCATOR=.*missing\.so.*no such file"):
    host_memory.find_allocator()


_SETUP_CHILD = r"""
import json, os, sys
from recjax import cli, host_memory
print(f"started {os.getpid()}", flush=True)
cli.setup_host()
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "preload": os.environ.get("LD_PRELOAD"),
                  "maps": open("/proc/self/maps").read(), "allocator": host_memory.allocator_in_use(),
                  "kept": host_memory.kept()}))
"""


def _setup_child(**env) -> tuple[list[str], dict]:
  base = {k: v for k, v in os.environ.items() if not k.startswith(("RECJAX_ALLOCATOR", "LD_PRELOAD"))}
  res = subprocess.run([sys.executable, "-c", _SETUP_CHILD, "--flag", "x y"], env={**base, **env},
                       capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


def test_setup_host_restarts_the_script_once_with_the_library_preloaded():
  # A harmless glibc library stands in for an allocator, so the restart itself is tested on any glibc host.
  with open("/proc/self/maps") as f:
    libc = next(line.split()[-1] for line in f if "/libc.so" in line or "/libc-" in line)
  lib = os.path.join(os.path.dirname(libc), "libanl.so.1")
  if not os.path.isfile(lib):
    pytest.skip(f"{lib} not on this host")
  lines, got = _setup_child(RECJAX_ALLOCATOR=lib, LD_PRELOAD="")
  # The script ran up to setup_host, then once more from the start in the same process (execve).
  assert lines[:2] == [f"started {got['pid']}"] * 2 and len(lines) == 3
  assert got["argv"] == ["--flag", "x y"] and got["preload"] == lib and lib in got["maps"]
  assert got["allocator"] == "libc" and got["kept"] is True  # not jemalloc/tcmalloc: glibc keeps its heap
  lines, got = _setup_child(RECJAX_ALLOCATOR="glibc")
  assert len(lines) == 2 and not got["preload"] and got["kept"] is True


@pytest.mark.skipif(host_memory.find_allocator() is None,
                    reason="no jemalloc or tcmalloc found (or RECJAX_ALLOCATOR chose glibc)")
def test_setup_host_runs_scripts_on_jemalloc_or_tcmalloc_when_installed():
  lines, got = _setup_child()
  assert lines[:2] == [f"started {got['pid']}"] * 2 and len(lines) == 3
  assert got["allocator"] in ("jemalloc", "tcmalloc") and got["kept"] is False  # the glibc settings are moot
  lines, got = _setup_child(RECJAX_KEEP_FREED_MEMORY="0")
  assert len(lines) == 2 and got["allocator"] == "libc" and got["kept"] is False
