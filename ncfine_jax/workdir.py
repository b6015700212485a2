"""Workdirs of single runs and grids: what they hold, who owns them, how they are checked.

One module for every command that writes a workdir (the training engine, the experiment
scripts, the grid, the paper runner):

* **Names.** Every file this project writes in a workdir is named here, and every file
  it wrote is listed in the workdir's ``manifest.json`` (``ncfine_jax.manifest``);
  ``reset`` (``--overwrite``) removes exactly the listed files and nothing else, so a
  user's own files in a workdir survive, and a folder without a manifest holds no run of
  this project and is never emptied.
* **Checks before writing.** ``inspect`` reads a workdir and says "fresh", "resume" or
  "replace" (``--overwrite``: start afresh), or raises one ``WorkdirError`` line. It
  never writes: callers validate everything first, then change the disk.
* **One owner.** ``lock`` holds an advisory ``fcntl.flock`` on ``<workdir>/.lock`` for a
  whole command (training and analysis) and records what the command writes in the
  manifest; a second command gets one line naming the holder's PID. The kernel drops the
  lock when its process dies, so a lock left by a killed command never blocks a rerun.
* **Damage.** ``read_json_file`` and ``read_log`` (``ncfine_jax.runlog``) turn unreadable
  files into one line naming the file; a log whose last line was cut off mid-write is
  repaired (the line is dropped: the epochs after the last checkpoint are trained again).
* **Links.** The workdir, and its folders ``LINKABLE_DIRS``, may be symbolic links to
  another disk: writes through them are recorded, ``--overwrite`` removes through them
  only files still as written, and a folder holding only links to empty folders is a
  fresh workdir.
* **Failed writes.** A run file that cannot be written ends the command in ``lock`` with
  one line naming the file, the cause and the last good checkpoint (``write_failure``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ncfine_jax import manifest
from ncfine_jax.errors import NcfineError, WorkdirError
from ncfine_jax.io import WriteFailed, load_json, read_json
from ncfine_jax.runlog import read_log
from ncfine_jax.text import squashed

EXPERIMENT_FILE = "experiment.json"
MAPPING_FILE = "label_mapping.json"
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
CHECKPOINT_DIR = "checkpoints"
FEATURES_DIR = "features"
DIVERGED_FILE = "diverged.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
TENSORBOARD_DIR = "tensorboard"
DISTANCES_FILE = "distance_matrices.npz"
GRID_FILE = "grid.json"
SUMMARY_FILE = "summary.json"
# The whole paper's folder (``experiments/paper.py``): its header, item states, report and
# CPU-time calibration, beside one run, grid or sweep folder per plan item.
PAPER_FILE = "paper.json"
PAPER_STATUS_FILE = "paper_status.json"
PAPER_REPORT_MD = "paper_report.md"
PAPER_REPORT_JSON = "paper_report.json"
CALIBRATION_FILE = "calibration.json"
LOCK_FILE = ".lock"
MANIFEST_FILE = manifest.MANIFEST_FILE
ADOPT_COMMAND = "python -m ncfine_jax.adopt"

# The figures of a run's analysis (in FIGURES_DIR) and of a grid's (in its FIGURES_DIR).
NC_CURVES_FIGURE = "nc_curves.png"
HEATMAPS_FIGURE = "distance_heatmaps.png"
TSNE_FIGURE = "tsne_superclasses.png"
PCA_FIGURE = "pca.png"
ACCURACY_FIGURE = "accuracy_bars.png"
TRAINING_FIGURE = "training_curves.png"  # a trained run's only (drawn from log.jsonl)
RUN_FIGURES = (NC_CURVES_FIGURE, HEATMAPS_FIGURE, TSNE_FIGURE, PCA_FIGURE, ACCURACY_FIGURE,
               TRAINING_FIGURE)
GRID_HEATMAPS_FIGURE = "grid_distance_heatmaps.png"
GRID_BARS_FIGURE = "grid_clp_lpo.png"

# What the training engine writes (``train(..., overwrite=True)``, ``--overwrite``, removes these).
ENGINE_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_DIR, FEATURES_DIR, DIVERGED_FILE,
                TENSORBOARD_DIR)
# What a single experiment run writes: its header, the engine's files, the analysis.
RUN_FILES = (EXPERIMENT_FILE, MAPPING_FILE) + ENGINE_FILES + (
    RESULTS_FILE, REPORT_FILE, FIGURES_DIR, DISTANCES_FILE)
# What a grid writes beside its point sub-workdirs.
GRID_FILES = (GRID_FILE, SUMMARY_FILE, FIGURES_DIR)
# What an analysis writes (a run's, or ``python -m ncfine_jax.analyze --out DIR``).
ANALYSIS_FILES = (RESULTS_FILE, REPORT_FILE, DISTANCES_FILE) + tuple(
    f"{FIGURES_DIR}/{name}" for name in RUN_FIGURES)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The workdir of one run (a single run, or one point of a grid): where each of its
    files is, and their typed readers. Nothing outside this module spells those names."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    experiment = property(lambda self: self.path / EXPERIMENT_FILE,
                          doc="the experiment record (flags, versioned)")
    mapping = property(lambda self: self.path / MAPPING_FILE, doc="the label mapping")
    config = property(lambda self: self.path / CONFIG_FILE, doc="the engine's config")
    log = property(lambda self: self.path / LOG_FILE, doc="one JSON line per epoch")
    checkpoints = property(lambda self: self.path / CHECKPOINT_DIR)
    features = property(lambda self: self.path / FEATURES_DIR)
    diverged = property(lambda self: self.path / DIVERGED_FILE, doc="present: it diverged")
    results = property(lambda self: self.path / RESULTS_FILE)
    report = property(lambda self: self.path / REPORT_FILE)
    figures = property(lambda self: self.path / FIGURES_DIR)
    distances = property(lambda self: self.path / DISTANCES_FILE, doc="D per saved epoch")
    tensorboard = property(lambda self: self.path / TENSORBOARD_DIR,
                           doc="TensorBoard event files (the analysis' in its analysis/)")

    def feature_file(self, epoch: int) -> Path:
        """``features/epoch_XXXX.npz`` (epoch 1-based; 0 = before training)."""
        return self.features / f"epoch_{epoch:04d}.npz"

    def feature_files(self) -> list[Path]:
        """The saved feature files, in epoch order."""
        return sorted(self.features.glob("epoch_*.npz"))

    def read_results(self, shape: dict[str, type | tuple] | None = None) -> dict | None:
        """results.json (None: absent); unreadable or damaged is one WorkdirError line."""
        return read_json_file(self.results, "results", shape) if self.results.is_file() else None

    def read_config(self) -> dict | None:
        """config.json (None: absent); unreadable is one WorkdirError line."""
        return read_json_file(self.config, "run config") if self.config.is_file() else None

    def read_log(self, writer: bool = True) -> list[dict]:
        """log.jsonl's records (``read_log``)."""
        return read_log(self.log, writer)


