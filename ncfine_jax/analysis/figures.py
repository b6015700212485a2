"""Paper figures as PNG files (matplotlib, Agg backend, written atomically).

Every function takes plain arrays / dicts, writes one PNG through
``ncfine_jax.io.atomic_path`` and returns its path. Panels whose data is missing
(e.g. a diverged grid point) are drawn empty with a note rather than failing.
``caption`` (every function) is printed small under the figure: what it was computed
from (source files or workdir, epoch, number of samples).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ncfine_jax.errors import NcfineError
from ncfine_jax.io import atomic_path
from ncfine_jax.text import MISSING

DPI = 110


@functools.cache
def pyplot():
    """matplotlib.pyplot on the Agg backend, imported when a figure is first drawn (the
    training commands import this module through the analysis but may draw nothing)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: figures are files, never windows
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, caption: str | None = None) -> Path:
    path = Path(path)
    readable_log_ticks(fig)
    if caption:
        # Below everything drawn so far (tick labels included); bbox_inches="tight" then
        # grows the image to include it.
        fig.canvas.draw()  # runs a constrained layout, so the bbox below is final
        bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
        fig.text(0.5, bottom - 0.02, caption, ha="center", va="top", fontsize=7, color="0.3")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        pyplot().close(fig)  # also on failure: pyplot keeps every open figure alive
    return path


