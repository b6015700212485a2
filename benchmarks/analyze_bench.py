"""Time and peak memory of ``python -m ncfine_jax.analyze`` on large synthetic features.

Run: ``python benchmarks/analyze_bench.py [--n 200000 --n-test 20000 --d 512 --classes 10
--num-coarse 5 --clp-max-tsne-points 2000] [--workdir DIR]``

Writes the features as memory-mappable ``.npy`` files chunk by chunk (so this process
never holds them), then runs the analysis command in a child process and reports its
wall time, the stage timings from ``results.json`` and the child's peak resident
memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``; file pages of the memory-mapped
features that were read count in it). Features: one Gaussian cluster per class,
classes ``k`` and ``k + num_coarse`` merged into training label ``k mod num_coarse``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_features(folder: Path, n: int, n_test: int, d: int, classes: int, num_coarse: int,
                   seed: int, chunk: int = 20_000) -> None:
    """``train_*.npy`` / ``test_*.npy`` written in row chunks through ``open_memmap``."""
    rng = np.random.default_rng(seed)
    means = (rng.normal(size=(classes, d)) * 0.5).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", n), ("test", n_test)):
        feats = np.lib.format.open_memmap(folder / f"{split}_features.npy", mode="w+",
                                          dtype=np.float32, shape=(rows, d))
        cls = (np.arange(rows) % classes).astype(np.int32)
        rng.shuffle(cls)
        for lo in range(0, rows, chunk):
            c = cls[lo : lo + chunk]
            feats[lo : lo + chunk] = means[c] + rng.standard_normal((c.size, d), dtype=np.float32)
        feats.flush()
        del feats
        np.save(folder / f"{split}_classes.npy", cls)
        np.save(folder / f"{split}_labels.npy", (cls % num_coarse).astype(np.int32))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="training samples")
    p.add_argument("--n-test", type=int, default=20_000, help="test samples")
    p.add_argument("--d", type=int, default=512, help="feature dimension")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--num-coarse", type=int, default=5)
    p.add_argument("--clp-max-tsne-points", type=int, default=2000)
    p.add_argument("--clp-reduce", default="tsne", choices=("tsne", "pca", "none"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where features and outputs go (default: a temp dir)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        feats, out = root / "features", root / "analysis"
        t0 = time.perf_counter()
        write_features(feats, args.n, args.n_test, args.d, args.classes, args.num_coarse, args.seed)
        print(f"features written in {time.perf_counter() - t0:.1f} s: {feats}", flush=True)
        load0 = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "ncfine_jax.analyze", str(feats), "--out", str(out),
               "--num-coarse", str(args.num_coarse), "--clp-reduce", args.clp_reduce,
               "--clp-max-tsne-points", str(args.clp_max_tsne_points), "--seed", str(args.seed)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        res = json.loads((out / "results.json").read_text())
        timings = res["analysis"]["timings_s"]
        data_mib = (args.n + args.n_test) * args.d * 4 / 2**20
        print(proc.stdout.strip())
        print(f"\n{cpu_name()}, {len(os.sched_getaffinity(0))} cores; load average {load0:.1f} at start, "
              f"{load1:.1f} at end")
        print("| n train x d (test) | features on disk | wall (command) | NC metrics | LPO | CLP | figures "
              "| peak RSS | CLP | LPO |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.n:,} x {args.d} ({args.n_test:,}) | {data_mib:,.0f} MiB | {wall:.1f} s | "
              f"{timings.get('nc_metrics', 0):.1f} s | {timings.get('lpo', 0):.1f} s | {timings.get('clp', 0):.1f} s | "
              f"{timings.get('figures', 0):.1f} s | {peak_mib:,.0f} MiB | {res['clp_accuracy']:.3f} | "
              f"{res['lpo_accuracy']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
