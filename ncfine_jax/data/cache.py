"""Cache directory, decoded-array cache (.npy + manifest) and checked downloads.

Decoding CIFAR archives or 60,000 JPEGs takes seconds to tens of seconds, so the decoded
arrays are stored once under ``<cache>/decoded/<name>-<source id>-<fingerprint>/``: one
plain ``.npy`` file per array (``<array name>.npy``) plus ``manifest.json`` (format
version, checksum algorithm, and each array's dtype, shape and checksum). The fingerprint hashes the source's
resolved path, size and modification time (and, for directories, those of every file
read), so editing or replacing the source selects a new entry; the stale entry of the
same source (also one in the older single-``.npz`` layout) is removed when the new one is
written. Other ``.npz`` files in ``decoded/`` are never read.

Writing: the entry is built in a hidden temporary directory beside it and renamed into
place, so a reader never sees a partial entry. A cache that cannot be written (read-only
or full disk, no permission) only costs speed: a warning, and the decoded data is used.

Loading: each array is opened with ``np.load(path, mmap_mode="r")`` and its checksum is
recomputed over every byte (CRC-32 of each 8 MiB block, the blocks spread over a few
threads, then CRC-32 of the block CRCs). CRC-32 is the fastest checksum in the standard
library (faster than Adler-32, SHA-256 or BLAKE2b on this data) and catches accidental
damage: overwritten bytes, truncation, a torn write. It is no defence against someone who
can write to the cache on purpose. A missing, unreadable or mismatching manifest or
array gives one warning naming the file and the problem; the entry is removed and rebuilt
from the source.

Loaded arrays stay memory-mapped and read-only (``writeable`` is False): no copy is made,
processes loading the same entry share the page cache, and an accidental in-place edit
raises instead of silently diverging from the cache. Freshly decoded arrays are marked
read-only as well, so both paths behave alike; use ``np.array(x)`` for a writable copy.
The project never rewrites an entry in place (replacing means rename), so a mapping stays
valid while the entry is replaced or removed; truncating a cache file by hand while a
process uses it can crash that process (SIGBUS).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import struct
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np

from ncfine_jax.errors import DataError
from ncfine_jax.io import atomic_path
from ncfine_jax.text import squashed

CACHE_ENV = "NCFINE_CACHE_DIR"
DATA_ENV = "NCFINE_DATA_DIR"
# Bump when the decoded layout changes: it is part of every fingerprint, so entries of an
# older layout are never looked up again (and are removed when their source is re-cached).
CACHE_FORMAT = 2
MANIFEST = "manifest.json"
CHECKSUM_ALGORITHM = "crc32-blocks-8MiB"
_BLOCK_BYTES = 8 << 20
_PARALLEL_MIN_BYTES = 32 << 20  # smaller entries are checked in the calling thread
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_]+")
_LEFTOVER_AGE_S = 3600.0  # hidden temp/aside folders older than this belong to dead writers


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: argument, else $NCFINE_CACHE_DIR, else ~/.cache/ncfine_jax."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ncfine_jax"


def file_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 hex of (resolved path, size, mtime_ns) of each path, in the given order."""
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"\0{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "dataset"


def cache_file(cache: Path, name: str, source: str | os.PathLike, fingerprint: str) -> Path:
    """Path of the decoded-array cache entry (a directory) for ``source`` with ``fingerprint``."""
    source_id = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
    return cache / "decoded" / f"{_slug(name)}-{source_id}-{fingerprint[:16]}"


# --------------------------------------------------------------------------- checksums


def _byte_view(a: np.ndarray) -> memoryview:
    """The data bytes of a C-contiguous array (any shape, 0-d included), without a copy."""
    return memoryview(a.reshape(-1).view(np.uint8))


