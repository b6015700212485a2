"""Width study of the Gaussian-mixture MLP: MSDR vs d_hidden and d_input per training setting.

For every setting ``PARAMETERIZATION:INPUT_SCALING:LR`` and every varied width
(``d_hidden``, ``d_input``) this runs ``ncfine_jax.gaussian_mixture.run_study`` over the
sigma2 grid and seeds (vmapped in one jit per width value) and records, per grid point,
the MSDR of the hidden layer, the final coarse train accuracy, how far the hidden features
moved from initialisation (``||H_T - H_0||_F / ||H_0||_F``) and diverged runs. Results go to
``OUT/width_study.json`` after every block (a rerun with the same flags skips finished
blocks) and a Markdown table to ``OUT/width_study.md``; ``--replot`` redraws
``OUT/width_study.png`` from the JSON.

Usage (the paper's sizes: 8 x 500 samples, d_input = d_hidden = 512, 1,000 GD steps):
  python experiments/gaussian_mixture_width_study.py --out runs/gm_width \
      --setting standard:none:0.01 --setting ntk:rms:2 --seeds 3
Trends column: Spearman rank correlation of mean MSDR with the width, per sigma2.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ncfine_jax import gaussian_mixture as gm
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment.config import check_int_range, check_nonempty
from ncfine_jax.gaussian_mixture.config import SIZE_MAX
from ncfine_jax.io import atomic_write_json, atomic_write_text, read_json

DEFAULT_SETTINGS = ("standard:none:0.01", "ntk:rms:2", "mup:rms:0.5")


def parse_setting(text: str) -> tuple[str, str, float]:
    """``"standard:none:0.01"`` -> ("standard", "none", 0.01); ConfigError naming --setting."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(f"--setting: expected PARAMETERIZATION:INPUT_SCALING:LR, got {text!r}")
    try:
        lr = float(parts[2])
    except ValueError:
        raise ConfigError(f"--setting: learning rate {parts[2]!r} in {text!r} is not a number") from None
    cfg = gm.GMConfig(lr=lr, parameterization=parts[0], input_scaling=parts[1])
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"--setting {text}: {e}") from None
    return parts[0], parts[1], lr


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--setting", action="append", default=None,
                   help="PARAMETERIZATION:INPUT_SCALING:LR, repeatable "
                        f"(default: {' '.join(DEFAULT_SETTINGS)})")
    p.add_argument("--vary", nargs="+", default=["d_hidden", "d_input"],
                   help="widths to vary: d_hidden and/or d_input")
    p.add_argument("--values", type=int, nargs="+", default=[128, 256, 512, 1024],
                   help="values of the varied width")
    p.add_argument("--sigma2", type=float, nargs="+", default=[1.0, 4.0, 16.0, 64.0])
    p.add_argument("--d-input", type=int, default=512, help="input dimension when not varied")
    p.add_argument("--d-hidden", type=int, default=512, help="hidden width when not varied")
    p.add_argument("--steps", type=int, default=1000, help="full-batch GD steps")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. N-1)")
    p.add_argument("--samples-per-cluster", type=int, default=500)
    p.add_argument("--num-clusters", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=None, help="runs vmapped at once")
    p.add_argument("--replot", action="store_true", help="only redraw OUT/width_study.png")
    return p


def merge_blocks(blocks: list[dict]) -> list[dict]:
    """Joins blocks that differ only in their width values or sigma2 grid (same setting,
    varied width, other sizes, steps and seeds) into one, records sorted by width."""
    merged: dict[tuple, dict] = {}
    for b in blocks:
        c = {k: v for k, v in b["config"].items() if k not in ("values", "sigma2")}
        key = (b["vary"], tuple(sorted(c.items())))
        if key not in merged:
            merged[key] = {"vary": b["vary"], "config": c, "records": []}
        merged[key]["records"] += b["records"]
    for m in merged.values():
        m["records"].sort(key=lambda r: (r["value"], r["sigma2"]))
    return list(merged.values())


def _fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}g}"


def markdown_table(blocks: list[dict]) -> str:
    """One row per (setting, varied width, value): MSDR mean (feature movement) per sigma2.

    A cell is ``MSDR (movement)``; ``*`` marks a minimum train accuracy below 100% and
    ``!k`` k diverged seeds. A trend row per block gives the Spearman correlation of MSDR
    with the width at each sigma2.
    """
    from scipy.stats import spearmanr

    blocks = merge_blocks(blocks)
    sig = sorted({r["sigma2"] for b in blocks for r in b["records"]})
    head = ("| setting | sizes | varied | value | "
            + " | ".join(f"σ²={s:g}: MSDR (move)" for s in sig) + " |")
    lines = [head, "|" + "---|" * (4 + len(sig))]
    for b in blocks:
        c = b["config"]
        setting = f"{c['parameterization']}/{c['input_scaling']}, lr {c['lr']:g}"
        sizes = (f"n={c['num_clusters'] * c['samples_per_cluster']}, "
                 f"{'d_in' if b['vary'] == 'd_hidden' else 'd_h'}="
                 f"{c['d_input'] if b['vary'] == 'd_hidden' else c['d_hidden']}, {c['steps']} steps, "
                 f"{c['seeds']} seeds")
        values = sorted({r["value"] for r in b["records"]})
        for v in values:
            cells = []
            for s in sig:
                r = next((r for r in b["records"] if r["value"] == v and r["sigma2"] == s), None)
                if r is None:
                    cells.append("")
                    continue
                cell = f"{_fmt(r['msdr_mean'])} ({_fmt(r['feature_movement_mean'], 2)})"
                if r["train_acc_min"] is not None and r["train_acc_min"] < 1.0:
                    cell += "*"
                if r["diverged"]:
                    cell += f" !{r['diverged']}"
                cells.append(cell)
            lines.append(f"| {setting} | {sizes} | {b['vary']} | {v:g} | " + " | ".join(cells) + " |")
        trend = []
        for s in sig:
            pts = [(r["value"], r["msdr_mean"]) for r in b["records"]
                   if r["sigma2"] == s and r["msdr_mean"] is not None]
            rho = spearmanr(*zip(*pts)).statistic if len(pts) > 2 else None
            trend.append("-" if rho is None or not np.isfinite(rho) else f"ρ = {rho:+.2f}")
        lines.append(f"| {setting} | | {b['vary']} | trend | " + " | ".join(trend) + " |")
    return "\n".join(lines) + "\n"


