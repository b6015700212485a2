"""The numbers the claims are judged on, computed from what the analysis wrote.

Pure functions of ``results.json`` dicts, distance matrices and Gaussian-mixture records;
the thresholds they are compared with live in ``paper/claims/verdicts.py``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def classes_per_label(results: Mapping) -> float:
    """Mean number of original classes per training label (2 for Coarse CIFAR-10)."""
    mapping = results["label_mapping"]
    return mapping["num_classes"] / mapping["num_labels"]


def cluster_accuracy(results: Mapping) -> float | None:
    """Fraction of training samples whose CLP cluster (found inside their training label)
    maps to their original class: the separation inside a label, free of how well the
    network's head predicts the label itself."""
    return (results.get("clp_details") or {}).get("cluster_accuracy_train")


def msdr_null_band(results: Mapping) -> list[tuple[int, float, float]]:
    """(epoch, 2.5th, 97.5th percentile) of MSDR's permutation null at the saved epochs of a
    run (``results["fine_structure"]["by_epoch"]``); empty for analyses without it."""
    by_epoch = (results.get("fine_structure") or {}).get("by_epoch") or {}
    return sorted((int(e), v["msdr_null_p025"], v["msdr_null_p975"])
                  for e, v in by_epoch.items()
                  if v and v.get("msdr_null_p025") is not None
                  and v.get("msdr_null_p975") is not None)


def d_contrasts(D: np.ndarray, superclass: Sequence[int]) -> tuple[float, float]:
    """How visible the two patterns of a D heatmap are.

    Args:
      D: [C, C] mean squared distances between the samples of classes i and j.
      superclass: [C] group of each class (the training label of a coarsening; the
        original class for "fine", whose D is over the training labels).

    Returns:
      (diagonal, lines): ``diagonal`` = mean D_ij over i != j / mean D_ii (> 1: each
      class is tighter than the distances between classes, the diagonal shows);
      ``lines`` = mean D_ij over pairs in different groups / mean D_ij over i != j in the
      same group (> 1: classes sharing a group sit closer, the within-group lines show).
    """
    D = np.asarray(D, np.float64)
    s = np.asarray(superclass)
    off = ~np.eye(len(s), dtype=bool)
    same = (s[:, None] == s[None, :]) & off
    diagonal = D[off].mean() / np.diag(D).mean()
    lines = D[off & ~same].mean() / D[same].mean()
    return float(diagonal), float(lines)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (scipy); None for fewer than 2 points or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = spearmanr(x, y).statistic
    return None if not math.isfinite(rho) else float(rho)


def gm_lines(records: Sequence[Mapping]) -> dict:
    """Fig. 18-20 records -> {line value: [(sigma2, msdr_mean, train_acc_min)]} sorted by
    sigma2, leaving out points where every seed diverged (msdr_mean None)."""
    lines: dict = {}
    for r in records:
        if r["msdr_mean"] is not None:
            lines.setdefault(r["value"], []).append((r["sigma2"], r["msdr_mean"],
                                                     r["train_acc_min"]))
    return {v: sorted(points) for v, points in sorted(lines.items())}


def gm_level(points: Sequence[tuple], min_sigma2: float) -> float | None:
    """Mean log MSDR of a line over sigma2 >= ``min_sigma2`` (the log panel of the
    figures, where the lines part); None when the line has no such point."""
    logs = [math.log(m) for s2, m, _ in points if s2 >= min_sigma2 and m > 0]
    return float(np.mean(logs)) if logs else None


def gm_tau2_curves(records: Sequence[Mapping]) -> dict:
    """Fig. 21 records -> {"similar"|"dissimilar"|"all": [(tau2, msdr_mean)]} sorted by tau2."""
    curves: dict = {}
    for r in records:
        if r["msdr_mean"] is not None:
            curves.setdefault(r["subclasses"], []).append((r["tau2"], r["msdr_mean"]))
    return {k: sorted(v) for k, v in curves.items()}


def fine_structure(results: Mapping) -> dict | None:
    """The significance block of results.json (``analysis.significance``): MSDR, cluster
    accuracy and train-mapped CLP against their permutation nulls; None when absent."""
    block = results.get("fine_structure")
    return block if isinstance(block, dict) else None


def first_epoch_reaching(accuracy: Mapping[int, float], epochs: Sequence[int],
                         threshold: float) -> int | None:
    """The first of ``epochs`` (saved feature epochs) whose training accuracy (from
    log.jsonl, 0-1) is >= ``threshold``; None when none is."""
    for e in sorted(epochs):
        a = accuracy.get(e)
        if a is not None and a >= threshold:
            return e
    return None


def lines_null(D: np.ndarray, superclass: Sequence[int], permutations: int,
               seed: int) -> np.ndarray:
    """Null distribution of the line contrast of ``d_contrasts``: the groups of the
    classes of D shuffled (group sizes kept), so classes that share a group are a random
    set of classes. Used where D is over training labels and the group is the original
    class (Fine CIFAR-10): the network is never told which labels share a class.

    Returns:
      [permutations] line contrasts of the shuffled groupings.
    """
    rng = np.random.default_rng(seed)
    s = np.asarray(superclass)
    return np.array([d_contrasts(D, rng.permutation(s))[1] for _ in range(permutations)])
