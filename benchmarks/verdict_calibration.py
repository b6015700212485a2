"""How often the structure verdict says "holds" when there is no fine structure (its false-
positive rate) and when there is (its power), through the project's own functions.

Every data set is a coarse problem (10 classes merged into 5 labels, class y -> label y mod
5) analysed by ``analysis.pipeline.analyze`` (CLP on PCA, the permutation tests and their
bootstrap intervals) and decided as the whole-paper structure claims decide
(``paper.claims.gates.structure_tests`` -> ``verdicts.decide``):

  python benchmarks/verdict_calibration.py [--nulls 200] [--power-reps 40] [--seed 0]

Null families (the two classes of a label come from one distribution): isotropic Gaussian;
anisotropic with t(3) tails; unequal class sizes; collapsed features (tiny spread);
a label-internal mixture unrelated to the classes (each label is two clusters, but the
classes are assigned to samples at random). Power: the two classes of a label apart by a
shift of ``delta`` noise standard deviations along one axis of their own. Prints the
counts of each verdict and the rate of "holds" with its 95% Clopper-Pearson interval.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

LABELS, CLASSES, DIM = 5, 10, 16


def features(kind: str, n_per_class: int, rng: np.random.Generator, delta: float = 0.0):
    """One data set: train and test arrays of a coarse problem (``kind``: a null family,
    or "planted" with the classes of a label ``delta`` apart)."""
    def split(n):
        sizes = np.full(CLASSES, n)
        if kind == "unequal sizes":
            sizes = np.where(np.arange(CLASSES) < 5, n // 2, 2 * n - n // 2)
        c = np.repeat(np.arange(CLASSES), sizes)
        y = c % LABELS
        noise = (rng.standard_t(3, size=(c.size, DIM)) * np.linspace(0.3, 2.0, DIM)
                 if kind == "anisotropic t(3)" else rng.normal(size=(c.size, DIM)))
        if kind == "collapsed":
            noise *= 1e-3
        x = 4 * np.eye(DIM)[y] + noise
        if kind == "label mixture":  # two clusters per label, classes at random
            x += 2.5 * np.eye(DIM)[LABELS + rng.integers(0, 2, c.size)]
        if kind == "planted":
            x += delta * np.eye(DIM)[LABELS + c // LABELS]
        return x.astype(np.float32), y, c

    x, y, c = split(n_per_class)
    xt, yt, ct = split(max(4, n_per_class // 2))
    return {"train_features": x, "train_labels": y, "train_classes": c,
            "test_features": xt, "test_labels": yt, "test_classes": ct}


def verdict(data: dict, permutations: int, bootstrap: int, seed: int) -> str:
    from ncfine_jax.analysis.options import AnalysisOptions, SignificanceOptions
    from ncfine_jax.analysis.pipeline import analyze
    from ncfine_jax.paper.claims.gates import structure_tests
    from ncfine_jax.paper.claims.verdicts import decide

    options = AnalysisOptions(reduce="pca", seed=seed, make_figures=False,
                              significance=SignificanceOptions(permutations=permutations,
                                                               bootstrap=bootstrap, seed=seed))
    fs = analyze({1: data}, num_coarse=LABELS, options=options).results.fine_structure
    return decide(structure_tests(fs))


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def row(name: str, verdicts: list[str]) -> str:
    from ncfine_jax.paper.claims.verdicts import FAILS, HOLDS, UNINFORMATIVE

    n, k = len(verdicts), verdicts.count(HOLDS)
    lo, hi = clopper_pearson(k, n)
    return (f"| {name} | {n} | {k} | {verdicts.count(FAILS)} | {verdicts.count(UNINFORMATIVE)} | "
            f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nulls", type=int, default=200, help="null data sets in all (default 200)")
    p.add_argument("--power-reps", type=int, default=40, help="data sets per separation")
    p.add_argument("--separations", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0])
    p.add_argument("--n-per-class", type=int, default=40, help="training samples per class")
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    families = ("isotropic", "anisotropic t(3)", "unequal sizes", "collapsed", "label mixture")
    header = ("| data sets | n | holds | does not hold | uninformative | rate of holds [95% CI] |\n"
              "|---|---|---|---|---|---|")
    started = time.perf_counter()
    print(f"Null data sets ({args.n_per_class} training samples per class, d = {DIM}, "
          f"{args.permutations} permutations, {args.bootstrap} bootstrap resamples):")
    print(header)
    everything = []
    for i, kind in enumerate(families):
        count = args.nulls // len(families) + (i < args.nulls % len(families))
        out = [verdict(features(kind, args.n_per_class, rng), args.permutations,
                       args.bootstrap, args.seed + 1000 * i + j) for j in range(count)]
        everything += out
        print(row(kind, out), flush=True)
    print(row("all null data sets (false-positive rate)", everything))
    print("\nPower (the classes of a label `delta` noise SDs apart):")
    print(header.replace("data sets", "delta"))
    for delta in args.separations:
        out = [verdict(features("planted", args.n_per_class, rng, delta), args.permutations,
                       args.bootstrap, args.seed + 10_000 + j) for j in range(args.power_reps)]
        print(row(f"{delta:g}", out), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