@dataclasses.dataclass(frozen=True)
class GridDir:
    """The workdir of an lr x wd grid: its record, summary, figures and point workdirs."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    record = property(lambda self: self.path / GRID_FILE, doc="the grid's points and flags")
    summary = property(lambda self: self.path / SUMMARY_FILE, doc="one entry per point")
    figures = property(lambda self: self.path / FIGURES_DIR)

    def point(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    def epoch_heatmaps_figure(self, epoch: int) -> Path:
        return self.figures / f"grid_heatmaps_epoch_{epoch:04d}.png"


# Folders of a run that may be symbolic links to another disk (a scratch file system).
LINKABLE_DIRS = (CHECKPOINT_DIR, FEATURES_DIR, FIGURES_DIR)


def is_prepared_link(path: Path) -> bool:
    """Whether ``path`` is a link a user made before the first run, to keep one of the
    run's folders on another disk: named as one of ``LINKABLE_DIRS``, to an empty folder
    (nothing there that a run could overwrite or take for one of its checkpoints)."""
    try:
        return is_linked_dir(path) and not any(path.iterdir())
    except OSError:
        return False


def is_linked_dir(path: Path) -> bool:
    """Whether ``path`` is one of ``LINKABLE_DIRS`` as a link to a folder elsewhere."""
    return path.name in LINKABLE_DIRS and path.is_symlink() and path.is_dir()


def check_links(workdir: Path, flag: str = "--workdir") -> None:
    """WorkdirError when ``workdir`` or one of its ``LINKABLE_DIRS`` is a link to nothing
    (a scratch disk not mounted, a folder not made yet): a run would fail after training."""
    for path in (workdir, *(workdir / n for n in LINKABLE_DIRS)):
        if path.is_symlink() and not path.exists():
            raise WorkdirError(f"{flag} {workdir}: {path} links to {os.path.realpath(path)}, "
                               "which does not exist; nothing was changed; create that "
                               "folder (or mount its disk) and rerun")


def _entries(workdir: Path) -> list[str]:
    """Names in ``workdir`` other than the lock file and prepared links (``is_prepared_link``):
    a folder holding only those is an empty workdir."""
    try:
        return sorted(p.name for p in workdir.iterdir()
                      if p.name != LOCK_FILE and not is_prepared_link(p))
    except OSError as e:
        raise WorkdirError(f"{workdir}: cannot be read ({e.strerror})") from None


def read_json_file(path: Path, what: str, shape: dict[str, type | tuple] | None = None,
                   remedy: str = "") -> Any:
    """JSON content of ``path``; a missing, unreadable or corrupt file is one WorkdirError
    line (``io.load_json``).

    Args:
      shape: when given, the content must be a JSON object whose listed keys, where
        present, have these types (``{"config": dict}``); anything else is damage.
      remedy: appended to the error line (``"; rerun with --overwrite"``).
    """
    try:
        data = load_json(path, what, WorkdirError)
    except WorkdirError as e:
        raise WorkdirError(f"{e}{remedy}") from None
    if shape is not None:
        problem = shape_problem(data, shape)
        if problem:
            raise WorkdirError(f"{what} {path}: damaged ({problem}){remedy}")
    return data


def shape_problem(data: Any, shape: dict[str, type | tuple]) -> str | None:
    """Why ``data`` is not a JSON object with keys of the types in ``shape`` (None: it is)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__.replace('NoneType', 'null')}, not an object"
    for key, kind in shape.items():
        if key in data and not isinstance(data[key], kind):
            return f"{key!r} is {type(data[key]).__name__.replace('NoneType', 'null')}"
    return None