def plot_blocks(blocks: list[dict], path) -> Path:
    """MSDR against width, one panel per (setting, varied width), one line per sigma2."""
    import io as _io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = merge_blocks(blocks)
    all_sig = sorted({r["sigma2"] for b in blocks for r in b["records"]})
    color_of = {s: plt.get_cmap("viridis")(i / max(1, len(all_sig) - 1)) for i, s in enumerate(all_sig)}
    fig, axes = plt.subplots(1, len(blocks), figsize=(3.2 * len(blocks), 3.2), squeeze=False,
                             sharey=True)
    for ax, b in zip(axes[0], blocks):
        c = b["config"]
        for s in sorted({r["sigma2"] for r in b["records"]}):
            rs = sorted((r for r in b["records"] if r["sigma2"] == s and r["msdr_mean"] is not None),
                        key=lambda r: r["value"])
            x = [r["value"] for r in rs]
            m = np.array([r["msdr_mean"] for r in rs])
            ax.plot(x, m, marker="o", markersize=3, color=color_of[s], label=f"σ²={s:g}")
            bad = [i for i, r in enumerate(rs) if r["train_acc_min"] < 1.0]
            ax.scatter([x[i] for i in bad], m[bad], color="red", zorder=3, s=14)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{c['parameterization']}/{c['input_scaling']}, lr {c['lr']:g}", fontsize=8)
        ax.set_xlabel(b["vary"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MSDR of hidden layer (red: train acc < 100%)")
    handles = [plt.Line2D([], [], color=color_of[s], marker="o", markersize=3, label=f"σ²={s:g}")
               for s in all_sig]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="center right")
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    from ncfine_jax.io import atomic_write_bytes
    return atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--out: cannot read {path} ({type(e).__name__})") from None


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_nonempty("--out", args.out)
    out = Path(args.out)
    path = out / "width_study.json"
    if args.replot:
        result = _load(path)
        print(plot_blocks(result["blocks"], out / "width_study.png"))
        return result
    settings = [parse_setting(s) for s in (args.setting or DEFAULT_SETTINGS)]
    for v in args.vary:
        if v not in ("d_hidden", "d_input"):
            raise ConfigError(f"--vary: {v!r} is not a width; choose d_hidden and/or d_input")
    check_int_range("--seeds", args.seeds, 1, SIZE_MAX)
    check_int_range("--batch-size", args.batch_size, 1, SIZE_MAX)
    for v in args.values:
        check_int_range("--values", v, 1, SIZE_MAX)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    base = dict(num_clusters=args.num_clusters, samples_per_cluster=args.samples_per_cluster,
                d_input=args.d_input, d_hidden=args.d_hidden, steps=args.steps)
    for p13n, scaling, lr in settings:
        gm.GMConfig(**base, lr=lr, parameterization=p13n, input_scaling=scaling).validate_flags()
    import jax  # after the flags: --help and bad flags answer before jax loads

    result = _load(path) if path.exists() else {
        "host": platform.node(), "cpus": os.cpu_count(), "backend": jax.default_backend(),
        "jax": jax.__version__, "blocks": []}
    for p13n, scaling, lr in settings:
        for vary in args.vary:
            config = {**base, "lr": lr, "parameterization": p13n, "input_scaling": scaling,
                      "seeds": args.seeds, "sigma2": list(args.sigma2), "values": list(args.values)}
            if any(b["vary"] == vary and b["config"] == config for b in result["blocks"]):
                print(f"skip {p13n}/{scaling} lr {lr:g} {vary}: already in {path}")
                continue
            cfg = gm.GMConfig(**base, lr=lr, parameterization=p13n, input_scaling=scaling)
            load_before, t0 = os.getloadavg(), time.time()
            records = gm.run_study(vary, cfg, range(args.seeds), values=args.values,
                                   sigma2s=args.sigma2, batch_size=args.batch_size)
            wall = time.time() - t0
            warning, error = gm.divergence_report(records)
            if warning:
                print(f"warning: {p13n}/{scaling} lr {lr:g} {vary}: {warning}", file=sys.stderr)
            result["blocks"].append({
                "vary": vary, "config": config, "records": records, "wall_time_s": round(wall, 1),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()]})
            atomic_write_json(path, result)
            print(f"{p13n}/{scaling} lr {lr:g} {vary}: {len(records)} records in {wall:.0f} s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    table = markdown_table(result["blocks"])
    atomic_write_text(out / "width_study.md", table)
    plot_blocks(result["blocks"], out / "width_study.png")
    print(table)
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))
