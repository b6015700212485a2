"""orbax checkpoints of the ``TrainState``, indexed by completed epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp

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


class Checkpointer:
    """Saves and restores ``TrainState`` under ``directory`` (orbax ``CheckpointManager``).

    Saves are committed before ``save`` returns (the next epoch donates the state's
    buffers, and a SIGKILL right after ``save`` must leave a complete checkpoint); orbax
    writes to a temporary directory and renames it, so an interrupted save is ignored.
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

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
        tree = _drop_empty(flax.serialization.to_state_dict(state))
        self.manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)
        self.manager.wait_until_finished()

    def restore(self, epoch: int, template: TrainState) -> TrainState:
        """Restore into the structure, dtypes and shardings of ``template``."""
        target = _drop_empty(flax.serialization.to_state_dict(template))
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target)
        restored = self.manager.restore(epoch, args=ocp.args.StandardRestore(target))
        full = _fill_empty(flax.serialization.to_state_dict(template), restored)
        return flax.serialization.from_state_dict(template, full)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