def differences(old: dict, new: dict) -> list[str]:
    """Sorted keys whose values differ between two flat dicts."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def inspect(workdir: Path, header_file: str, identity: dict,
            identity_of: Callable[[dict], dict], overwrite: bool,
            flag: str = "--workdir", holds: str = "a run with a different config") -> str:
    """Read-only: may ``workdir`` take the run whose header identity is ``identity``?

    Args:
      workdir: the directory.
      header_file: the file naming what a workdir holds (experiment.json, grid.json).
      identity: the identifying part of the new header.
      identity_of: maps a header read from disk to its identifying part.
      overwrite: whether a different run may be replaced.
      flag: how the workdir is named in messages.
      holds: what a different header is called in messages.

    Returns:
      "fresh" (absent or empty), "resume" (holds this run) or "replace" (holds a run of
      this project, any run in any state, and ``overwrite`` is set: start afresh).

    Raises:
      WorkdirError: a regular file is in the way, the folder holds files but no manifest
        (not a run of this project, or one written before manifests: even with
        ``overwrite`` it is never emptied), its manifest is damaged, or (without
        ``overwrite``) its header is missing, damaged or names a different run.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"{flag} {workdir}: exists and is not a directory")
    if not workdir.exists():
        check_links(workdir, flag)
        parent = next((p for p in workdir.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise WorkdirError(f"{flag} {workdir}: {parent} is a file, not a directory")
        return "fresh"
    check_links(workdir, flag)
    entries = _entries(workdir)
    if not entries:
        return "fresh"
    header = workdir / header_file
    recorded = manifest.read(workdir)  # a damaged manifest: one line, even with --overwrite
    if recorded is None:
        busy = [workdir / n for n in entries if is_linked_dir(workdir / n)]
        if len(busy) == len(entries):  # folders linked to another disk, not empty there
            raise WorkdirError(
                f"{flag} {workdir}: {busy[0].name} links to {os.path.realpath(busy[0])}, "
                "which is not empty (a run could overwrite the files there); nothing was "
                "changed; link it to an empty folder")
        if header.is_file():
            raise WorkdirError(
                f"{flag} {workdir}: holds {header_file} but no {MANIFEST_FILE} (written by an "
                "older version of ncfine_jax, or not by it); nothing was changed; adopt it "
                f"with `{ADOPT_COMMAND} {workdir}` or pick another workdir")
        raise WorkdirError(
            f"{flag} {workdir}: not empty and holds no {MANIFEST_FILE}, so it is not a workdir "
            f"of this project ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}"
            "); nothing was changed; pick another workdir")
    if not recorded and not header.is_file():
        return "fresh"  # claimed (an empty manifest), then stopped before its first write
    if overwrite:  # a run of this project, whatever state its files are in: start afresh
        return "replace"
    try:
        if not header.is_file():
            raise WorkdirError(f"workdir header {header}: missing")
        data = read_json_file(header, "workdir header")
        problem = shape_problem(data, {})
        if problem:
            raise WorkdirError(f"workdir header {header}: damaged ({problem})")
        try:
            old = identity_of(data)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise WorkdirError(f"workdir header {header}: damaged ({type(e).__name__}: "
                               f"{squashed(e)})") from None
    except WorkdirError as e:
        raise WorkdirError(f"{e}; use --overwrite to start afresh") from None
    if old == identity:
        return "resume"
    diff = differences(old, identity)
    raise WorkdirError(f"{flag} {workdir}: holds {holds} ({header_file} differs in "
                       f"{', '.join(diff)}); use --overwrite to replace it or pick another "
                       "workdir")


def reset(workdir: Path, names: Iterable[str] | None = None, keep_manifest: bool = True
          ) -> None:
    """Remove the files this project wrote in ``workdir`` (those its manifest lists; only
    those under the top-level ``names`` when given); anything else in it stays, and so
    does the (emptied) manifest unless ``keep_manifest`` is False. Through a folder that is
    a link to another disk (``LINKABLE_DIRS``) only files still as written are removed."""
    manifest.remove_recorded(workdir, names, keep_manifest, linked=LINKABLE_DIRS)


def point_folder(workdir: Path, name: object) -> Path | None:
    """``workdir/name`` when ``name`` (read from a grid.json) is one plain folder name
    inside ``workdir``; None for anything that would lead elsewhere ("..", "a/b", links)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        return None
    path = workdir / name
    return None if path.is_symlink() else path


def reset_grid(workdir: Path, point_names: Iterable[str]) -> None:
    """``reset`` of a grid: its own files and those of every point sub-workdir (listed in
    its old grid.json and in ``point_names``; a name leading outside the grid is ignored);
    a point folder left empty is removed."""
    keep = set(point_names)  # the new grid's point folders stay (locked by the caller)
    names = set(keep)
    with contextlib.suppress(WorkdirError, TypeError, KeyError, AttributeError):
        names |= {p["workdir"] for p in read_json_file(workdir / GRID_FILE, "grid")["points"]
                  if isinstance(p, dict) and isinstance(p.get("workdir"), str)}
    for name in sorted(names):
        sub = point_folder(workdir, name)
        if sub is None or not sub.is_dir():
            continue
        with lock(sub, flag="grid point"):
            with contextlib.suppress(WorkdirError):  # a damaged point manifest: left alone
                reset(sub, keep_manifest=name in keep)
        if name not in keep and not _entries(sub):
            with contextlib.suppress(FileNotFoundError):
                (sub / LOCK_FILE).unlink()
            with contextlib.suppress(OSError):
                sub.rmdir()
    reset(workdir)


_HELD: dict[str, int] = {}  # workdirs locked by this process -> nesting depth


@contextlib.contextmanager
def lock(workdir: Path, flag: str = "--workdir") -> Iterator[None]:
    """Hold ``workdir``'s lock (creating the folder) until the block ends, recording every
    file this process writes under it in its manifest. Reentrant within a process.

    Raises:
      WorkdirError: another process holds it (the message names its PID), or the folder
        cannot be created.
    """
    make_dirs(workdir, flag)
    key = os.path.realpath(workdir)
    if key in _HELD:  # already held by this process (a grid point trained by the engine)
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = workdir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise WorkdirError(f"{flag} {workdir}: cannot create {LOCK_FILE} ({e.strerror})") from None
    try:
        _take(fd, workdir, flag)
        with contextlib.suppress(OSError):  # the PID is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = 1
        try:
            with manifest.recording(workdir, create=not _entries(workdir)):
                yield
        except WriteFailed as e:
            if not _within(Path(e.filename), workdir):
                raise  # a file of an enclosing workdir: its lock says it
            raise WorkdirError(write_failure(workdir, e)) from None
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def make_dirs(path: Path, flag: str = "--workdir") -> None:
    """``mkdir -p`` with one WorkdirError line naming the path and the cause."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"{flag} {path}: cannot be created ({e.strerror})") from None


def _take(fd: int, workdir: Path, flag: str) -> None:
    """flock ``fd`` (the workdir's lock file), or one WorkdirError line naming the holder."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        other = "folder" if flag == "--out" else "workdir"
        raise WorkdirError(f"{flag} {workdir}: in use by another command (PID {holder}); "
                           f"wait for it to finish or pick another {other}") from None


def check_not_in_use(workdir: Path, flag: str = "--workdir") -> None:
    """Read-only ``lock`` check (nothing is created): WorkdirError naming the holder's PID
    when another command holds ``workdir``'s lock now."""
    if os.path.realpath(workdir) in _HELD:
        return
    try:
        fd = os.open(workdir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file (or none readable): ``lock`` says what is wrong, if anything
    try:
        _take(fd, workdir, flag)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def unrecorded(workdir: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` present in ``workdir`` that its manifest does not list (files a
    command of this project must not replace); a damaged manifest is one WorkdirError."""
    if not workdir.is_dir():
        return []
    files = manifest.read(workdir) or {}
    return [n for n in names if (workdir / n).exists() and n not in files]


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (as spelled, or once links are resolved)."""
    for resolve in (os.path.abspath, os.path.realpath):
        inside, top = resolve(path), resolve(folder)
        if os.path.commonpath([inside, top]) == top:
            return True
    return False


def write_failure(workdir: Path, error: OSError) -> str:
    """The one line of a run file that could not be written: the file, the cause and,
    in a training workdir, the checkpoint a rerun resumes from once the cause is gone."""
    line = f"{error.filename}: could not be written ({error.strerror})"
    run = RunDir(workdir)
    if run.config.is_file() or run.checkpoints.is_dir():
        good = last_good_checkpoint(workdir)
        line += f"; last good checkpoint: {'none' if good is None else f'epoch {good}'}"
    return line


def last_good_checkpoint(workdir: Path) -> int | None:
    """The newest epoch whose checkpoint in ``workdir`` is recorded in its manifest and
    matches it (``manifest.verify``), or None."""
    try:
        names = manifest.read(workdir) or {}
    except WorkdirError:
        return None
    epochs = {name.split("/")[1] for name in names if name.startswith(CHECKPOINT_DIR + "/")}
    for epoch in sorted((int(e) for e in epochs if e.isdigit()), reverse=True):
        if manifest.verify(workdir, f"{CHECKPOINT_DIR}/{epoch}") is None:
            return epoch
    return None


def results_are_current(workdir: Path, experiment: dict, analysis: dict,
                        migrate: Callable[[dict], dict] = lambda record: record,
                        keys: Iterable[str] = ()) -> bool:
    """Whether ``workdir/results.json`` is the analysis asked for (``why_analyse_again``
    finds no reason): the one re-analysis rule of single runs and grid points."""
    return why_analyse_again(workdir, experiment, analysis, migrate, keys) is None


def why_analyse_again(workdir: Path, experiment: dict, analysis: dict,
                      migrate: Callable[[dict], dict] = lambda record: record,
                      keys: Iterable[str] = (), names: dict[str, str] | None = None
                      ) -> str | None:
    """Why ``workdir/results.json`` is not the analysis asked for, in a few words (None: it
    is). It is when it holds the same experiment record (the one it holds read through
    ``migrate``, which brings an older record version to today's form), the same values
    of every key of ``analysis`` in its "analysis" block ("reduce" may also be null: no
    CLP for runs without a coarsening), and every one of ``keys`` (the per-epoch metrics
    registered now). A changed analysis setting reads ``NAME: OLD -> NEW``, NAME from
    ``names`` (e.g. its flag; else the key), the values shown when they are scalars."""
    path = workdir / RESULTS_FILE
    if not path.is_file():
        return f"no {RESULTS_FILE}"
    if any(manifest.verify(workdir, name) is not None for name in (RESULTS_FILE, FEATURES_DIR)):
        return f"{RESULTS_FILE} or the features changed since they were written"
    try:
        old = read_json(path)
    except (OSError, ValueError):
        return f"{RESULTS_FILE} unreadable"
    if shape_problem(old, {"analysis": dict, "experiment": dict}):
        return f"{RESULTS_FILE} unreadable"
    missing = [key for key in keys if key not in old]
    if missing:
        return f"{RESULTS_FILE} lacks {', '.join(missing)}, added since it was written"
    block = old.get("analysis") or {}
    for key, value in analysis.items():
        if block.get(key) != value and not (key == "reduce" and block.get(key) is None):
            name = (names or {}).get(key, key)
            if isinstance(value, dict) or isinstance(block.get(key), dict):
                return f"{name} changed"
            return f"{name}: {_shown(block.get(key))} -> {_shown(value)}"
    try:
        same = migrate(old["experiment"]) == experiment
    except NcfineError:  # a record this version cannot read: analysed again
        same = False
    return None if same else f"{RESULTS_FILE} is of another run config"


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)
