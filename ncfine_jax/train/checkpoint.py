"""orbax checkpoints of the ``TrainState``, indexed by completed epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp

from ncfine_jax.errors import WorkdirError
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


def one_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (orbax and tensorstore errors span many)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class CheckpointUnreadable(WorkdirError):
    """A checkpoint exists but cannot be restored (truncated or missing files)."""


class Checkpointer:
    """Saves and restores ``TrainState`` under ``directory`` (orbax ``CheckpointManager``).

    Saves are committed before ``save`` returns (the next epoch donates the state's
    buffers, and a SIGKILL right after ``save`` must leave a complete checkpoint); orbax
    writes to a temporary directory and renames it, so an interrupted save is ignored.
    In a multi-process run every process calls ``save``/``restore`` (orbax coordinates
    them and writes each array once).
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise WorkdirError(f"checkpoints {self.directory}: cannot be created "
                               f"({e.strerror or one_line(e)})") from None

    def latest_epoch(self) -> int | None:
        """Latest completed epoch with a checkpoint, or None."""
        return self.manager.latest_step()

    def epochs(self) -> list[int]:
        """Epochs with a checkpoint, ascending."""
        return sorted(self.manager.all_steps())

    def delete_after(self, epoch: int) -> None:
        """Delete the checkpoints of epochs later than ``epoch``."""
        for step in self.epochs():
            if step > epoch:
                self.manager.delete(step)

    def save(self, epoch: int, state: TrainState) -> None:
        """Write the checkpoint of ``epoch``; an I/O failure (disk full, read-only, ...)
        is one ``WorkdirError`` line, and the checkpoints already there stay usable."""
        tree = _drop_empty(flax.serialization.to_state_dict(state))
        try:
            self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for I/O
            good = [s for s in self.epochs() if s < epoch]
            raise WorkdirError(
                f"checkpoint of epoch {epoch} in {self.directory} could not be written "
                f"({one_line(e)}); last good checkpoint: epoch "
                f"{good[-1] if good else 'none'}") from None

    def restore(self, epoch: int, template: TrainState) -> TrainState:
        """Restore into the structure, dtypes and shardings of ``template``.

        Raises:
          CheckpointUnreadable: the checkpoint's files are truncated, missing or corrupt.
        """
        target = _drop_empty(flax.serialization.to_state_dict(template))
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target)
        try:
            restored = self.manager.restore(epoch, args=ocp.args.StandardRestore(target))
        except Exception as e:  # noqa: BLE001 - any failure means: not intact
            raise CheckpointUnreadable(f"checkpoint of epoch {epoch} in {self.directory} is "
                                       f"unreadable ({one_line(e)})") from None
        full = _fill_empty(flax.serialization.to_state_dict(template), restored)
        return flax.serialization.from_state_dict(template, full)

    def close(self) -> None:
        try:
            self.manager.wait_until_finished()
        finally:
            self.manager.close()
