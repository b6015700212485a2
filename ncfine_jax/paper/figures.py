"""Comparison figures across the plan's runs, drawn into DIR/figures/.

Each run's own figures (D heatmaps, NC curves, t-SNE, bars) are written by its analysis;
these put several runs side by side for the claims: NC1 and MSDR over epochs, the two D
contrasts over epochs, and CLP / LPO / clusters per run. A figure with nothing to show
is not drawn, and an older file of its name is removed so no stale figure sits beside a
new report.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Mapping, Sequence

from ncfine_jax.analysis.figures import pyplot, readable_log_ticks
from ncfine_jax.io import atomic_write_bytes

# The figures of the paper report (in DIR/figures/).
NC1_MSDR_FIGURE = "nc1_msdr.png"
D_CONTRAST_FIGURE = "d_contrast.png"
STRUCTURE_FIGURE = "structure_by_run.png"
FIGURE_FILES = (NC1_MSDR_FIGURE, D_CONTRAST_FIGURE, STRUCTURE_FIGURE)


def study_figure(vary: str) -> str:
    """File name of a Gaussian-mixture study's figure (in the study's directory)."""
    return f"gaussian_mixture_{vary}.png"


def _save(fig, path: Path, caption: str) -> Path:
    readable_log_ticks(fig)
    fig.text(0.01, 0.005, caption, fontsize=7, color="0.35", ha="left", va="bottom", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_epoch_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                      path: Path, *, panels: Sequence[tuple[str, str, bool]], title: str,
                      caption: str, hline: Mapping[str, float] | None = None,
                      bands: Mapping[str, Mapping[str, Sequence[tuple[int, float, float]]]]
                      | None = None) -> Path:
    """One panel per metric, one line per run, against epoch.

    Args:
      curves: run label -> metric key -> [(epoch, value)].
      panels: (metric key, panel title, y label, log scale).
      hline: metric key -> y of a dashed reference line (e.g. MSDR = 1).
      bands: run label -> metric key -> [(epoch, low, high)], shaded in the run's colour
        (e.g. the 95% range of a permutation null).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, (key, panel_title, ylabel, log) in zip(axes[0], panels):
        for label, metrics in curves.items():
            pts = [(e, v) for e, v in metrics.get(key, []) if v is not None]
            if pts:
                line, = ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o",
                                label=label)
                band = sorted((bands or {}).get(label, {}).get(key, []))
                if band:
                    ax.fill_between([e for e, _, _ in band], [lo for _, lo, _ in band],
                                    [hi for _, _, hi in band], color=line.get_color(),
                                    alpha=0.2, linewidth=0)
        if hline and key in hline:
            ax.axhline(hline[key], color="0.5", linestyle="--", linewidth=1)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path, caption)


def plot_structure_bars(rows: Sequence[dict], path: Path, *, title: str, caption: str) -> Path:
    """Grouped bars per run: CLP, LPO, OT (when known), the clusters inside a label and
    their chance level, and above each run the verdict of its structure claim.

    Args:
      rows: dicts with label, clp, lpo, clusters, chance, optional ot and verdict.
    """
    import numpy as np

    plt = pyplot()
    keys = [("clp", "CLP"), ("lpo", "LPO"), ("ot", "OT"), ("clusters", "clusters inside a label"),
            ("chance", "chance inside a label")]
    keys = [(k, n) for k, n in keys if any(r.get(k) is not None for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.8))
    for i, (key, name) in enumerate(keys):
        values = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, values, width, label=name,
               color="0.7" if key == "chance" else None)
    for i, r in enumerate(rows):  # the run's structure verdict, from the claims only
        if r.get("verdict"):
            ax.text(i, 1.03, r["verdict"], ha="center", va="bottom", fontsize=7,
                    fontweight="bold" if r["verdict"] == "holds" else "normal")
    ax.set_xticks(x, [r["label"] for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.3)  # room for the verdicts and the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy on the original classes")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=len(keys), loc="upper center")
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path, caption)


def remove_stale(fig_dir: Path, drawn: Sequence[Path]) -> None:
    """Delete figures of ``FIGURE_FILES`` not drawn this time."""
    names = {Path(p).name for p in drawn}
    for name in FIGURE_FILES:
        if name not in names:
            with contextlib.suppress(FileNotFoundError):
                (fig_dir / name).unlink()
