"""Gaussian-mixture sweep: one vmapped jit vs a Python loop of jitted single runs.

The same sweep (seeds x sigma2 grid, full-batch GD on the App. B mixture) is timed
(a) as ``gaussian_mixture.run_sweep`` -- every run vmapped inside one jit -- and
(b) as a Python loop over seeds and sigma2 calling ``run_single_jit`` (compiled once),
side by side in one process; compile time (first call) is reported apart from the
steady-state time (later calls, mean +- std over --repeats): the "first call" column is
compile plus one execution (the whole sweep for (a), one run for (b)). A plain NumPy float32
single run (same model, data and updates) is timed as a reference. The MSDR of the two
JAX paths is compared run by run.

Usage (small widths, d = 64):
  python benchmarks/gm_sweep_bench.py [--parameterization mup] [--input-scaling rms] [--lr 0.5]
Paper size (meant for a GPU):
  python benchmarks/gm_sweep_bench.py --d-input 512 --d-hidden 512 --seeds 10 \
      --sigma2 0 0.25 0.5 1 2 4 8 16 32 64
"""

from __future__ import annotations

import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax import gaussian_mixture as gm
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.io import atomic_write_json
from ncfine_jax.metrics import class_distance_matrix, msdr


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t, out


def _fmt(ts):
    ts = np.asarray(ts)
    return f"{ts.mean():8.2f} ± {ts.std():5.2f}" if ts.size > 1 else f"{ts.mean():8.2f}        "


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-input", type=int, default=64)
    p.add_argument("--d-hidden", type=int, default=64)
    p.add_argument("--samples-per-cluster", type=int, default=500)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=4, help="number of seeds")
    p.add_argument("--sigma2", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 8.0, 32.0])
    p.add_argument("--parameterization", default=gm.DEFAULT_PARAMETERIZATION,
                   help=f"one of {', '.join(gm.PARAMETERIZATIONS)}")
    p.add_argument("--input-scaling", default=gm.DEFAULT_INPUT_SCALING,
                   help=f"one of {', '.join(gm.INPUT_SCALINGS)}")
    p.add_argument("--lr", type=float, default=None,
                   help="GD step size (default: the parameterisation's default)")
    p.add_argument("--repeats", type=int, default=2, help="steady-state repeats per path")
    p.add_argument("--batch-size", type=int, default=None,
                   help="runs vmapped at once in path (a) (default: all of them)")
    p.add_argument("--skip-numpy", action="store_true", help="skip the NumPy reference run")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.seeds <= 0 or args.repeats <= 0:
        raise ConfigError("--seeds/--repeats: must be positive integers")
    if not args.sigma2:
        raise ConfigError("--sigma2: empty grid")
    cfg = gm.GMConfig(samples_per_cluster=args.samples_per_cluster, d_input=args.d_input,
                      d_hidden=args.d_hidden, steps=args.steps, lr=args.lr,
                      parameterization=args.parameterization,
                      input_scaling=args.input_scaling).validate_flags()
    seeds = list(range(args.seeds))
    runs = len(seeds) * len(args.sigma2)
    print(f"# host {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; jax {jax.__version__} backend={jax.default_backend()} "
          f"devices={jax.devices()}")
    print(f"# sweep: {len(seeds)} seeds x {len(args.sigma2)} sigma2 = {runs} runs; "
          f"n={cfg.num_clusters * cfg.samples_per_cluster}, d_input={cfg.d_input}, "
          f"d_hidden={cfg.d_hidden}, {cfg.steps} full-batch GD steps; "
          f"{cfg.parameterization} parameterisation, inputs {cfg.input_scaling}, "
          f"lr {cfg.learning_rate:g}")

    # (a) one vmapped jit
    def sweep():
        return gm.run_sweep(cfg, seeds, args.sigma2, batch_size=args.batch_size)

    t_first_v, _ = _timed(sweep)
    tv, vm = [], None
    for _ in range(args.repeats):
        t, vm = _timed(sweep)
        tv.append(t)

    # (b) Python loop over seeds x sigma2 of the jitted single run
    t_first_l, _ = _timed(lambda: gm.run_single_jit(cfg, seeds[0], args.sigma2[0]))

    def loop():
        return np.array([[gm.run_single_jit(cfg, s, s2)["msdr"] for s in seeds]
                         for s2 in args.sigma2])

    tl, looped = [], None
    for _ in range(args.repeats):
        t, looped = _timed(loop)
        tl.append(t)
    max_diff = float(np.max(np.abs(looped - vm["msdr"]) / np.abs(vm["msdr"])))

    # NumPy float32 reference: one run (seed 0, the last sigma2 of the grid)
    t_np, np_msdr, jax_msdr = None, None, None
    if not args.skip_numpy:
        s2 = args.sigma2[-1]
        data_key, init_key = jax.random.split(jax.random.key(seeds[0]))
        x, clusters, coarse = gm.make_gaussian_mixture(
            data_key, cfg.num_clusters, cfg.samples_per_cluster, cfg.d_input, s2)
        params0 = {k: np.asarray(v) for k, v in
                   gm.init_mlp(init_key, cfg.d_input, cfg.d_hidden, cfg.num_clusters // 2,
                               cfg.parameterization).items()}
        x, coarse = np.asarray(x), np.asarray(coarse)
        t0 = time.perf_counter()
        _, hidden = gm.numpy_reference_run(cfg, x, coarse, params0, dtype=np.float32)
        t_np = time.perf_counter() - t0
        sup = jnp.asarray(gm.coarse_of_cluster(cfg.num_clusters))
        np_msdr = float(msdr(class_distance_matrix(hidden, np.asarray(clusters), cfg.num_clusters), sup))
        jax_msdr = float(vm["msdr"][-1, 0])

    mean_v, mean_l = float(np.mean(tv)), float(np.mean(tl))
    print()
    print(f"| path | first call s (compile + run) | steady s (mean ± std over {args.repeats}) | s / run |")
    print("|---|---|---|---|")
    bs = "all" if args.batch_size is None else args.batch_size
    print(f"| vmapped, one jit (batch {bs}) | {t_first_v:.2f} | {_fmt(tv)} | {mean_v / runs:.3f} |")
    print(f"| Python loop of jitted single runs | {t_first_l:.2f} | {_fmt(tl)} | {mean_l / runs:.3f} |")
    if t_np is not None:
        print(f"| NumPy float32, one run | - | {t_np:8.2f}         | {t_np:.3f} |")
    print()
    print(f"loop / vmapped steady-state time ratio: {mean_l / mean_v:.2f}x")
    print(f"max relative MSDR difference, vmapped vs looped: {max_diff:.2e}")
    if t_np is not None:
        print(f"NumPy one run / JAX vmapped per-run time: {t_np / (mean_v / runs):.2f}x; "
              f"MSDR NumPy {np_msdr:.4f} vs JAX {jax_msdr:.4f} (sigma2={args.sigma2[-1]:g}, seed 0)")
    result = {"config": vars(args), "lr_used": cfg.learning_rate, "runs": runs, "vmapped_first_call_s": t_first_v,
              "vmapped_s": tv, "loop_first_call_s": t_first_l, "loop_s": tl,
              "ratio_loop_over_vmapped": mean_l / mean_v, "max_rel_msdr_diff": max_diff,
              "numpy_single_run_s": t_np, "numpy_msdr": np_msdr, "jax_msdr": jax_msdr,
              "backend": jax.default_backend(), "cpus": os.cpu_count()}
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))
