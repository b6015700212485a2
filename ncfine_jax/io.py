"""Atomic file output: write to a temp file in the same directory, then rename.

A crash mid-write never leaves a partial file at the destination, and an existing
file is only replaced once the new content is complete. A write that fails for a reason
of storage (read-only, full, a file in the way) raises ``WriteFailed`` naming the
destination, never the temp file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ncfine_jax.errors import NcfineError
from ncfine_jax.text import squashed

# Called as ``observer(path, checksum)`` after each completed write: the workdir manifest
# (``ncfine_jax.manifest``) records what the project writes while it holds a workdir.
# ``checksum`` is False for files that grow by appending.
WRITE_OBSERVERS: list = []


# Causes of a failed write that lie with the storage, whatever the code writing was doing.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES,
                   errno.EPERM, errno.EFBIG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                   errno.EBUSY, errno.EXDEV}


class WriteFailed(OSError):
    """A file could not be written: ``filename`` is the file meant (not its temp file),
    ``strerror`` the cause ("Read-only file system"). The workdir's lock turns it into one
    error line naming the file, the cause and the run's last good checkpoint."""


def _failed(error: OSError, path: Path) -> WriteFailed:
    cause = error.strerror or squashed(error)
    if isinstance(error, (FileExistsError, NotADirectoryError)):  # a file where a folder goes
        blocking = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            cause = f"{blocking} is a file, not a folder"
    return WriteFailed(error.errno, cause, str(path))


def _written(path: Path, checksum: bool = True) -> None:
    for observer in list(WRITE_OBSERVERS):
        observer(path, checksum)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` on success.

    On any exception the temp file is removed and ``path`` is left untouched; an
    ``OSError`` of the storage (or one naming the temp file) is raised as ``WriteFailed``
    naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _failed(e, path) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError) and not isinstance(e, WriteFailed) and (
                e.errno in _STORAGE_ERRNOS or e.filename in (str(tmp_path), str(path))):
            raise _failed(e, path) from None
        raise
    _written(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__") and hasattr(obj, "shape"):
        return _to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None  # strict JSON has no NaN/inf
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically (numpy/jax arrays and scalars converted; NaN/inf -> null)."""
    text = json.dumps(_to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_save_npz(path: str | os.PathLike, compress: bool = False, **arrays: Any) -> Path:
    """Save arrays into ``path`` (.npz) atomically."""
    buf = io.BytesIO()
    save = np.savez_compressed if compress else np.savez
    save(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line (flushed and fsynced)."""
    path = Path(path)
    line = json.dumps(_to_jsonable(record), allow_nan=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _failed(e, path) from None
    _written(path, checksum=False)


def record_appended(path: str | os.PathLike) -> None:
    """Report a file that grows by appending and that another library writes (TensorBoard
    event files) to the write observers, like ``append_jsonl`` does for its own."""
    _written(Path(path), checksum=False)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def load_json(path: str | os.PathLike, what: str, error: type[NcfineError] = NcfineError,
              lines: bool = False) -> Any:
    """``read_json`` (or ``read_jsonl`` with ``lines``) where a missing, unreadable or
    corrupt file is one ``error`` line naming ``what`` and the file, e.g.
    ``results runs/a/results.json: unreadable (Expecting value: line 1 column 1)``."""
    try:
        return read_jsonl(path) if lines else read_json(path)
    except FileNotFoundError:
        raise error(f"{what} {path}: not found") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = e.strerror if isinstance(e, OSError) and e.strerror else squashed(e)
        raise error(f"{what} {path}: unreadable ({reason})") from None
