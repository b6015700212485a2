"""orbax checkpoints of the ``TrainState``, indexed by completed epoch."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import flax
import jax
import orbax.checkpoint as ocp

from ncfine_jax import manifest
from ncfine_jax.errors import WorkdirError
from ncfine_jax.text import first_line
from ncfine_jax.train.state import TrainState


def _drop_empty(tree: Any) -> Any:
    """orbax stores no empty containers; drop them (``_fill_empty`` puts them back)."""
    if isinstance(tree, dict):
        out = {k: _drop_empty(v) for k, v in tree.items()}
        return {k: v for k, v in out.items() if not (isinstance(v, dict) and not v)}
    return tree


def _fill_empty(template: Any, restored: Any) -> Any:
    if isinstance(template, dict):
        restored = restored if isinstance(restored, dict) else {}
        return {k: _fill_empty(v, restored.get(k, {})) for k, v in template.items()}
    return restored


def io_cause(error: BaseException) -> str:
    """Why a save failed, in a few words: the OS error behind an orbax/tensorstore error
    when there is one (e.g. "No space left on device"), else its first line."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    code = re.search(r"os_error_code='?(\d+)", str(error))
    return os.strerror(int(code.group(1))) if code else first_line(error)


def why_unreadable(error: BaseException) -> str:
    """A failed restore in a few words (tensorstore's messages run over many lines)."""
    text = str(error)
    if isinstance(error, FileNotFoundError) or "NOT_FOUND" in text or "No such file" in text:
        return "files are missing"
    if "OUT_OF_RANGE" in text or "byte range" in text.lower():
        return "a file is truncated"
    if "DATA_LOSS" in text or "corrupt" in text.lower():
        return "a file is corrupt"
    return first_line(error, limit=150)


_late_reports_dropped = False


def _drop_late_failure_reports() -> None:
    """Install (once) filters for what orbax reports after a failed read or write.

    Its worker threads still call back into an asyncio loop it has already closed, and
    the failed tensorstore futures (and the orbax tasks awaiting them) are garbage-collected
    unread; Python would print each as a traceback, long after the failure became one
    error line. Only these two kinds of report are dropped; every other one is printed as
    usual.
    """
    global _late_reports_dropped
    if _late_reports_dropped:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and "Event loop is closed" in str(unraisable.exc_value)):
            previous(unraisable)

    def not_a_checkpoint_write(record: logging.LogRecord) -> bool:
        # The pending future is a tensorstore write, or the orbax task that awaited one.
        message = record.getMessage()
        return "tensorstore" not in message and "orbax" not in message

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(not_a_checkpoint_write)
    _late_reports_dropped = True