def readable_log_ticks(fig) -> None:
    """Give every log-scale y axis of ``fig`` at least two labelled ticks inside its range,
    in plain numbers (0.2, 0.5, 1): at decades when the data spans several, at 1-2-5 or
    every integer multiple when it spans about one, and evenly spaced when it spans less
    (a log axis over 0.26-0.35 has no decade tick at all, so matplotlib would label none).
    Plain labels also spare mathtext, which dominates the drawing time of small figures."""
    import matplotlib.ticker as ticker

    plain = ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
    for ax in fig.axes:
        if ax.get_yscale() != "log":
            continue
        lo, hi = sorted(ax.get_ylim())
        if not (lo > 0 and hi > lo):
            continue
        for locator in (ticker.LogLocator(10), ticker.LogLocator(10, subs=(1.0, 2.0, 5.0)),
                        ticker.LogLocator(10, subs=np.arange(1.0, 10.0)),
                        ticker.MaxNLocator(4)):
            ticks = [t for t in locator.tick_values(lo, hi) if lo <= t <= hi]
            if len(ticks) >= 2:
                break
        ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def superclass_order(superclass_of_class: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Class order grouping classes by superclass, and the boundary positions.

    Returns:
        (order [C] class indices, boundaries [S-1] positions between groups, in
        units of matrix cells).
    """
    sc = np.asarray(superclass_of_class)
    order = np.argsort(sc, kind="stable")
    sorted_sc = sc[order]
    boundaries = np.flatnonzero(np.diff(sorted_sc) != 0) + 1
    return order, boundaries


def _draw_ordered_matrix(fig, ax, D, order, bounds, line_width: float):
    """``D`` with rows/columns in ``order``, white lines at the superclass ``bounds``, and a
    colorbar (ticks are the caller's)."""
    D = np.asarray(D, np.float64)
    im = ax.imshow(D[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
    for b in bounds:
        ax.axhline(b - 0.5, color="white", lw=line_width)
        ax.axvline(b - 0.5, color="white", lw=line_width)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def plot_distance_heatmaps(
    matrices: Mapping[int, np.ndarray],
    superclass_of_class: Sequence[int],
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """Class-mean distance matrices D at several epochs, side by side (Figs. 5, 6).

    Args:
        matrices: epoch -> [C, C] distance matrix (same C for all).
        superclass_of_class: [C] group of each class; rows/columns are ordered by it
            and white lines mark group boundaries.
        path: output PNG.
        class_names: [C] tick labels (default: class indices).
        title: figure title.
    """
    if not matrices:
        raise NcfineError("matrices: need at least one epoch's distance matrix")
    epochs = sorted(matrices)
    order, bounds = superclass_order(superclass_of_class)
    C = order.size
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    n = len(epochs)
    for ep in epochs:  # checked before any figure exists, so none is left open
        if np.shape(matrices[ep]) != (C, C):
            raise NcfineError(f"matrices[{ep}]: expected shape ({C}, {C}), got {np.shape(matrices[ep])}")
    fig, axes = pyplot().subplots(1, n, figsize=(3.9 * n + 0.6, 3.8), squeeze=False,
                                  layout="constrained")
    for i, (ax, ep) in enumerate(zip(axes[0], epochs)):
        _draw_ordered_matrix(fig, ax, matrices[ep], order, bounds, line_width=1.2)
        ax.set_title(f"epoch {ep}", fontsize=10)
        if C <= 20:
            ax.set_xticks(range(C), [names[c] for c in order], rotation=90, fontsize=7)
            # Row names once, on the left panel; the others would collide with colorbars.
            ax.set_yticks(range(C), [names[c] for c in order] if i == 0 else [], fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path, caption)


def plot_nc_curves(
    series: Mapping[str, Mapping[int, float | None]],
    path: str | os.PathLike,
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """One panel per metric against epoch, on log-scale y axes (Fig. 3: NC1, NC2, ...).

    Args:
        series: metric title -> {epoch: value}; a metric without any value (e.g. NC3
            without a classifier) gets no panel.
    """
    series_list = [(k, v) for k, v in series.items() if any(x is not None for x in v.values())]
    series_list = series_list or list(series.items())[:1]
    fig, axes = pyplot().subplots(1, len(series_list), figsize=(4 * len(series_list), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], series_list):
        eps = sorted(e for e, v in values.items() if v is not None and np.isfinite(v))
        vals = [values[e] for e in eps]
        if eps:
            ax.plot(eps, vals, "o-")
            if all(v > 0 for v in vals):
                ax.set_yscale("log")  # ticks made readable by _save
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, caption)


def plot_training_curves(
    log: Sequence[Mapping],
    path: str | os.PathLike,
    nc1: Mapping[int, float | None] | None = None,
    msdr: Mapping[int, float | None] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """A run over its epochs: loss, training and test accuracy, learning rate (from
    log.jsonl), and NC1 and MSDR at the saved epochs.

    Args:
        log: log.jsonl records (epoch, loss, train_accuracy, test_accuracy or None, lr).
        path: output PNG.
        nc1, msdr: epoch -> value at the saved epochs (None: not measured).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.3), squeeze=False)
    ax_loss, ax_acc, ax_lr, ax_nc = axes[0]
    epochs = [r["epoch"] for r in log]
    losses = [r["loss"] for r in log]
    ax_loss.plot(epochs, losses, "-", color="C0")
    if losses and all(v is not None and v > 0 for v in losses):
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in log], "-", color="C0", label="training")
    tested = [(r["epoch"], r["test_accuracy"]) for r in log if r.get("test_accuracy") is not None]
    if tested:
        ax_acc.plot(*zip(*tested), "o-", color="C1", markersize=3, label="test")
    ax_acc.set_ylabel("accuracy on the training labels")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.legend(fontsize=7)
    ax_lr.plot(epochs, [r["lr"] for r in log], "-", color="C2")
    ax_lr.set_ylabel("learning rate")
    for series, name, colour, ax in ((nc1, "NC1", "C3", ax_nc), (msdr, "MSDR", "C4", None)):
        points = sorted((e, v) for e, v in (series or {}).items()
                        if v is not None and np.isfinite(v) and v > 0)
        if not points:
            continue
        if ax is None:  # MSDR on a second axis of the NC1 panel
            ax = ax_nc.twinx()
        ax.plot(*zip(*points), "o-", color=colour, label=name)
        ax.set_yscale("log")
        ax.set_ylabel(name, color=colour)
    if not nc1 and not msdr:
        ax_nc.text(0.5, 0.5, "no saved epochs", ha="center", va="center",
                   transform=ax_nc.transAxes)
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    ax_nc.set_title("at the saved epochs", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, caption)


def _scatter_by(ax, points, colour_of, names, max_points, seed):
    points = np.asarray(points)
    colour_of = np.asarray(colour_of)
    if points.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(points.shape[0], max_points, replace=False))
        points, colour_of = points[keep], colour_of[keep]
    values = np.unique(colour_of)
    cmap = pyplot().get_cmap("tab10" if values.size <= 10 else "tab20")
    for i, v in enumerate(values):
        sel = colour_of == v
        label = names[v] if names is not None and 0 <= v < len(names) else str(v)
        ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.6, color=cmap(i % cmap.N),
                   label=label, rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    if values.size <= 10:
        ax.legend(fontsize=7, markerscale=3, loc="best", frameon=True)


def plot_tsne_grid(
    panels: Sequence[tuple[np.ndarray, np.ndarray] | None],
    path: str | os.PathLike,
    panel_titles: Sequence[str] | None = None,
    colour_names: Sequence[str] | None = None,
    max_points: int = 3000,
    ncols: int | None = None,
    title: str | None = None,
    seed: int = 0,
    caption: str | None = None,
) -> Path:
    """One 2-D embedding panel per superclass, points coloured by original class (Figs. 7, 8).

    Args:
        panels: per superclass, (points [n, 2], colour ids [n]), or None / a note
            string (drawn empty, with the note).
        path: output PNG.
        panel_titles: one title per panel.
        colour_names: name of each colour id (e.g. the class names).
        max_points: points drawn per panel (seeded subsample beyond it).
        ncols: grid columns (default: up to 5).
        title: figure title.
        seed: subsampling seed.
    """
    if not panels:
        raise NcfineError("panels: need at least one superclass panel")
    n = len(panels)
    ncols = ncols or min(n, 5)
    nrows = -(-n // ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        if panels[i] is None or isinstance(panels[i], str):
            note = "no embedding" if panels[i] is None else panels[i]
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=8,
                    wrap=True)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            _scatter_by(ax, panels[i][0], panels[i][1], colour_names, max_points, seed + i)
        ax.set_title(panel_titles[i] if panel_titles else f"superclass {i}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, caption)


def plot_pca(
    points: np.ndarray,
    classes: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    max_points: int = 5000,
    title: str | None = None,
    seed: int = 0,
    caption: str | None = None,
) -> Path:
    """2-D PCA of all features, coloured by training label (left) and original class (right)."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 4.2))
    _scatter_by(axes[0], points, labels, None, max_points, seed)
    axes[0].set_title("coloured by training label", fontsize=9)
    _scatter_by(axes[1], points, classes, class_names, max_points, seed)
    axes[1].set_title("coloured by original class", fontsize=9)
    for ax in axes:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, caption)


def plot_accuracy_bars(
    groups: Mapping[str, Mapping[str, float | None]],
    path: str | os.PathLike,
    title: str | None = None,
    ylabel: str = "test accuracy",
    caption: str | None = None,
) -> Path:
    """Grouped bars, e.g. {"lr=0.01": {"CLP": .93, "LPO": .94, "OT": .95}} (Figs. 11, 12, 31).

    Missing (None) values are left out and marked "n/a".
    """
    if not groups:
        raise NcfineError("groups: need at least one group of accuracies")
    group_names = list(groups)
    metrics: list[str] = []
    for g in groups.values():
        metrics += [m for m in g if m not in metrics]
    width = 0.8 / max(len(metrics), 1)
    fig_w = max(4.0, 0.45 * len(group_names) * max(len(metrics), 1) + 1.5)
    fig, ax = pyplot().subplots(figsize=(fig_w, 3.8))
    x = np.arange(len(group_names))
    for j, m in enumerate(metrics):
        for i, g in enumerate(group_names):
            v = groups[g].get(m)
            xpos = x[i] - 0.4 + width * (j + 0.5)
            if v is None or not np.isfinite(v):
                ax.text(xpos, 0.02, MISSING, ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            ax.bar(xpos, v, width * 0.9, color=f"C{j}")
            ax.text(xpos, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, group_names, fontsize=8, rotation=30 if len(group_names) > 4 else 0)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel(ylabel)
    # Legend right of the axes so it never hides a bar or its value.
    handles = [pyplot().Rectangle((0, 0), 1, 1, color=f"C{j}") for j in range(len(metrics))]
    ax.legend(handles, metrics, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, caption)  # bbox_inches="tight" in _save fits the labels


def _grid_axes(values_lr, values_wd):
    lrs = sorted(set(values_lr), reverse=True)  # paper: lr 0.1 on top
    wds = sorted(set(values_wd), reverse=True)  # paper: largest wd on the left
    return lrs, wds


def plot_grid_heatmaps(
    runs: Sequence[Mapping],
    path: str | os.PathLike,
    epoch: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """lr x wd grid of D heatmaps at one epoch (Figs. 24-27): rows lr, columns wd.

    Args:
        runs: one mapping per grid point with keys ``lr``, ``wd``, ``distance_matrix``
            ([C, C] or None, e.g. diverged), ``superclass_of_class`` ([C]) and optional
            ``diverged`` (bool).
        path: output PNG.
        epoch: the epoch shown (for the title only).
        class_names: [C] tick labels.
        title: figure title.
    """
    if not runs:
        raise NcfineError("runs: need at least one grid point")
    lrs, wds = _grid_axes([r["lr"] for r in runs], [r["wd"] for r in runs])
    by_point = {(r["lr"], r["wd"]): r for r in runs}
    fig, axes = pyplot().subplots(len(lrs), len(wds), figsize=(3.2 * len(wds) + 0.8, 3.0 * len(lrs)),
                                  squeeze=False, layout="constrained")
    for i, lr in enumerate(lrs):
        for j, wd in enumerate(wds):
            ax = axes[i, j]
            r = by_point.get((lr, wd))
            D = None if r is None else r.get("distance_matrix")
            if i == 0:  # columns: weight decay; rows: learning rate
                ax.set_title(f"weight decay {wd:g}", fontsize=10, fontweight="bold")
            if j == 0:
                ax.set_ylabel(f"lr {lr:g}", fontsize=10, fontweight="bold")
            if D is None:
                note = "diverged" if r is not None and r.get("diverged") else "no data"
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            order, bounds = superclass_order(r["superclass_of_class"])
            _draw_ordered_matrix(fig, ax, D, order, bounds, line_width=1.0)
            C = order.size
            ticks = ([class_names[k] for k in order] if class_names is not None and C <= 20
                     else None)
            ax.set_yticks(range(C) if ticks and j == 0 else [],
                          ticks if ticks and j == 0 else [], fontsize=6)
            ax.set_xticks(range(C) if ticks and i == len(lrs) - 1 else [],
                          ticks if ticks and i == len(lrs) - 1 else [], rotation=90, fontsize=6)
    sup = title or "class-mean distance matrices"
    if epoch is not None:
        sup += f" (epoch {epoch})"
    fig.suptitle(sup, fontsize=11)
    return _save(fig, path, caption)


def plot_grid_bars(
    runs: Sequence[Mapping],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("clp_accuracy", "lpo_accuracy"),
    names: Sequence[str] = ("CLP", "LPO"),
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """CLP / LPO bars per (lr, wd) configuration (Fig. 31), ordered like the 3 x 3 grid.

    Args:
        runs: mappings with ``lr``, ``wd`` and the ``metrics`` keys (None allowed).
    """
    if not runs:
        raise NcfineError("runs: need at least one grid point")
    lrs, wds = _grid_axes([r["lr"] for r in runs], [r["wd"] for r in runs])
    by_point = {(r["lr"], r["wd"]): r for r in runs}
    groups = {}
    for lr in lrs:
        for wd in wds:
            r = by_point.get((lr, wd))
            if r is None:
                continue
            groups[f"lr={lr:g}\nwd={wd:g}"] = {n: r.get(m) for m, n in zip(metrics, names)}
    return plot_accuracy_bars(groups, path, title=title or "CLP vs LPO per configuration", caption=caption)