def array_checksums(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Checksum (8 hex digits) of each C-contiguous array's data bytes.

    CRC-32 of each 8 MiB block, then CRC-32 of the little-endian block CRCs; ``zlib.crc32``
    releases the GIL, so large inputs are spread over up to 4 threads.
    """
    views = {k: _byte_view(a) for k, a in arrays.items()}
    tasks = [(k, start) for k, v in views.items() for start in range(0, v.nbytes, _BLOCK_BYTES)]

    def crc(task):
        k, start = task
        return zlib.crc32(views[k][start:start + _BLOCK_BYTES])

    total = sum(v.nbytes for v in views.values())
    workers = min(4, os.cpu_count() or 1, len(tasks))
    if workers > 1 and total >= _PARALLEL_MIN_BYTES:
        with ThreadPoolExecutor(workers) as pool:
            crcs = list(pool.map(crc, tasks))
    else:
        crcs = [crc(t) for t in tasks]
    blocks: dict[str, list[int]] = {k: [] for k in views}
    for (k, _), c in zip(tasks, crcs):
        blocks[k].append(c)
    return {k: f"{zlib.crc32(struct.pack(f'<{len(b)}I', *b)):08x}" for k, b in blocks.items()}


# --------------------------------------------------------------------------- reading


class _Damaged(Exception):
    """A cache entry that must be rebuilt; the message names the file and the problem."""


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """Verified, read-only memory-mapped arrays of the entry at ``path``, or None.

    None when there is no entry, or when it is damaged: then one warning names the file
    and the problem, the entry is removed, and the caller rebuilds it from the source.
    """
    if not os.path.lexists(path):
        return None
    try:
        return _read_entry(path)
    except _Damaged as e:
        warnings.warn(f"cache entry {e}; rebuilding it from the source", stacklevel=2)
        _remove(path)
        return None


def _read_entry(path: Path) -> dict[str, np.ndarray]:
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise _Damaged(f"{manifest_path}: missing manifest") from None
    except (OSError, ValueError) as e:  # ValueError: JSON and UTF-8 decoding errors
        raise _Damaged(f"{manifest_path}: unreadable manifest ({squashed(e)})") from None
    specs = _check_manifest(manifest, manifest_path)
    arrays = {}
    for name, (dtype, shape) in specs.items():
        file = path / f"{name}.npy"
        try:
            a = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise _Damaged(f"{file}: missing array file") from None
        except (OSError, ValueError, EOFError) as e:  # truncated, bad header, object dtype
            raise _Damaged(f"{file}: unreadable array ({squashed(e)})") from None
        if a.dtype.str != dtype or a.shape != shape or not a.flags.c_contiguous:
            raise _Damaged(f"{file}: holds {a.dtype.str} {list(a.shape)}, the manifest says "
                           f"{dtype} {list(shape)}")
        arrays[name] = np.asarray(a)  # a plain read-only ndarray view of the mapping
    for name, got in array_checksums(arrays).items():
        want = manifest["arrays"][name]["checksum"]
        if got != want:
            raise _Damaged(f"{path / f'{name}.npy'}: checksum mismatch "
                           f"(manifest {want}, data {got})")
    return arrays


def _check_manifest(manifest, manifest_path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{array name: (dtype str, shape)} of a well-formed manifest, else _Damaged."""
    def bad(problem):
        return _Damaged(f"{manifest_path}: {problem}")

    if not isinstance(manifest, dict):
        raise bad("manifest is not a JSON object")
    if manifest.get("format") != CACHE_FORMAT:
        raise bad(f"format {manifest.get('format')!r}, expected {CACHE_FORMAT}")
    if manifest.get("checksum") != CHECKSUM_ALGORITHM:
        raise bad(f"checksum {manifest.get('checksum')!r}, expected {CHECKSUM_ALGORITHM!r}")
    entries = manifest.get("arrays")
    if not isinstance(entries, dict) or not entries:
        raise bad("manifest lists no arrays")
    specs = {}
    for name, spec in entries.items():
        ok = (
            _ARRAY_NAME.fullmatch(name)
            and isinstance(spec, dict)
            and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("shape"), list)
            and all(isinstance(n, int) and n >= 0 for n in spec["shape"])
            and isinstance(spec.get("checksum"), str)
        )
        if not ok:
            raise bad(f"malformed entry for array {name!r}")
        specs[name] = (spec["dtype"], tuple(spec["shape"]))
    return specs


