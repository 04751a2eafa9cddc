"""Where the raw public datasets live, and fetching them when they are missing.

Resolution order of the data directory (issue 2): the explicit setting (`--config.dataset.data_dir`), then
`$RECJAX_DATA_DIR`, then `~/.cache/recjax`. A dataset lives in `<data_dir>/<dataset_folder>/` (e.g.
`ml-100k/`), exactly as its official zip extracts.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence

from recjax.errors import DataError

ENV_DATA_DIR = "RECJAX_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/recjax"
DOWNLOAD_TIMEOUT_S = 30.0


def resolve_data_dir(explicit: str | os.PathLike | None) -> pathlib.Path:
  """The data directory: `explicit` if non-empty, else `$RECJAX_DATA_DIR` if set, else `~/.cache/recjax`.

  `~` is expanded; the directory need not exist (a download creates it).
  """
  if explicit:
    return pathlib.Path(explicit).expanduser()
  env = os.environ.get(ENV_DATA_DIR)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path(DEFAULT_DATA_DIR).expanduser()


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
  """Hex md5 of a file's bytes, read in 1 MiB chunks."""
  h = hashlib.md5()
  with open(path, "rb") as f:
    while b := f.read(chunk):
      h.update(b)
  return h.hexdigest()


def ensure_files(
    data_dir: str | os.PathLike,
    dataset_folder: str,
    required_files: Sequence[str],
    url: str,
    md5s: Mapping[str, str] | None = None,
) -> pathlib.Path:
  """Makes sure `<data_dir>/<dataset_folder>/<f>` exists for every `f` in `required_files`.

  If any is missing, downloads the zip at `url` (a progress bar on stderr), checks the md5 of each
  extracted file named in `md5s`, and only then moves the dataset folder's files into place, so a failed or
  interrupted download leaves nothing half-written under `dataset_folder`. Files already present are kept
  as they are (not re-verified: the cache keys on their content hashes anyway).

  Args:
    data_dir: the resolved data directory (see `resolve_data_dir`).
    dataset_folder: folder inside the zip and inside `data_dir`, e.g. "ml-100k".
    required_files: file names inside `dataset_folder`.
    url: official zip (http(s) or file://), whose members are `<dataset_folder>/<file>`.
    md5s: file name -> expected hex md5, checked on the downloaded copy.

  Returns:
    The dataset folder `<data_dir>/<dataset_folder>`.

  Raises:
    DataError: if files are missing and the download fails (no network, HTTP error), the zip is corrupt or
      lacks a required file, or a checksum differs. The message names the expected files, the directory
      searched and the URL.
  """
  folder = pathlib.Path(data_dir) / dataset_folder
  missing = [f for f in required_files if not (folder / f).is_file()]
  if not missing:
    return folder

  def _fail(why: str) -> DataError:
    return DataError(
        f"Dataset files {list(missing)} not found in {folder} (data directory {pathlib.Path(data_dir)}; "
        f"set --config.dataset.data_dir or ${ENV_DATA_DIR}) and {why}. Download {url} and extract it "
        f"there, so that {folder / missing[0]} exists.")

  try:
    pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise _fail(f"the directory cannot be created to download into ({e})") from None
  with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
    zpath = pathlib.Path(tmp) / "download.zip"
    try:
      _download(url, zpath)
    except (urllib.error.URLError, OSError, ValueError) as e:
      raise _fail(f"downloading failed (offline? {type(e).__name__}: {e})") from None
    extract_dir = pathlib.Path(tmp) / "extract"
    try:
      with zipfile.ZipFile(zpath) as z:
        prefix = f"{dataset_folder}/"
        members = [m for m in z.namelist()
                   if m.startswith(prefix) and ".." not in pathlib.PurePosixPath(m).parts]
        z.extractall(extract_dir, members=members)
    except (zipfile.BadZipFile, OSError) as e:
      raise _fail(f"the downloaded file is not a valid zip ({e})") from None
    got = extract_dir / dataset_folder
    absent = [f for f in required_files if not (got / f).is_file()]
    if absent:
      raise _fail(f"the downloaded zip lacks {absent}")
    for name, want in (md5s or {}).items():
      have = file_md5(got / name)
      if have != want:
        raise _fail(f"the downloaded {name} has md5 {have}, expected {want} (corrupt or changed download)")
    folder.mkdir(parents=True, exist_ok=True)
    for src in got.iterdir():
      dst = folder / src.name
      if src.is_file() and not dst.exists():
        os.replace(src, dst)   # same filesystem: atomic per file; required files were all verified first
      elif src.is_dir() and not dst.exists():
        shutil.move(src, dst)
  return folder


def _download(url: str, dest: pathlib.Path) -> None:
  """Streams `url` to `dest` with a tqdm progress bar (bytes)."""
  from tqdm.auto import tqdm
  with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(dest, "wb") as f:
    total = r.headers.get("Content-Length") if hasattr(r, "headers") and r.headers else None
    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
              desc=f"download {url.rsplit('/', 1)[-1]}") as bar:
      while chunk := r.read(1 << 16):
        f.write(chunk)
        bar.update(len(chunk))
