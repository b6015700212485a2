"""lr x wd grid figures from analysed runs: D heatmaps (Figs. 24-27) and CLP/LPO bars (Fig. 31).

Reads, per grid point, what ``analyze_run`` wrote into its workdir
(``distance_matrices.npz``, ``results.json``) and its ``label_mapping.json``; never
the features.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

from ncfine_jax import workdir as wdir
from ncfine_jax.analysis import figures as figs
from ncfine_jax.analysis.outputs import load_distance_matrices
from ncfine_jax.analysis.views import label_view
from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.io import load_json
from ncfine_jax.labels import LabelMapping


def _tick_names(points_loaded, class_names):
    """Class names as ticks only where D is over the original classes (not for "fine")."""
    if class_names is None:
        return None
    for p, _, _ in points_loaded:
        path = wdir.RunDir(p["workdir"]).mapping
        if path.exists():
            over_labels = label_view(LabelMapping.load(path)).distances_over_labels
            return None if over_labels else list(class_names)
    return None


def _load_points(points: Sequence[dict]) -> list[tuple]:
    """Per point: (the point, its results or None, its (D by epoch, superclass) or None).

    A diverged point keeps neither; a point with no results.json / no
    distance_matrices.npz (diverged before analysis) has None there."""
    loaded = []
    for p in points:
        run = wdir.RunDir(Path(p["workdir"]))
        diverged = bool(p.get("diverged", False))
        res = load_json(run.results, "results", DataError) if run.results.exists() else None
        mats = (load_distance_matrices(run.path)
                if not diverged and run.distances.exists() else None)
        loaded.append((p, None if diverged else res, mats))
    return loaded


def _per_epoch_heatmaps(heatmap_epochs, saved: list[int]) -> list[int]:
    """The epochs that get a heatmap figure of their own (ConfigError: one no point saved)."""
    if heatmap_epochs is None:
        return []
    if isinstance(heatmap_epochs, str):
        if heatmap_epochs != "all":
            raise ConfigError(f"heatmap_epochs: expected epochs or 'all', got {heatmap_epochs!r}")
        return saved
    chosen = sorted(set(int(e) for e in heatmap_epochs))
    missing = [e for e in chosen if e not in saved]
    if missing:
        raise ConfigError(f"heatmap_epochs: epoch(s) {missing} saved by no grid point "
                          f"(saved: {saved or 'none'})")
    return chosen


def _heat_runs(loaded: list[tuple], at: int | None, exact: bool) -> list[dict]:
    """One heatmap panel per point: D at epoch ``at`` (``exact``) or at its latest saved
    epoch <= ``at`` (None: the last), empty where the point has none."""
    runs = []
    for p, _, mats in loaded:
        D, sc = None, None
        if mats is not None:
            eps = [e for e in mats[0] if (e == at if exact else at is None or e <= at)]
            if eps:
                D, sc = mats[0][max(eps)], mats[1]
        runs.append({"lr": p["lr"], "wd": p["wd"], "distance_matrix": D, "superclass_of_class": sc,
                     "diverged": bool(p.get("diverged", False))})
    return runs


def grid_figures(
    points: Sequence[dict],
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    heatmap_epochs: Sequence[int] | Literal["all"] | None = None,
    epoch: int | None = None,
) -> list[Path]:
    """Grid figures in ``out_dir/figures/`` from the analysed runs of an lr x wd grid.

    Writes ``grid_distance_heatmaps.png`` (D per configuration at ``epoch``; rows lr,
    columns wd) and ``grid_clp_lpo.png`` (CLP / LPO bars per configuration) and, with
    ``heatmap_epochs``, one ``grid_heatmaps_epoch_XXXX.png`` per epoch.

    Args:
        points: one dict per grid point with ``lr``, ``wd``, ``workdir`` and optional
            ``diverged``. A point whose workdir has no ``results.json`` /
            ``distance_matrices.npz`` (e.g. diverged before analysis) is drawn empty.
        out_dir: the figures go to ``out_dir/figures/``.
        class_names: names of the original classes, used as heatmap ticks where D is
            over the original classes (not for "fine" runs, whose D is over the
            training labels; the kind is read from the points' ``label_mapping.json``).
        title: prefix for the figure titles.
        heatmap_epochs: None (only the two figures), a sequence of epochs, or "all"
            (every epoch some point saved). Each epoch must have been saved by some
            non-diverged point.
        epoch: epoch of ``grid_distance_heatmaps.png``; default the last epoch every
            analysed run saved. A run without that epoch shows its latest earlier one.

    Returns:
        Paths of the written PNGs.

    Raises:
        ConfigError: an epoch of ``heatmap_epochs`` that no point saved (before any
            figure is written).
    """
    if not points:
        raise DataError("points: no grid points given")
    loaded = _load_points(points)
    names = _tick_names(loaded, class_names)
    saved = sorted(set().union(*[set(m[0]) for _, _, m in loaded if m is not None]))
    per_epoch = _per_epoch_heatmaps(heatmap_epochs, saved)
    available = [set(m[0]) for _, _, m in loaded if m is not None]
    if epoch is None and available:
        epoch = max(set.intersection(*available) or {min(max(a) for a in available)})
    prefix = f"{title}: " if title else ""
    grid_dir = wdir.GridDir(out_dir)
    bar_runs = [{"lr": p["lr"], "wd": p["wd"],
                 "clp_accuracy": None if res is None else res.get("clp_accuracy"),
                 "lpo_accuracy": None if res is None else res.get("lpo_accuracy")}
                for p, res, _ in loaded]
    sources = f"grid of {len(points)} runs in {Path(out_dir)}"
    written = [
        figs.plot_grid_heatmaps(_heat_runs(loaded, epoch, exact=False), grid_dir.figures / wdir.GRID_HEATMAPS_FIGURE,
                                epoch=epoch, class_names=names, title=f"{prefix}class-distance matrices",
                                caption=f"{sources}; each run's D at epoch {epoch} "
                                        "(or its latest earlier saved epoch), training samples"),
        figs.plot_grid_bars(bar_runs, grid_dir.figures / wdir.GRID_BARS_FIGURE, title=f"{prefix}CLP vs LPO per configuration",
                            caption=f"{sources}; each run's last analysed epoch, test samples"),
    ]
    for e in per_epoch:
        written.append(figs.plot_grid_heatmaps(
            _heat_runs(loaded, e, exact=True), grid_dir.epoch_heatmaps_figure(e), epoch=e,
            class_names=names, title=f"{prefix}class-distance matrices D",
            caption=f"{sources}; D at epoch {e}, training samples"))
    return written
