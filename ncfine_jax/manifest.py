"""The manifest of a workdir: every file this project wrote in it, with size and checksum.

``<workdir>/manifest.json`` is what makes a folder a workdir of this project:

* ``--overwrite`` removes exactly the files it lists (and folders they leave empty), never
  a user's own file beside them, never anything outside the workdir, never through a
  symbolic link;
* a checkpoint or a saved output is used again only when its bytes still match the
  SHA-256 written with it (``verify``): damage is found wherever the bytes land;
* a folder without one is not a run (old workdirs are adopted with
  ``python -m ncfine_jax.adopt DIR``).

Recording is automatic while a command holds a workdir's lock (``workdir.lock``): every
atomic write of ``ncfine_jax.io`` under that folder is recorded once complete, and the
checkpointer records each checkpoint after it is committed. Files that grow by appending
(``log.jsonl``) are recorded by name, without a checksum. Nested locked folders (the points
of a grid, the runs of a paper plan) keep their own manifests: a file belongs to the
innermost one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from ncfine_jax import io
from ncfine_jax.errors import WorkdirError

MANIFEST_FILE = "manifest.json"
# ``verify``'s answer for a name the manifest does not list (never recorded as complete).
NOT_RECORDED = "not recorded as written completely"
FORMAT = "ncfine_jax workdir manifest"
VERSION = 1

# Workdirs whose writes this process records, each as (absolute path as spelled, with its
# links resolved): a file is matched by either, so a folder of the workdir that is a link
# to another disk (``workdir.LINKABLE_DIRS``) is recorded as the workdir's.
_ROOTS: list[tuple[Path, Path]] = []


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked_name(name: object) -> str | None:
    """``name`` when it is a relative path inside the workdir (no '..', not absolute)."""
    if not isinstance(name, str) or not name or "\\" in name:
        return None
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or any(p in ("..", ".", "") for p in parts):
        return None
    return name


def read(root: Path) -> dict[str, dict] | None:
    """``{relative path: {"size": bytes, "sha256": hex or None}}`` of ``root``'s manifest;
    None when it has none.

    Raises:
      WorkdirError: the manifest is unreadable or not of the expected shape (one line).
    """
    path = Path(root) / MANIFEST_FILE
    if not path.is_file() and not path.is_symlink():
        return None
    problem = None
    try:
        data = io.read_json(path)
    except (OSError, ValueError) as e:
        data, problem = None, " ".join(str(getattr(e, "strerror", None) or e).split())
    if problem is None:
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            problem = "not a manifest of this project"
        elif data.get("version") != VERSION:
            problem = f"version {data.get('version')!r}, this version reads {VERSION}"
        elif not isinstance(files, dict):
            problem = "'files' is not an object"
        else:
            for name, entry in files.items():
                if (_checked_name(name) is None or not isinstance(entry, dict)
                        or not isinstance(entry.get("size"), int)
                        or not isinstance(entry.get("sha256"), (str, type(None)))):
                    problem = f"bad entry {name!r}"
                    break
    if problem:
        raise WorkdirError(f"{path}: unreadable manifest ({problem}); nothing was changed; "
                           f"rebuild it with `python -m ncfine_jax.adopt {root}` "
                           "or pick another workdir")
    return dict(files)


def _write(root: Path, files: dict[str, dict]) -> None:
    io.atomic_write_json(root / MANIFEST_FILE, {
        "format": FORMAT, "version": VERSION, "files": dict(sorted(files.items()))})


def _owner(path: Path) -> tuple[Path, str] | None:
    """(innermost recorded root containing ``path``, its name relative to that root)."""
    try:
        spelled = Path(os.path.abspath(path))
        resolved = Path(os.path.realpath(path.parent)) / path.name
    except OSError:
        return None
    for full, index in ((spelled, 0), (resolved, 1)):
        for roots in sorted(_ROOTS, key=lambda r: len(r[index].parts), reverse=True):
            try:
                rel = full.relative_to(roots[index])
            except ValueError:
                continue
            # A manifest is never listed, in its own workdir or in an enclosing one.
            return (roots[1], rel.as_posix()) if rel.name != MANIFEST_FILE else None
    return None


def _entry(path: Path, checksum: bool) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256(path) if checksum else None}


def _update(root: Path, changes: dict[str, dict | None]) -> None:
    files = read(root) or {}
    for name, entry in changes.items():
        if entry is None:
            files.pop(name, None)
        else:
            files[name] = entry
    _write(root, files)


def _observe(path: Path, checksum: bool) -> None:
    """``io``'s write hook: record a completed write under a recorded root."""
    owner = _owner(Path(path))
    if owner is not None and Path(path).is_file():
        _update(owner[0], {owner[1]: _entry(Path(path), checksum)})


@contextlib.contextmanager
def recording(root: Path, create: bool = False) -> Iterator[None]:
    """Record every write of this process under ``root`` into its manifest for the block.

    With ``create`` (an empty folder being claimed) an empty manifest is written first: a
    command killed before its first write is recorded leaves a folder that is still this
    project's run, not a stranger's folder to refuse.
    """
    resolved = (Path(os.path.abspath(root)), Path(os.path.realpath(root)))
    if create and not (Path(root) / MANIFEST_FILE).exists():
        _write(Path(root), {})
    _ROOTS.append(resolved)
    if len(_ROOTS) == 1:
        io.WRITE_OBSERVERS.append(_observe)
    try:
        yield
    finally:
        _ROOTS.remove(resolved)
        if not _ROOTS:
            io.WRITE_OBSERVERS.remove(_observe)


