"""Read the files a loader needs from a .tar(.gz) archive or a directory, in one pass.

Archives are read as a stream (``tarfile`` mode ``r|*``): nothing is extracted to disk and
the gzip stream is decompressed once, whatever the member order.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import zlib
from pathlib import Path
from typing import Callable

from ncfine_jax.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def is_image_name(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    # "._x.jpg" are macOS resource forks, not images.
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


@dataclasses.dataclass
class Contents:
    """Files kept from a source.

    Attributes:
      files: member path ("a/b/c.png", "/"-separated, relative) -> bytes.
      dirs: every directory path seen (relative, no trailing "/").
    """

    files: dict[str, bytes]
    dirs: set[str]


def read_tar(path: Path, keep: Callable[[str], bool], what: str) -> Contents:
    """Read the regular files of the archive at ``path`` for which ``keep(name)`` is true.

    Raises:
      DataError: the file is not a tar archive, or is truncated or corrupt.
    """
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = _clean(member.name)
                if not name:
                    continue
                if member.isdir():
                    dirs.add(name)
                    continue
                parent = name.rpartition("/")[0]
                while parent:  # archives made without directory entries
                    dirs.add(parent)
                    parent = parent.rpartition("/")[0]
                if member.isfile() and keep(name):
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    if len(data) != member.size:
                        raise EOFError(f"member {name} is cut short")
                    files[name] = data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{what}: {path} is truncated or corrupt ({_reason(e)})") from None
    return Contents(files, dirs)


def read_dir(root: Path, keep: Callable[[str], bool]) -> Contents:
    """Read the files under directory ``root`` for which ``keep(relative_name)`` is true."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for rel in list_dir(root, dirs):
        if keep(rel):
            files[rel] = (root / rel).read_bytes()
    return Contents(files, dirs)


def list_dir(root: Path, dirs: set[str] | None = None) -> list[str]:
    """Relative "/"-separated paths of all regular files under ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if dirs is not None:
            dirs.update(rel_dir + d for d in dirnames)
        out.extend(
            rel_dir + f for f in sorted(filenames) if os.path.isfile(os.path.join(dirpath, f))
        )
    return out


def _clean(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0]