# --------------------------------------------------------------------------- writing


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` as the entry ``path``; drop stale entries of the same source.

    The entry is written into a hidden temporary directory and renamed into place, so it
    is either complete or absent. A cache that cannot be written (read-only disk, full
    disk) only costs speed: it warns and continues.

    Args:
      path: the entry, as returned by ``cache_file``.
      arrays: name (letters, digits, underscores) -> array without Python objects.
    """
    for name, a in arrays.items():
        if not _ARRAY_NAME.fullmatch(name) or np.asarray(a).dtype.hasobject:
            raise ValueError(f"cannot cache array {name!r} (name or dtype not supported)")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        contiguous = {k: np.require(a, requirements="C") for k, a in arrays.items()}
        sums = array_checksums(contiguous)
        manifest = {"format": CACHE_FORMAT, "checksum": CHECKSUM_ALGORITHM, "arrays": {}}
        for name, a in contiguous.items():
            _write_synced(tmp / f"{name}.npy",
                          lambda f, a=a: np.lib.format.write_array(f, a, allow_pickle=False))
            manifest["arrays"][name] = {
                "dtype": a.dtype.str, "shape": list(a.shape), "checksum": sums[name],
            }
        text = json.dumps(manifest, indent=1) + "\n"
        _write_synced(tmp / MANIFEST, lambda f: f.write(text.encode()))
        _install(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write cache entry {path}: {squashed(e)}", stacklevel=2)
        return
    finally:
        if tmp is not None:  # gone once installed; left when a concurrent writer won
            shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(path)


def _write_synced(file: Path, write) -> None:
    with open(file, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _install(tmp: Path, path: Path) -> None:
    """Rename the finished directory ``tmp`` to ``path``, replacing what is there."""
    try:
        os.rename(tmp, path)
        return
    except OSError:
        if not os.path.lexists(path):
            raise
    # An entry is already there (a damaged one, or a concurrent writer's): move it aside
    # first, since a directory cannot be renamed over a non-empty one.
    _remove(path)
    try:
        os.rename(tmp, path)
    except OSError:
        if not os.path.lexists(path):  # else a concurrent writer installed the same entry
            raise


def _remove(path: Path) -> None:
    """Remove an entry (directory or file) without ever exposing a half-deleted one."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".del",
                                          dir=path.parent))
            os.rename(path, aside / path.name)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            path.unlink()


def _remove_stale(path: Path) -> None:
    """Remove other entries of the same source (any layout) and dead writers' leftovers."""
    prefix = path.name.rsplit("-", 1)[0] + "-"
    stale = re.compile(re.escape(prefix) + r"[0-9a-f]{16}(\.npz)?")
    leftover = re.compile(r"\." + re.escape(prefix) + r"[0-9a-f]{16}\..+\.(tmp|del)")
    now = time.time()
    with contextlib.suppress(OSError):
        for old in path.parent.iterdir():
            if old.name != path.name and stale.fullmatch(old.name):
                _remove(old)
            elif leftover.fullmatch(old.name):
                with contextlib.suppress(OSError):
                    if now - old.lstat().st_mtime > _LEFTOVER_AGE_S:
                        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- downloads


def download(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its md5 hex digest.

    The file appears at ``dest`` only when complete and verified; on any failure no file
    (partial or otherwise) is left there.

    Raises:
      DataError: network failure, HTTP error, or checksum mismatch.
    """
    from tqdm import tqdm

    digest = hashlib.md5()
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                          disable=None, leave=False) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            got = digest.hexdigest()
            if md5 is not None and got != md5.lower():
                raise DataError(
                    f"download {url}: md5 checksum mismatch (got {got}, expected {md5}); "
                    "file discarded"
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        reason = getattr(e, "reason", None) or e
        raise DataError(f"download {url} failed: {reason}") from None
    return dest