@contextlib.contextmanager
def _quiet_orbax_failures() -> Iterator[None]:
    """Keep a failed read or write to one line: orbax reports it from its own threads (absl
    ERROR records with tracebacks) before it raises, and the caller turns that exception
    into one ``WorkdirError`` line."""
    absl_logger = logging.getLogger("absl")

    def below_error(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    absl_logger.addFilter(below_error)
    try:
        yield
    finally:
        absl_logger.removeFilter(below_error)


# The suffix of the folder orbax writes a checkpoint into before renaming it.
_UNFINISHED = ".orbax-checkpoint-tmp"


class CheckpointUnreadable(WorkdirError):
    """A checkpoint exists but cannot be restored (truncated or missing files)."""


class Checkpointer:
    """Saves and restores ``TrainState`` under ``directory`` (orbax ``CheckpointManager``).

    Saves are asynchronous: ``save`` returns once the state is copied to host memory
    (the next epoch may then donate its buffers), and orbax writes the files in a
    background thread while training goes on. ``wait`` (called by ``save``, ``epochs``,
    ``latest_epoch`` and ``close``, and by the training loop before it logs the next
    epoch) blocks until that write is committed, then records its files and checksums in
    the workdir's manifest. orbax writes to a temporary directory and renames it, so a
    save interrupted by SIGKILL is ignored and the run resumes from the checkpoint
    before; one killed after the rename but before ``wait`` recorded it is restored if
    orbax can read it (and recorded then). In a multi-process run every process calls
    ``save``/``restore`` (orbax coordinates them and writes each array once).
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2, *,
                 asynchronous: bool = True):
        _drop_late_failure_reports()
        self.directory = Path(directory).absolute()
        self._pending: int | None = None  # epoch whose save is being written
        self._quiet: contextlib.ExitStack | None = None
        if self.directory.exists() and not self.directory.is_dir():
            raise WorkdirError(f"checkpoints {self.directory}: is a file, not a folder; move "
                               "it away and rerun; last good checkpoint: none")
        # Folders are created before ``save`` returns: orbax's asynchronous creation runs
        # in a thread, and when it fails the threads writing the arrays wait for its
        # signal until a 300 s timeout (non-daemon threads: the process cannot exit).
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=asynchronous,
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise WorkdirError(f"checkpoints {self.directory}: cannot be created "
                               f"({e.strerror or first_line(e)}); last good checkpoint: "
                               "none") from None

    def latest_epoch(self) -> int | None:
        """Latest epoch with a committed checkpoint, or None."""
        self.wait()
        return self.manager.latest_step()

    def epochs(self) -> list[int]:
        """Epochs with a committed checkpoint, ascending."""
        self.wait()
        return sorted(self.manager.all_steps())

    def delete_after(self, epoch: int) -> None:
        """Delete the checkpoints of epochs later than ``epoch``."""
        for step in self.epochs():
            if step > epoch:
                self.manager.delete(step)
        manifest.forget_missing(self.directory)

    def discard_unfinished(self) -> list[Path]:
        """Remove what a save stopped mid-write left (orbax's ``<epoch>.orbax-checkpoint-tmp``
        folders, never renamed to a checkpoint); returns them. Silent, as the log records
        after the last checkpoint are cut: training resumes before them and writes them
        again (orbax would otherwise log a warning of its own when it saves that epoch)."""
        left = self._unfinished()
        for path in left:  # where it cannot be removed, the save of that epoch says why
            shutil.rmtree(path, ignore_errors=True)
        return left

    def _unfinished(self, epoch: int | None = None) -> list[Path]:
        """orbax's temporary folders of unfinished saves (of ``epoch`` only, when given)."""
        prefix = "*" if epoch is None else str(epoch)
        return sorted(p for p in self.directory.glob(f"{prefix}{_UNFINISHED}*")
                      if p.is_dir() and p.name.split(".", 1)[0].isdigit())

    def step_name(self, epoch: int) -> str:
        """The checkpoint folder of ``epoch`` relative to the workdir (its manifest names)."""
        return f"{self.directory.name}/{epoch}"

    def _failed(self, epoch: int, error: BaseException) -> WorkdirError:
        for path in self._unfinished(epoch):  # what was written of it (a full disk: room)
            shutil.rmtree(path, ignore_errors=True)
        good = [s for s in self.manager.all_steps() if s < epoch]
        return WorkdirError(
            f"checkpoint of epoch {epoch} in {self.directory} could not be written "
            f"({io_cause(error)}); last good checkpoint: "
            f"{f'epoch {max(good)}' if good else 'none'}")

    def save(self, epoch: int, state: TrainState) -> None:
        """Start writing the checkpoint of ``epoch`` (after the previous one committed).
        An I/O failure (disk full, read-only, ...) is one ``WorkdirError`` line, raised
        here or by the next ``wait``; the checkpoints already there stay usable."""
        self.wait()
        tree = _drop_empty(flax.serialization.to_state_dict(state))
        self._quiet = contextlib.ExitStack()
        # orbax's threads report a failed write before ``wait`` raises it as one line.
        self._quiet.enter_context(_quiet_orbax_failures())
        self._pending = epoch
        try:
            self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for I/O
            self._end_pending()
            raise self._failed(epoch, e) from None

    def _end_pending(self) -> None:
        self._pending = None
        if self._quiet is not None:
            self._quiet.close()
            self._quiet = None

    def wait(self) -> None:
        """Block until the checkpoint being written is committed and recorded."""
        if self._pending is None:
            return
        epoch = self._pending
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for I/O
            self._end_pending()
            raise self._failed(epoch, e) from None
        self._end_pending()
        # Committed: its files and checksums go into the workdir's manifest (checked on
        # restore); checkpoints orbax removed (max_to_keep) leave it.
        manifest.record_tree(self.directory / str(epoch))

    def restore(self, epoch: int, template: TrainState) -> TrainState:
        """Restore into the structure, dtypes and shardings of ``template``.

        Raises:
          CheckpointUnreadable: the checkpoint's files are truncated, missing or corrupt,
            or differ from the checksums the workdir's manifest recorded when it was saved.
        """
        damage = manifest.verify(self.directory.parent, self.step_name(epoch))
        # Committed (orbax renamed it) but killed before it was recorded: nothing to
        # check it against; it is used when orbax reads it whole, and recorded then.
        unrecorded = damage == manifest.NOT_RECORDED
        if damage is not None and not unrecorded:
            raise CheckpointUnreadable(f"checkpoint of epoch {epoch} in {self.directory} is "
                                       f"damaged ({damage})")
        target = _drop_empty(flax.serialization.to_state_dict(template))
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target)
        try:
            with _quiet_orbax_failures():
                restored = self.manager.restore(epoch, args=ocp.args.StandardRestore(target))
        except Exception as e:  # noqa: BLE001 - any failure means: not intact
            raise CheckpointUnreadable(f"checkpoint of epoch {epoch} in {self.directory} is "
                                       f"unreadable ({why_unreadable(e)})") from None
        if unrecorded:
            manifest.record_tree(self.directory / str(epoch))
        full = _fill_empty(flax.serialization.to_state_dict(template), restored)
        return flax.serialization.from_state_dict(template, full)

    def close(self) -> None:
        """Wait for the pending save, then release orbax's resources."""
        try:
            self.wait()
        finally:
            self.manager.close()