def record_tree(directory: Path) -> None:
    """Record every file under ``directory`` (a committed checkpoint), with checksums, and
    forget recorded files under its parent that no longer exist (checkpoints orbax
    deleted)."""
    directory = Path(directory)
    owner = _owner(directory)
    if owner is None:
        return
    root, name = owner
    changes: dict[str, dict | None] = {
        f"{name}/{p.relative_to(directory).as_posix()}": _entry(p, True)
        for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}
    _update(root, {**_missing(root, PurePosixPath(name).parent.as_posix()), **changes})


def _missing(root: Path, name: str) -> dict[str, None]:
    """Recorded files under ``name`` of ``root`` that no longer exist, as removals."""
    return {old: None for old in read(root) or {}
            if old.startswith(name + "/") and not (root / old).exists()}


def forget_missing(directory: Path) -> None:
    """Drop recorded files under ``directory`` that no longer exist (deleted checkpoints)."""
    owner = _owner(Path(directory))
    if owner is not None and (gone := _missing(*owner)):
        _update(owner[0], gone)


def verify(root: Path, name: str) -> str | None:
    """Why the file or folder ``name`` of ``root`` does not match what was written (one
    phrase), or None when it matches. Without a manifest at all (a workdir made through the
    Python API before manifests) nothing can be checked: None."""
    files = read(root)
    if files is None:
        return None
    prefix = name.rstrip("/") + "/"
    wanted = {n: e for n, e in files.items() if n == name or n.startswith(prefix)}
    if not wanted:
        return NOT_RECORDED
    for n, entry in sorted(wanted.items()):
        path = Path(root) / n
        if not path.is_file():
            return f"{n} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{n} has {path.stat().st_size} bytes, {entry['size']} were written"
        if entry["sha256"] is not None and sha256(path) != entry["sha256"]:
            return f"{n} does not match its checksum"
    return None


def _inside(root: Path, name: str, linked: frozenset[str] = frozenset()
            ) -> tuple[Path, bool] | None:
    """(path of ``name``, whether it is reached through a link) when it lies inside
    ``root`` without passing a symbolic link, or only through the top-level folder link
    of one of the names ``linked``; else None."""
    if _checked_name(name) is None:
        return None
    parts = PurePosixPath(name).parts
    path = root / name
    through_link = len(parts) > 1 and parts[0] in linked and (root / parts[0]).is_symlink()
    top = root / parts[0] if through_link else root
    real_top = os.path.realpath(top)
    if os.path.commonpath([real_top, os.path.realpath(path.parent)]) != real_top:
        return None
    probe = top
    for part in parts[1 if through_link else 0:-1]:
        probe = probe / part
        if probe.is_symlink():
            return None
    return path, through_link


def _is_as_written(path: Path, entry: dict) -> bool:
    """Whether ``path`` is a file with the size and checksum the manifest recorded."""
    try:
        return (path.is_file() and not path.is_symlink() and entry["sha256"] is not None
                and path.stat().st_size == entry["size"] and sha256(path) == entry["sha256"])
    except OSError:
        return False


def remove_recorded(root: Path, under: Iterable[str] | None = None,
                    keep_manifest: bool = True, linked: Iterable[str] = ()) -> None:
    """Delete the files ``root``'s manifest lists (only those under the top-level names
    ``under`` when given), then the folders they leave empty; a symbolic link is removed
    itself, never followed, except a top-level folder named in ``linked`` (a folder kept on
    another disk): through it only files whose bytes are still those recorded are removed,
    and the link stays. The manifest is rewritten without them; when it is left empty
    it stays (the folder is still this project's workdir) unless ``keep_manifest`` is
    False."""
    root = Path(root)
    files = read(root) or {}
    tops = None if under is None else set(under)
    removed = {}
    for name in sorted(files):
        if tops is not None and PurePosixPath(name).parts[0] not in tops:
            continue
        found = _inside(root, name, frozenset(linked))
        removed[name] = None
        if found is None:
            continue
        path, through_link = found
        if through_link and not _is_as_written(path, files[name]):
            continue  # not provably this project's file: left where it is, forgotten
        if path.is_symlink() or path.is_file():
            path.unlink()
        for parent in list(PurePosixPath(name).parents)[:-1]:
            folder = root / parent
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
    left = {n: e for n, e in files.items() if n not in removed}
    if left or keep_manifest:
        _write(root, left)
    elif (root / MANIFEST_FILE).exists():
        (root / MANIFEST_FILE).unlink()


def adopt(root: Path, names: Iterable[str], linked: Iterable[str] = ()) -> int:
    """Write a manifest listing every file under the top-level ``names`` of ``root`` (a
    workdir written before manifests existed): they are then this project's files, to
    resume, verify and overwrite. A top-level link is not followed unless it is one of
    ``linked`` (a folder kept on another disk). Returns the number of files recorded."""
    root = Path(root)
    try:
        files = read(root) or {}
    except WorkdirError:  # a damaged manifest is rebuilt from the files themselves
        files = {}
    for top in names:
        path = root / top
        if path.is_symlink() and not (top in linked and path.is_dir()):
            continue
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            found = []
        for p in found:
            files[p.relative_to(root).as_posix()] = _entry(p, True)
    _write(root, files)
    return len(files)
