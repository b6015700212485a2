"""Is a run in the regime the paper speaks about? Its claims concern networks in the
terminal phase of training: the training labels fitted (zero training error) and the
features collapsed (NC1 far below its peak). A fine-structure verdict on a network outside
it describes an under-trained network, and the run's report says so; the whole-paper
claims (``ncfine_jax.paper``) are judged only on runs inside it.
"""

from __future__ import annotations

import math
from typing import Mapping

# Terminal phase: the training labels fitted ...
TERMINAL_ACCURACY = 0.99
# ... and NC1 at the last saved epoch at least this many times below its peak over the
# saved epochs (Neural Collapse is the paper's premise).
COLLAPSE_FACTOR = 10.0
# Early phase: the labels at least half learned (before that, D shows the input
# statistics, not what training made of them).
EARLY_ACCURACY = 0.5


def per_epoch(results: Mapping, key: str) -> list[tuple[int, float | None]]:
    """(epoch, value) pairs of a per-epoch metric of results.json (``nc1``, ``msdr``, ...),
    sorted by epoch (JSON keys are strings)."""
    values = results.get(key) or {}
    return sorted((int(e), v) for e, v in values.items())


def collapse(results: Mapping) -> dict:
    """NC1 and NC2 over the saved epochs of a run.

    Returns:
      dict: nc1_peak (largest NC1 at a saved epoch, its epoch nc1_peak_epoch), nc1_last,
      nc1_drop (peak / last, the collapse factor; None when NC1 is missing), nc2_first,
      nc2_last (None when missing).
    """
    nc1 = [(e, v) for e, v in per_epoch(results, "nc1") if v is not None]
    nc2 = [(e, v) for e, v in per_epoch(results, "nc2") if v is not None]
    out = dict.fromkeys(("nc1_peak", "nc1_peak_epoch", "nc1_last", "nc1_drop", "nc2_first",
                         "nc2_last"))
    if nc1:
        peak_epoch, peak = max(nc1, key=lambda t: t[1])
        last = nc1[-1][1]
        out.update(nc1_peak=peak, nc1_peak_epoch=peak_epoch, nc1_last=last,
                   nc1_drop=peak / last if last > 0 else math.inf)
    if nc2:
        out.update(nc2_first=nc2[0][1], nc2_last=nc2[-1][1])
    return out


def terminal_phase(results: Mapping, collapse_required: bool = True) -> dict:
    """Whether a run's results.json shows the terminal phase: final training accuracy
    >= TERMINAL_ACCURACY and (``collapse_required``) NC1 fallen >= COLLAPSE_FACTOR.

    Returns:
      dict: met, train_accuracy, test_accuracy, nc1_peak, nc1_last, nc1_drop, requires
      (the gate in words).
    """
    c = collapse(results)
    accuracy = results.get("final_train_accuracy")
    met = accuracy is not None and accuracy >= TERMINAL_ACCURACY
    if collapse_required:
        met = met and c["nc1_drop"] is not None and c["nc1_drop"] >= COLLAPSE_FACTOR
    requires = f"training accuracy >= {TERMINAL_ACCURACY:g}" + (
        f" and NC1 peak / last >= {COLLAPSE_FACTOR:g}" if collapse_required else "")
    return {"met": bool(met), "train_accuracy": accuracy,
            "test_accuracy": results.get("final_test_accuracy"), "nc1_peak": c["nc1_peak"],
            "nc1_last": c["nc1_last"], "nc1_drop": c["nc1_drop"], "requires": requires}
