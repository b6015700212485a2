"""Benchmark: ncfine_jax.metrics (D, MSDR, NC1, NC2) vs naive NumPy, two problem sizes.

Command (from the repo root):
    python benchmarks/metrics_bench.py                 # both sizes
    python benchmarks/metrics_bench.py --sizes 50000x512x10 --out bench.json

Sizes are n x d x C (samples x feature dim x classes); defaults are
50,000 x 512 x 10 (ResNet-18 on CIFAR-10) and 50,000 x 2048 x 100. Features are
synthetic Gaussian clusters in float32, already on the device for ncfine_jax (as
after a forward pass); the NumPy baselines get the same array on the host.

Naive baselines (what public code does):
- D: blocked pairwise squared distances ``|a|^2 + |b|^2 - 2 a.b`` (float32 GEMM over
  row blocks of the class-sorted data), summed per class pair. If it is not done
  after ``--naive-d-budget-s`` seconds it stops after the current row block and
  extrapolates linearly (every row block does the same work: a [b, d] x [d, n]
  product); the output and the table then say "extrap." and from what fraction.
- MSDR: from the naive D (loops over class pairs; on our D when the naive D was
  extrapolated, since MSDR itself only reads the C x C matrix).
- NC1: d x d Sigma_W and Sigma_B, ``np.linalg.pinv(Sigma_B)`` (default tolerance), in
  float64 (in float32 the default tolerance keeps rounding noise and NC1 is garbage).
- NC2: class means by boolean masks, Gram matrix vs simplex ETF.

ncfine_jax timings call the public functions (input validation included) after a
warm-up call; the first call (tracing + compilation + one run) is shown apart. "all four" times
``neural_collapse_metrics`` (one fused call) next to the sum of the four calls.
The README holds the measured table.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax import metrics
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.io import atomic_write_json

# ---------------------------------------------------------------------------------------
# Naive NumPy baselines
# ---------------------------------------------------------------------------------------


def naive_means(x: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    return np.stack([x[y == k].mean(0) for k in range(c)])


def naive_distance_matrix(
    x: np.ndarray, y: np.ndarray, c: int, block: int, budget_s: float
) -> tuple[np.ndarray | None, float, float]:
    """Blocked pairwise D. Returns (D or None if cut short, seconds, fraction done)."""
    t0 = time.perf_counter()
    order = np.argsort(y, kind="stable")
    xs, ys = x[order], y[order]
    starts = np.searchsorted(ys, np.arange(c))  # class-contiguous columns
    counts = np.bincount(ys, minlength=c).astype(np.float64)
    sq = np.einsum("ij,ij->i", xs, xs)
    sums = np.zeros((c, c))
    n = len(xs)
    done = 0
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        dist = sq[lo:hi, None] + sq[None, :] - 2.0 * (xs[lo:hi] @ xs.T)  # [b, n] pairwise
        col_sums = np.add.reduceat(dist, starts, axis=1)  # [b, C] per column class
        np.add.at(sums, ys[lo:hi], col_sums)
        done = hi
        elapsed = time.perf_counter() - t0
        if done < n and elapsed > budget_s:
            return None, elapsed, done / n
    return sums / np.outer(counts, counts), time.perf_counter() - t0, 1.0


def naive_msdr(d: np.ndarray, s: np.ndarray) -> float:
    c = len(s)
    within = [d[i, j] for i in range(c) for j in range(c) if i != j and s[i] == s[j]]
    return float(np.mean(within) / np.mean(np.diag(d)))


def naive_nc1(x: np.ndarray, y: np.ndarray, c: int) -> float:
    # float64: in float32, pinv's default rcond (1e-15) keeps the rounding-noise
    # eigenvalues of the rank-(C-1) Sigma_B and NC1 comes out as garbage (~ -1e6).
    x = x.astype(np.float64)
    mu = naive_means(x, y, c)
    dim = x.shape[1]
    sigma_w = np.zeros((dim, dim), x.dtype)
    for k in range(c):
        dev = x[y == k] - mu[k]
        sigma_w += dev.T @ dev / len(dev)
    sigma_w /= c
    m = mu - x.mean(0)
    sigma_b = m.T @ m / c
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / c)


def naive_nc2(x: np.ndarray, y: np.ndarray, c: int) -> float:
    m = naive_means(x, y, c) - x.mean(0)
    g = m @ m.T
    etf = (np.eye(c) - 1.0 / c) / np.sqrt(c - 1)
    return float(np.linalg.norm(g / np.linalg.norm(g) - etf))


# ---------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------


def _block(out):
    return jax.block_until_ready(out)


def time_jax(fn: Callable[[], object], repeats: int) -> dict:
    t0 = time.perf_counter()
    first = _block(fn())
    first_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        _block(fn())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    mean = float(np.mean(times))
    return {
        "mean_s": mean,
        "std_s": float(np.std(times)),
        # CPU time of this process (all threads): less sensitive than wall time to
        # other jobs on a shared machine; ~2x wall time when both cores are ours.
        "cpu_s": float(np.mean(cpu)),
        "first_s": first_s,  # includes tracing + XLA compilation
        "repeats": repeats,
        "value": first,
    }


def time_numpy(fn: Callable[[], object], repeats: int, cap_s: float) -> dict:
    """Up to ``repeats`` timed calls, stopping early once ``cap_s`` seconds are spent."""
    times, cpu, value = [], [], None
    while len(times) < repeats and (not times or sum(times) < cap_s):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"mean_s": float(np.mean(times)), "std_s": float(np.std(times)), "cpu_s": float(np.mean(cpu)),
            "repeats": len(times), "value": value}


def fmt_time(rec: dict | None) -> str:
    if rec is None:
        return "-"
    mean, std = rec["mean_s"], rec.get("std_s", 0.0)
    if rec.get("extrapolated"):
        return f"{mean:.3g} s (extrap.)"
    if rec.get("total"):
        return f"{mean:.3g} s" if mean >= 1.0 else f"{mean * 1e3:.1f} ms"
    if rec.get("repeats") == 1:
        return f"{mean:.1f} s (1 run)" if mean >= 1.0 else f"{mean * 1e3:.1f} ms (1 run)"
    if mean >= 1.0:
        return f"{mean:.2f} ± {std:.2f} s"
    return f"{mean * 1e3:.1f} ± {std * 1e3:.1f} ms"


def fmt_cpu(rec: dict | None) -> str:
    if rec is None or "cpu_s" not in rec:
        return "-"
    cpu = rec["cpu_s"]
    return f"{cpu:.2f} s" if cpu >= 1.0 else f"{cpu * 1e3:.1f} ms"


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        n, d, c = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"--sizes: expected NxDxC like 50000x512x10, got {text!r}") from e
    if n < c or d < 1 or c < 2:
        raise ConfigError(f"--sizes: need n >= C >= 2 and d >= 1, got {text!r}")
    return n, d, c


def make_features(n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c).astype(np.int32)
    centres = rng.normal(size=(c, d)).astype(np.float32) * 2.0
    x = rng.standard_normal(size=(n, d), dtype=np.float32)
    x += centres[y]
    return x, y


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def bench_size(n: int, d: int, c: int, args) -> dict:
    print(f"\n== n={n} d={d} C={c} ==", flush=True)
    x_np, y_np = make_features(n, d, c, args.seed)
    s_np = (np.arange(c) // 2).astype(np.int32)  # superclasses of two classes each
    x, y, s = jnp.asarray(x_np), jnp.asarray(y_np), jnp.asarray(s_np)
    _block(x)

    ours = {}
    ours["D"] = time_jax(lambda: metrics.class_distance_matrix(x, y, c), args.repeats)
    dist = ours["D"]["value"]
    ours["MSDR"] = time_jax(lambda: metrics.msdr(dist, s), args.repeats)
    ours["NC1"] = time_jax(lambda: metrics.nc1(x, y, c), args.repeats)
    ours["NC2"] = time_jax(lambda: metrics.nc2(x, y, c), args.repeats)
    ours["all four (fused)"] = time_jax(lambda: metrics.neural_collapse_metrics(x, y, c, s), args.repeats)
    for key, rec in ours.items():
        print(f"  ours  {key:<17} {fmt_time(rec)}  (first call, incl. compile: {rec['first_s']:.2f} s)", flush=True)

    naive = {}
    cap = args.naive_cap_s
    naive["NC2"] = time_numpy(lambda: naive_nc2(x_np, y_np, c), args.naive_repeats, cap)
    print(f"  naive NC2   {fmt_time(naive['NC2'])}", flush=True)
    naive["NC1"] = time_numpy(lambda: naive_nc1(x_np, y_np, c), args.naive_repeats, cap)
    print(f"  naive NC1   {fmt_time(naive['NC1'])}", flush=True)
    d_naive, d_secs, frac = naive_distance_matrix(x_np, y_np, c, args.naive_block, args.naive_d_budget_s)
    if d_naive is None:
        naive["D"] = {"mean_s": d_secs / frac, "std_s": float("nan"), "repeats": 1, "extrapolated": True,
                      "measured_s": d_secs, "fraction": frac, "value": None}
        print(
            f"  naive D     EXTRAPOLATED: {d_secs:.1f} s measured for {frac:.1%} of the pairs "
            f"(first {int(round(frac * n))} of {n} class-sorted rows against all {n}), "
            f"x {1 / frac:.1f} -> {d_secs / frac:.0f} s",
            flush=True,
        )
    else:
        naive["D"] = {"mean_s": d_secs, "std_s": 0.0, "repeats": 1, "value": d_naive}
        print(f"  naive D     {d_secs:.1f} s (1 run, measured in full)", flush=True)
    if d_naive is not None:
        naive["MSDR"] = time_numpy(lambda: naive_msdr(d_naive, s_np), args.naive_repeats, cap)
    else:
        # MSDR's own cost is O(C^2) on D; time it on our D so the row is not empty.
        naive["MSDR"] = time_numpy(lambda: naive_msdr(np.asarray(dist, np.float64), s_np), args.naive_repeats, cap)

    # Agreement of values (sanity; the tests check exactness against float64).
    fused = ours["all four (fused)"]["value"]
    check = {
        "NC1": (float(ours["NC1"]["value"]), naive["NC1"]["value"], float(fused["nc1"])),
        "NC2": (float(ours["NC2"]["value"]), naive["NC2"]["value"], float(fused["nc2"])),
        "MSDR": (float(ours["MSDR"]["value"]), naive["MSDR"]["value"], float(fused["msdr"])),
    }
    if d_naive is not None:
        rel = float(np.max(np.abs(np.asarray(dist) - d_naive)) / np.max(np.abs(d_naive)))
        print(f"  D max rel. difference ours vs naive: {rel:.1e}")
    for k, (a, b, f) in check.items():
        print(f"  {k}: ours {a:.6g}  naive {b:.6g}  fused {f:.6g}")

    rows = []
    total_naive = sum(naive[k]["mean_s"] for k in ("D", "MSDR", "NC1", "NC2"))
    total_ours = sum(ours[k]["mean_s"] for k in ("D", "MSDR", "NC1", "NC2"))
    for k in ("D", "MSDR", "NC1", "NC2"):
        rows.append((k, naive[k], ours[k], naive[k]["mean_s"] / ours[k]["mean_s"], ours[k]["first_s"]))
    rows.append(("sum of four", {"mean_s": total_naive, "total": True, "extrapolated": naive["D"].get("extrapolated")},
                 {"mean_s": total_ours, "total": True, "cpu_s": sum(ours[k]["cpu_s"] for k in ("D", "MSDR", "NC1", "NC2"))},
                 total_naive / total_ours, None))
    fused_rec = ours["all four (fused)"]
    rows.append(("all four (fused)", None, fused_rec, total_naive / fused_rec["mean_s"], fused_rec["first_s"]))
    return {"n": n, "d": d, "C": c, "rows": rows, "naive": naive, "ours": ours, "check": check}


def print_table(results: list[dict], header: str) -> str:
    lines = [header, "", "| n x d x C | metric | naive NumPy | ncfine_jax | speed-up | ncfine_jax CPU time | first call (compile) |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        size = f"{res['n']:,} x {res['d']} x {res['C']}"
        for name, nv, ov, ratio, comp in res["rows"]:
            comp_s = "-" if comp is None else f"{comp:.2f} s"
            ratio_s = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"
            lines.append(f"| {size} | {name} | {fmt_time(nv)} | {fmt_time(ov)} | {ratio_s} | {fmt_cpu(ov)} | {comp_s} |")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["50000x512x10", "50000x2048x100"],
                        help="problem sizes NxDxC (samples x feature dim x classes)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per ncfine_jax metric")
    parser.add_argument("--naive-repeats", type=int, default=3, help="timed calls per naive NC1/NC2/MSDR")
    parser.add_argument("--naive-cap-s", type=float, default=20.0,
                        help="seconds; stop repeating a naive metric once this much time is spent")
    parser.add_argument("--naive-block", type=int, default=1024, help="rows per block in the naive pairwise D")
    parser.add_argument("--naive-d-budget-s", type=float, default=120.0,
                        help="seconds; if the naive D is not done by then, extrapolate from the part done")
    parser.add_argument("--seed", type=int, default=0, help="seed for the synthetic features")
    parser.add_argument("--out", default=None, help="optional JSON file for the results (written atomically)")
    args = parser.parse_args(argv)
    if args.repeats < 2 or args.naive_repeats < 1:
        raise ConfigError("--repeats must be >= 2 and --naive-repeats >= 1")
    sizes = [parse_size(s) for s in args.sizes]

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load0 = os.getloadavg()
    print(f"hardware: {cpu}, {cores} cores, {platform.system()}; jax {jax.__version__} "
          f"backend {jax.default_backend()}; numpy {np.__version__}; load avg at start {load0[0]:.1f}")
    results = [bench_size(n, d, c, args) for n, d, c in sizes]
    load1 = os.getloadavg()
    header = (f"{cpu}, {cores} cores, jax {jax.__version__} ({jax.default_backend()}), float32; "
              f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (shared machine). "
              f"Wall time; ncfine_jax: mean ± std over {args.repeats} calls after warm-up, "
              f"public functions with input validation; naive: up to {args.naive_repeats} calls "
              f"(fewer past {args.naive_cap_s:.0f} s; D: 1). CPU time = process CPU seconds per call.")
    table = print_table(results, header)
    if args.out:
        def clean(rec):
            return {k: v for k, v in rec.items() if k != "value"} if isinstance(rec, dict) else rec
        atomic_write_json(args.out, {
            "hardware": {"cpu": cpu, "cores": cores, "jax": jax.__version__, "backend": jax.default_backend()},
            "load_avg": [load0[0], load1[0]],
            "table_markdown": table,
            "results": [{"n": r["n"], "d": r["d"], "C": r["C"],
                         "naive": {k: clean(v) for k, v in r["naive"].items()},
                         "ours": {k: clean(v) for k, v in r["ours"].items()}} for r in results],
        })


if __name__ == "__main__":
    sys.exit(run_main(main))
