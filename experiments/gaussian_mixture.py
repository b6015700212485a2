"""Gaussian-mixture MLP study (paper App. B / B.1, Figs. 18-21): MSDR of the hidden layer.

Each invocation runs one figure's sweep (every grid point x seed vmapped inside one jit;
one jit per value when a shape is varied) and writes ``DIR/results.json`` and
``DIR/gaussian_mixture_<vary>.png``. ``--parameterization`` (``mup`` by default,
``standard`` = PyTorch ``nn.Linear`` defaults, ``ntk``), ``--input-scaling`` (``rms`` by
default, or ``none``) and ``--lr`` select the training setting; see
``ncfine_jax.gaussian_mixture.model`` and docs/gaussian_mixture.md.

Runs whose loss or MSDR is not finite, or whose final loss is above the initial one,
count as diverged: they are left out of the means, counted per grid point in the records
and summed up in one ``warning:`` line; if every seed of some grid point diverged, the
results are still written (``config.all_seeds_diverged``) and the script exits with status
2 and one ``error:`` line naming the points.

Usage (paper sizes, defaults: 8 x 500 samples, d_input = d_hidden = 512, 1,000 GD steps,
10 seeds):
  python experiments/gaussian_mixture.py --vary d_input --out runs/gm/fig18
  python experiments/gaussian_mixture.py --vary tau2 --sigma2 4 --out runs/gm/fig21
Smaller sweep:
  python experiments/gaussian_mixture.py --vary d_hidden --values 64 128 256 512 \
      --d-input 256 --d-hidden 256 --samples-per-cluster 100 --seeds 3 --out runs/gm_small/fig19
All four figures: experiments/gaussian_mixture_figures.sh [--quick | --reduced] [OUT_ROOT].
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

from ncfine_jax import gaussian_mixture as gm
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment.config import check_int_range, check_nonempty
from ncfine_jax.gaussian_mixture.config import SIZE_MAX
from ncfine_jax.io import atomic_write_json, read_json

FIGURE_OF_VARY = {"d_input": 18, "d_hidden": 19, "weight_decay": 20, "tau2": 21}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vary", default=None, help=f"one of {', '.join(gm.VARY_CHOICES)} (required)")
    p.add_argument("--values", type=float, nargs="+", default=None,
                   help="values of the varied parameter (for sigma2/tau2: the x-axis grid)")
    p.add_argument("--sigma2", type=float, nargs="+", default=None,
                   help="sigma2 grid (x-axis); with --vary tau2 the one fixed sigma2 (default 4)")
    p.add_argument("--tau2", type=float, nargs="+", default=None,
                   help="tau2 grid for --vary tau2 (when --values is not given)")
    p.add_argument("--d-input", type=int, default=512, help="input dimension")
    p.add_argument("--d-hidden", type=int, default=512, help="hidden width (representation dim)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay: every parameter shrinks by lr * this per step")
    p.add_argument("--steps", type=int, default=1000, help="full-batch GD steps")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (0 .. N-1)")
    p.add_argument("--parameterization", default=gm.DEFAULT_PARAMETERIZATION,
                   help=f"one of {', '.join(gm.PARAMETERIZATIONS)} (see docs/gaussian_mixture.md; "
                        f"default {gm.DEFAULT_PARAMETERIZATION})")
    p.add_argument("--input-scaling", default=gm.DEFAULT_INPUT_SCALING,
                   help=f"one of {', '.join(gm.INPUT_SCALINGS)}: raw inputs or divided by their "
                        f"global RMS entry (default {gm.DEFAULT_INPUT_SCALING})")
    p.add_argument("--lr", type=float, default=None,
                   help="GD step size (default: the parameterisation's, "
                        + ", ".join(f"{a}/{b}: {v:g}" for (a, b), v in gm.DEFAULT_LRS.items()) + ")")
    p.add_argument("--num-clusters", type=int, default=8, help="clusters C (superclasses C/2)")
    p.add_argument("--samples-per-cluster", type=int, default=500, help="samples per cluster")
    p.add_argument("--batch-size", type=int, default=None,
                   help="runs vmapped at once (default: a whole sweep; lower to save memory)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the PNG from an existing OUT/results.json (no runs)")
    return p


def _title(cfg: dict) -> str:
    fig = FIGURE_OF_VARY.get(cfg["vary"])
    setting = (f"; {cfg['parameterization']} parameterisation, inputs {cfg['input_scaling']}, "
               f"lr {cfg['lr']:g}" if "input_scaling" in cfg else "")
    return (f"{'Fig. %d layout: ' % fig if fig else ''}vary {cfg['vary']}{setting}\n"
            f"n={cfg['num_clusters'] * cfg['samples_per_cluster']}, "
            f"d_in={cfg['d_input']}, d_h={cfg['d_hidden']}, "
            f"{'' if cfg['vary'] == 'weight_decay' else 'wd=%g, ' % cfg['weight_decay']}"
            f"{cfg['steps']} steps, {cfg['seeds']} seeds")


def _replot(out: Path) -> dict:
    path = out / "results.json"
    try:
        result = read_json(path)
        records, cfg = result["records"], result["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--out: cannot read records from {path} ({type(e).__name__})") from None
    png = gm.plot_records(records, out / f"gaussian_mixture_{cfg['vary']}.png", _title(cfg))
    print(f"redrew {png} from {len(records)} records")
    return result


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    check_nonempty("--out", args.out)
    if args.replot:
        return _replot(Path(args.out))
    if args.vary is None:
        raise ConfigError("--vary: required (or --replot)")
    if args.vary not in gm.VARY_CHOICES:
        raise ConfigError(f"--vary: unknown {args.vary!r}; choose from {', '.join(gm.VARY_CHOICES)}")
    check_int_range("--seeds", args.seeds, 1, SIZE_MAX)
    check_int_range("--batch-size", args.batch_size, 1, SIZE_MAX)
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ConfigError(f"--weight-decay: must be a finite number >= 0, got {args.weight_decay}")
    for flag in ("values", "sigma2", "tau2"):
        if getattr(args, flag) is not None and len(getattr(args, flag)) == 0:
            raise ConfigError(f"--{flag}: empty grid")
    config = gm.GMConfig(num_clusters=args.num_clusters,
                         samples_per_cluster=args.samples_per_cluster,
                         d_input=args.d_input, d_hidden=args.d_hidden, steps=args.steps,
                         lr=args.lr, parameterization=args.parameterization,
                         input_scaling=args.input_scaling)
    config.validate_flags()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")

    import jax  # after the flags: --help and bad flags answer before jax loads

    t0 = time.time()
    records = gm.run_study(args.vary, config, range(args.seeds), values=args.values,
                           sigma2s=args.sigma2, tau2s=args.tau2,
                           weight_decay=args.weight_decay, batch_size=args.batch_size)
    wall = time.time() - t0
    warning, error = gm.divergence_report(records)
    result = {
        "config": {
            "vary": args.vary,
            # effective grids (defaults filled in), as run
            "values": sorted({r["value"] for r in records}),
            "sigma2": sorted({r["sigma2"] for r in records}),
            "tau2": sorted({r["tau2"] for r in records}) if args.vary == "tau2" else None,
            "d_input": args.d_input, "d_hidden": args.d_hidden,
            "weight_decay": args.weight_decay, "steps": args.steps, "seeds": args.seeds,
            "lr": config.learning_rate, "num_clusters": args.num_clusters,
            "samples_per_cluster": args.samples_per_cluster,
            "parameterization": config.parameterization, "input_scaling": config.input_scaling,
            "similar_superclasses": list(gm.similar_superclasses(args.num_clusters)),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "host": platform.node(), "jax": jax.__version__, "wall_time_s": round(wall, 2),
            "diverged_runs": sum(r["diverged"] for r in records if r["subclasses"] == "all"),
            "all_seeds_diverged": error is not None,
        },
        "records": records,
    }
    atomic_write_json(out / "results.json", result)
    png = gm.plot_records(records, out / f"gaussian_mixture_{args.vary}.png",
                          _title(result["config"]))
    print(f"{len(records)} records in {wall:.1f} s -> {out / 'results.json'}, {png}")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if error:
        raise ConfigError(f"--lr {config.learning_rate:g}: {error} (results written to "
                          f"{out / 'results.json'} with msdr_mean null there)")
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))
