"""Figures of the Gaussian-mixture study in the layout of the paper's Figs. 18-21."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ncfine_jax.errors import ConfigError

SPLIT_AT = 2.0  # figures split the x-axis here: linear to the left, log to the right


def _lines(records: Sequence[dict], vary: str):
    """(line keys, record -> its line key, line key -> legend label) of one study."""
    if vary == "tau2":
        keys = [g for g in ("similar", "dissimilar", "all")
                if any(r["subclasses"] == g for r in records)]
        return keys, (lambda r: r["subclasses"]), (lambda k: f"{k} subclasses")
    if vary == "sigma2":
        return ["all"], (lambda r: "all"), (lambda k: "MSDR")
    return (sorted({r["value"] for r in records}), (lambda r: r["value"]),
            (lambda k: f"{vary} = {int(k) if vary.startswith('d_') else k:g}"))


def _draw_line(ax, records: Sequence[dict], xkey: str, lo: float, hi: float, color) -> None:
    """One line of MSDR means on [lo, hi] with its +-1 std band; red where a seed failed."""
    # Points where every seed diverged have no mean: left out of the line.
    rs = sorted((r for r in records if r["msdr_mean"] is not None), key=lambda r: r[xkey])
    x = np.array([r[xkey] for r in rs])
    keep = (x >= lo) & (x <= hi)
    x = x[keep]
    m = np.array([r["msdr_mean"] for r in rs])[keep]
    s = np.array([r["msdr_std"] for r in rs])[keep]
    ok = np.array([r["train_acc_min"] >= 1.0 and not r.get("diverged")
                   for r in rs], dtype=bool)[keep]
    ax.fill_between(x, m - s, m + s, color=color, alpha=0.15, linewidth=0)
    for i in range(len(x) - 1):
        good = ok[i] and ok[i + 1]  # red segments on top: lines often overlap
        ax.plot(x[i:i + 2], m[i:i + 2], color=color if good else "red", linewidth=1.8,
                zorder=2 if good else 2.5)
    ax.scatter(x, m, s=12, color=[color if o else "red" for o in ok], zorder=3)


def plot_records(records: Sequence[dict], path, title: str | None = None):
    """Draws the layout of Figs. 18-21 and saves a PNG atomically.

    MSDR (mean over seeds, band = +-1 std) against sigma2 (tau2 for ``vary="tau2"``);
    the x-axis is split at 2: a linear panel on [min, 2] and a log panel on [2, max].
    One line per value of the varied parameter (per subclass group for tau2); a segment
    is red where the minimum train accuracy over seeds at either end is below 100% or
    some seed diverged; points where every seed diverged are left out.
    """
    import io as _io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    from ncfine_jax.io import atomic_write_bytes

    if not records:
        raise ConfigError("records: nothing to plot")
    vary = records[0]["vary"]
    xkey = "tau2" if vary == "tau2" else "sigma2"
    line_keys, key_of, label_of = _lines(records, vary)
    xlabel = r"$\tau^2$" if xkey == "tau2" else r"$\sigma^2$"
    xs_all = np.array([r[xkey] for r in records])
    panels = []
    if xs_all.min() < SPLIT_AT:
        panels.append(("linear", xs_all.min(), min(SPLIT_AT, xs_all.max())))
    if xs_all.max() > SPLIT_AT or not panels:
        panels.append(("log", max(SPLIT_AT, xs_all.min()), xs_all.max()))
    # Own y-range per panel: MSDR spans ~1-3 left of the split and up to ~1 + sigma2 right of it.
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False,
                             gridspec_kw={"wspace": 0.18})
    colors = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red marks acc < 100%
    for ax, (scale, lo, hi) in zip(axes[0], panels):
        for li, k in enumerate(line_keys):
            _draw_line(ax, [r for r in records if key_of(r) == k], xkey, lo, hi,
                       colors[li % len(colors)])
        ax.set_xscale(scale)
        if lo < hi:
            pad = 0.02 * (hi - lo) if scale == "linear" else 0.0
            ax.set_xlim(lo - pad, hi + pad)
        if scale == "log":  # label the grid values themselves, no 10^k minor clutter
            ticks = sorted({float(v) for v in xs_all if lo <= v <= hi})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"{xlabel} ({scale} scale)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MSDR of hidden layer (mean ± std)")
    handles = [Line2D([], [], color=colors[i % len(colors)], label=label_of(k))
               for i, k in enumerate(line_keys)]
    handles.append(Line2D([], [], color="red", label="train acc < 100% (or a seed diverged)"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
