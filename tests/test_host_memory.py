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
