"""Timings behind the analysis defaults: probe solver and t-SNE backend.

Run: ``python benchmarks/analysis_bench.py [--n 50000 --d 512 --classes 10]
[--tsne-n 10000] [--repeats 2] [--skip-tsne]``

Prints mean ± std wall seconds over repeats on whatever JAX backend is active.
Features are a synthetic Gaussian mixture (classes overlap, as real features do)
so the probe needs a realistic number of iterations.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def _mixture(n: int, n_test: int, d: int, classes: int, seed: int):
    """Train and test draws from one Gaussian mixture (overlapping classes)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, d)) * 0.15
    y = rng.integers(0, classes, size=n + n_test)
    x = (means[y] + rng.normal(size=(n + n_test, d))).astype(np.float32)
    y = y.astype(np.int32)
    return x[:n], y[:n], x[n:], y[n:]


def _time(fn, repeats: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.mean(times)), float(np.std(times)), out


def main(argv=None) -> int:
    import jax

    from ncfine_jax.analysis.embedding import tsne
    from ncfine_jax.analysis.probe import fit_linear_probe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--tsne-n", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-tsne", action="store_true")
    args = p.parse_args(argv)

    print(f"host: {platform.processor() or platform.machine()}, jax backend: "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind})")
    x, y, xt, yt = _mixture(args.n, 10_000, args.d, args.classes, 0)
    print(f"probe: n={args.n} d={args.d} classes={args.classes}, tol=1e-5, C=1")
    t0 = time.perf_counter()
    fit_linear_probe(x, y, solver="jax")
    print(f"  jax first call (incl. compile): {time.perf_counter() - t0:.2f} s")
    for solver in ("jax", "sklearn"):
        m, s, probe = _time(lambda: fit_linear_probe(x, y, solver=solver), args.repeats)
        print(f"  {solver:8s}: {m:.2f} ± {s:.2f} s  iters={probe.n_iter} "
              f"converged={probe.converged} test_acc={probe.accuracy(xt, yt):.4f}")

    # scikit-learn keeps float32 input in float32 for lbfgs; time that too, so the
    # comparison is not just float64 against float32.
    from sklearn.linear_model import LogisticRegression

    z = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    m, s, model = _time(lambda: LogisticRegression(C=1.0, tol=1e-5, max_iter=1000).fit(z, y),
                        args.repeats)
    print(f"  sklearn float32 input: {m:.2f} ± {s:.2f} s  iters={int(np.max(model.n_iter_))}")

    if not args.skip_tsne:
        xs = x[: args.tsne_n]
        print(f"t-SNE: n={args.tsne_n} d={args.d} (PCA to 50 dims first)")
        for backend in ("opentsne", "sklearn"):
            try:
                m, s, _ = _time(lambda: tsne(xs, seed=0, backend=backend), 1)
            except ImportError as e:
                print(f"  {backend:8s}: unavailable ({e})")
                continue
            print(f"  {backend:8s}: {m:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
