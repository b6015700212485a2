"""Live training curves: TensorBoard event files in every workdir (``WORKDIR/tensorboard``).

Written through tensorboardX, an optional extra (``pip install 'ncfine_jax[tensorboard]'``,
which ``make install`` includes); ``log.jsonl`` stays the run's record and the figures come
from it, so without the extra nothing is lost but the live view, and one line says how to
get it. Training writes per epoch ``train/loss``, ``train/accuracy``, ``test/accuracy``
(at evaluated epochs), ``train/lr`` and ``train/images_per_s``; the analysis writes the
collapse metrics at the saved epochs (``collapse/nc1``, ``collapse/nc2``,
``structure/msdr``, ...) into the sub-folder ``analysis``, which TensorBoard shows as a run
of its own. View them with ``tensorboard --logdir WORKDIR`` (or a grid's or the paper's
folder: every run below it).

A resumed run purges the events of the epochs it trains again, and a new analysis those
of the one before, so the curves show each epoch once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ncfine_jax import io
from ncfine_jax.distributed import is_writer

EXTRA = "pip install 'ncfine_jax[tensorboard]'"


def _summary_writer():
    """tensorboardX's ``SummaryWriter`` class, or None when the extra is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def available() -> bool:
    return _summary_writer() is not None


def how_to_view(workdir: Path) -> str:
    """The start block's line on live curves: the command, or how to get the extra."""
    if available():
        return f"tensorboard --logdir {workdir}"
    return (f"no TensorBoard files: they need tensorboardX ({EXTRA}); log.jsonl and "
            "figures/ hold the same numbers")


class EventWriter:
    """Scalars of one run into ``logdir`` (nothing when tensorboardX is missing or this is
    not the writing process).

    Args:
      logdir: the event folder (``RunDir.tensorboard``, or its ``analysis`` sub-folder).
      purge_step: events of earlier writers at this step or later are hidden (the epochs
        a resumed run trains again).
    """

    def __init__(self, logdir: Path, purge_step: int | None = None):
        self.logdir = Path(logdir)
        self.purge_step = purge_step
        self._writer = None  # opened with the first scalars: a run with nothing to train
        # (finished, resumed at its end) writes no event file

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """Write each finite value under its tag at ``step`` (an epoch), then flush and
        record the event files in the workdir's manifest."""
        if self._writer is None:
            cls = _summary_writer() if is_writer() else None
            if cls is None:
                return
            self._writer = cls(str(self.logdir), purge_step=self.purge_step,
                               flush_secs=10_000)
        for tag, value in values.items():
            if value is not None and value == value:  # None and NaN are not plotted
                self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()
        for path in sorted(self.logdir.glob("events.out.tfevents.*")):
            io.record_appended(path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
