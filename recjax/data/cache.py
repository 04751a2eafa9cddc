"""Cache of preprocessed dataset arrays, so a second run starts in well under a second.

Key: sha256 over the source files' md5s, the preprocessing options (sorted-key JSON) and `CODE_VERSION`
(bump it whenever a source's preprocessing changes). Store: one uncompressed `.npz` per key holding every
split's arrays plus a `__meta__` member (JSON: key, schema, meta), and a human-readable `.json` sidecar
with the same metadata. The `.npz` alone is authoritative.

Atomicity: each file is written to a temporary file in the same directory and moved into place with
`os.replace`, so a killed run leaves either no cache or a complete one. A file that does not load
(truncated, bad CRC, missing members, wrong key) counts as a miss and is rebuilt.

Location (`cache_dir`): `$RECJAX_CACHE_DIR` if set, else `<data_dir>/.recjax_cache` if writable, else
`~/.cache/recjax/cache` (shared data directories are often read-only).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import tempfile
import zipfile
from collections.abc import Mapping

import numpy as np

from recjax.data.datadir import file_md5

CODE_VERSION = 1
MMAP_MIN_BYTES = 256 << 20   # members at least this large are memory-mapped on load; our choice
ENV_CACHE_DIR = "RECJAX_CACHE_DIR"
_META = "__meta__"
_SEP = "::"


def writable(d: pathlib.Path, create: bool) -> bool:
  """Whether files can be written in `d`; without `create`, a missing `d` is judged by its nearest
  existing parent and is not created."""
  if not create and not d.exists():
    parent = next((a for a in d.parents if a.exists()), None)
    return parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
  try:
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=d, prefix=".probe-"):
      pass
    return True
  except OSError:
    return False


def cache_dir(data_dir: str | os.PathLike, create: bool = True) -> pathlib.Path:
  """The cache directory (see module docstring), created if needed unless `create` is False (a lookup
  before parsing must not leave an empty folder behind when the data turns out to be bad; `save` creates it)."""
  env = os.environ.get(ENV_CACHE_DIR)
  if env:
    d = pathlib.Path(env).expanduser()
    if create:
      d.mkdir(parents=True, exist_ok=True)
    return d
  d = pathlib.Path(data_dir) / ".recjax_cache"
  if writable(d, create):
    return d
  d = pathlib.Path("~/.cache/recjax/cache").expanduser()
  if create:
    d.mkdir(parents=True, exist_ok=True)
  return d


def cache_key(files: Mapping[str, os.PathLike], options: Mapping) -> str:
  """Hex sha256 of (CODE_VERSION, options as sorted JSON, {file name: md5 of its bytes})."""
  payload = {
      "code_version": CODE_VERSION,
      "options": options,
      "files": {name: file_md5(p) for name, p in sorted(files.items())},
  }
  return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_path(directory: pathlib.Path, prefix: str, key: str) -> pathlib.Path:
  return pathlib.Path(directory) / f"{prefix}-{key[:20]}.npz"


def save(path: pathlib.Path, key: str, splits: Mapping[str, Mapping[str, np.ndarray]], info: Mapping) -> None:
  """Writes `splits` ({split: {name: array}}) and `info` (JSON-serialisable) atomically to `path`."""
  path = pathlib.Path(path)
  meta = json.dumps({"key": key, **info}, sort_keys=True, default=str)
  flat = {f"{s}{_SEP}{k}": v for s, arrays in splits.items() for k, v in arrays.items()}
  flat[_META] = np.frombuffer(meta.encode(), np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  _atomic_write(path, lambda f: np.savez(f, **flat))
  _atomic_write(path.with_suffix(".json"), lambda f: f.write(meta.encode()))


def load(path: pathlib.Path, key: str) -> tuple[dict[str, dict[str, np.ndarray]], dict] | None:
  """The cached (splits, info) at `path`, or None if absent, unreadable, corrupt or for another key.

  Members of at least `MMAP_MIN_BYTES` are memory-mapped read-only (np.memmap) rather than read into memory,
  so a dataset larger than RAM (BARS TaobaoAd_x1: about 16 GB) loads with flat memory. Every member's bytes
  are checked against the zip's CRC-32 either way, so damaged bytes count as a miss.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      info = json.loads(bytes(z[_META]).decode())
      if info.pop("key", None) != key:
        return None
      members = {i.filename[:-4]: i for i in z.zip.infolist()}
      splits: dict[str, dict[str, np.ndarray]] = {}
      for name in z.files:
        if name == _META:
          continue
        s, k = name.split(_SEP, 1)
        m = members[name]
        big = m.file_size >= MMAP_MIN_BYTES and m.compress_type == zipfile.ZIP_STORED
        splits.setdefault(s, {})[k] = _memmap_member(path, z.zip, m) if big else z[name]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError):
    return None
  return splits, info


def _memmap_member(path: pathlib.Path, zf: zipfile.ZipFile, m: zipfile.ZipInfo) -> np.ndarray:
  """A read-only np.memmap of an uncompressed `.npy` member, after reading it once through `zipfile`, which
  checks its CRC-32 (in 64 MiB reads, so memory stays flat).

  Raises:
    zipfile.BadZipFile / EOFError: damaged or truncated bytes.
    ValueError: the member is not a plain `.npy` array.
  """
  with zf.open(m) as f:
    while f.read(64 << 20):
      pass
  with open(path, "rb") as f:
    f.seek(m.header_offset)
    local = f.read(30)
    if local[:4] != b"PK\x03\x04":
      raise ValueError(f"{path}: bad local header for {m.filename}")
    f.seek(m.header_offset + 30 + sum(struct.unpack("<HH", local[26:30])))   # past the name and extra field
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(f))
    offset = f.tell()
  if dtype.hasobject:
    raise ValueError(f"{path}: {m.filename} holds Python objects")
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _atomic_write(path: pathlib.Path, write) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
