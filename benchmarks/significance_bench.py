"""What the fine-structure test costs inside one analysis.

Run: ``python benchmarks/significance_bench.py [--n 50000 --d 512] [--quick]
[--reduce tsne --max-tsne-points 2000] [--permutations N --bootstrap N]``

One ``analyze_features`` call (one epoch, no figures) per size on synthetic
Coarse-CIFAR-10-like features (10 classes, 5 labels, classes of a label slightly apart),
timed step by step from ``results["analysis"]["timings_s"]``; prints a table with the
significance share. Sizes: 5,000 x 128 and ``--n x --d`` (only the first with ``--quick``).
"""

from __future__ import annotations

import platform
import tempfile

import numpy as np


def _features(n: int, n_test: int, d: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(10, d)) * 0.15
    means[5:] = means[:5] + rng.normal(size=(5, d)) * 0.05  # class c + 5 shares label c
    out = {}
    for split, size in (("train", n), ("test", n_test)):
        c = np.arange(size) % 10
        out[f"{split}_features"] = (means[c] + rng.normal(size=(size, d))).astype(np.float32)
        out[f"{split}_classes"], out[f"{split}_labels"] = c, c % 5
    return out


def _one(n: int, d: int, args, options) -> dict:
    from ncfine_jax.analysis.options import AnalysisOptions
    from ncfine_jax.analysis.pipeline import analyze_features

    with tempfile.TemporaryDirectory() as out:
        r = analyze_features(_features(n, n // 5, d), out, num_coarse=5, options=AnalysisOptions(
            reduce=args.reduce, max_tsne_points=args.max_tsne_points, make_figures=False,
            significance=options))
    t = r["analysis"]["timings_s"]
    return {"n": n, "d": d, "timings": t, "rest": t["total"] - t["significance"],
            "verdict": r["fine_structure"]["verdict"], "p": r["fine_structure"]["p_value"]}


def main(argv=None) -> int:
    import jax

    from ncfine_jax.analysis.options import SignificanceOptions
    from ncfine_jax.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="training samples of the large size")
    p.add_argument("--d", type=int, default=512, help="feature dimension of the large size")
    p.add_argument("--quick", action="store_true", help="only the small size (n 5,000, d 128)")
    p.add_argument("--reduce", default="tsne", choices=("tsne", "pca", "none"))
    p.add_argument("--max-tsne-points", type=int, default=2000)
    p.add_argument("--permutations", type=int, default=SignificanceOptions.permutations)
    p.add_argument("--bootstrap", type=int, default=SignificanceOptions.bootstrap)
    args = p.parse_args(argv)
    if args.n < 100 or args.d < 1:
        p.error("--n must be >= 100 and --d >= 1")
    sizes = [(5000, 128)] + ([] if args.quick else [(args.n, args.d)])

    print(f"host: {platform.processor() or platform.machine()}, jax {jax.__version__} backend "
          f"{jax.default_backend()}; 10 classes in 5 labels, CLP reduce {args.reduce} "
          f"(t-SNE on <= {args.max_tsne_points} points per label), {args.permutations} "
          f"permutations, {args.bootstrap} bootstrap resamples, no figures")
    options = SignificanceOptions(permutations=args.permutations, bootstrap=args.bootstrap)
    rows = [_one(n, d, args, options) for n, d in sizes]
    print("| n x d | analysis without significance (s) | significance (s) | significance / analysis "
          "| steps (s) | verdict |\n|---|---|---|---|---|---|")
    for r in rows:
        t = r["timings"]
        steps = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k not in ("total", "significance"))
        print(f"| {r['n']:,} x {r['d']} | {r['rest']:.1f} | {t['significance']:.1f} | "
              f"{t['significance'] / r['rest']:.1%} | {steps} | {r['verdict']} (p = {r['p']:.3g}) |")
    return 0


if __name__ == "__main__":
    from ncfine_jax.cli import run_main

    raise SystemExit(run_main(main))
