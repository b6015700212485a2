"""One prepared check of every GPU number the README could print, in one command.

On one accelerator, within about 8 minutes, it measures:

* ResNet-18 (full width) training images/s in fp32 and bf16 at batch 128 and 512, compile
  time apart, and the PyTorch ResNet-18 side by side when torch is importable;
* DenseNet-121 and VGG-16 in bf16 at batch 128;
* the k = 9 grid of ResNet-18, vectorized against sequential, images/s per model;
* a 2-epoch real CIFAR-10 run of the flagship (``--cifar10``: the official archive, a
  class-folder tree or a .tar.gz of one), extrapolated to 350 epochs with its fixed costs
  (compilation, analysis) separated;
* the metrics (D, MSDR, NC1, NC2, CDNV in one call) on 50,000 x 512 features;

and writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (atomically, after every
section, so a run cut short keeps what it measured). A section that fails is recorded
with its error and the others go on. ``--smoke`` runs the same code at tiny sizes on a CPU
(the test suite runs it, so the script cannot rot); its numbers mean nothing.

Usage (on the GPU host, from the repository root, no install needed):
  PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_out --cifar10 data/cifar10_jpeg.tar.gz
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from grid_bench import bench as grid_bench  # noqa: E402
from train_throughput import bench_jax, bench_torch, hardware  # noqa: E402

from ncfine_jax.cli import ArgumentParser, run_main  # noqa: E402
from ncfine_jax.errors import ConfigError  # noqa: E402
from ncfine_jax.io import atomic_write_json, atomic_write_text, read_jsonl  # noqa: E402

warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the check uses; ``FULL`` on the GPU, ``SMOKE`` on a CPU."""

    width: int | None  # ResNet-18 / VGG / DenseNet width (None: the paper's)
    batches: tuple[int, ...]
    precisions: tuple[str, ...]  # of the ResNet-18 rows
    steps: int  # train steps per timed epoch
    repeats: int
    backbones: tuple[str, ...]  # the bf16 batch-128 rows besides ResNet-18
    grid_arch: str
    grid_k: int
    grid_batch: int
    run_subset: str | None  # --subset of the real run (None: all 50,000 / 10,000)
    run_epochs: int
    paper_epochs: int  # what the real run is extrapolated to
    metrics_shape: tuple[int, int, int]  # n, d, classes


FULL = Sizes(width=None, batches=(128, 512), precisions=("fp32", "bf16"), steps=50,
             repeats=3, backbones=("densenet121", "vgg16"), grid_arch="resnet18", grid_k=9,
             grid_batch=128, run_subset=None, run_epochs=2, paper_epochs=350,
             metrics_shape=(50_000, 512, 10))
# Every section's code at the smallest sizes (and the MLP where a CPU compiles a
# convolutional net for a minute): what the test suite can afford.
SMOKE = Sizes(width=4, batches=(16,), precisions=("bf16",), steps=2, repeats=1,
              backbones=("mlp",), grid_arch="mlp", grid_k=2, grid_batch=16,
              run_subset="40,20", run_epochs=2, paper_epochs=350,
              metrics_shape=(2_000, 32, 10))


def throughput(s: Sizes) -> list[dict]:
    """ResNet-18 in fp32 and bf16 at each batch; PyTorch beside it when importable."""
    rows = []
    has_torch = importlib.util.find_spec("torch") is not None
    for batch in s.batches:
        for precision in s.precisions:
            row = bench_jax("resnet18", s.width, batch, precision, s.steps, s.repeats, 10)
            rows.append(row)
            if has_torch:
                try:
                    rows.append(bench_torch(s.width, batch, precision, s.steps, s.repeats,
                                            10, row["gflop_img"] * 1e9))
                except Exception as e:  # noqa: BLE001 - the reference never sinks the check
                    rows.append({"impl": "torch", "batch": batch, "precision": precision,
                                 "error": f"{type(e).__name__}: {e}"})
    return rows


def backbones(s: Sizes) -> list[dict]:
    return [bench_jax(arch, s.width, 128 if s is FULL else s.batches[0], "bf16", s.steps,
                      s.repeats, 10) for arch in s.backbones]


def grid(s: Sizes) -> list[dict]:
    return [grid_bench(s.grid_arch, s.width, s.grid_k, s.grid_batch, s.steps, s.repeats,
                       "bf16")]


def real_run(s: Sizes, cifar10: str | None) -> list[dict]:
    """The flagship for ``run_epochs`` epochs on real data: per-epoch wall time from its
    log, fixed costs apart, and the extrapolation to ``paper_epochs``."""
    if cifar10 is None:
        return [{"skipped": "no --cifar10 given"}]
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.run import run_experiment

    spec = EXPERIMENTS["coarse_cifar10"]
    flags = ["--epochs", str(s.run_epochs), "--lr", "0.01", "--data", cifar10,
             "--save-features-at", str(s.run_epochs), "--clp-reduce", "none",
             "--no-progress"]
    if s.run_subset:
        flags += ["--subset", s.run_subset, "--batch-size", "16"]
    if s.width:
        flags += ["--width", str(s.width)]
    from ncfine_jax.experiment.cli import build_parser
    from ncfine_jax.experiment.config import config_from_args

    config = config_from_args(spec.defaults, build_parser(spec).parse_args(flags))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        results = run_experiment(config, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
        log = read_jsonl(Path(tmp) / "run" / "log.jsonl")
    epoch_s = [r.get("epoch_time_s") for r in log]
    steady = epoch_s[-1] if epoch_s and epoch_s[-1] is not None else float("nan")
    first = epoch_s[0] if epoch_s and epoch_s[0] is not None else float("nan")
    fixed = total - sum(e for e in epoch_s if e is not None)
    rows.append({"epochs": len(log), "total_s": total, "first_epoch_s": first,
                 "steady_epoch_s": steady, "compile_s_in_first_epoch": first - steady,
                 "fixed_s_outside_epochs": fixed,
                 f"extrapolated_{s.paper_epochs}_epochs_min":
                     (first + (s.paper_epochs - 1) * steady + fixed) / 60,
                 "final_train_accuracy": results.get("final_train_accuracy"),
                 "final_test_accuracy": results.get("final_test_accuracy")})
    return rows


def metrics(s: Sizes) -> list[dict]:
    from ncfine_jax.metrics import neural_collapse_metrics

    n, d, c = s.metrics_shape
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n).astype(np.int32)
    features = (rng.standard_normal((n, d)) + 3 * np.eye(c, d)[labels]).astype(np.float32)
    superclass = np.arange(c) % max(c // 2, 1)
    x, y = jax.device_put(features), jax.device_put(labels)
    call = lambda: jax.block_until_ready(neural_collapse_metrics(  # noqa: E731
        x, y, c, superclass, validate=False))
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(s.repeats, 3)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return [{"n": n, "d": d, "classes": c, "compile_s": first - float(np.mean(times)),
             "call_ms": 1e3 * float(np.mean(times)), "call_ms_std": 1e3 * float(np.std(times))}]


def markdown(report: dict) -> str:
    smoke = " (smoke: sizes too small to mean anything)" if report["smoke"] else ""
    lines = [f"# GPU check{smoke}", "", f"hardware: {report['hardware']}", ""]
    for name, section in report["sections"].items():
        lines += [f"## {name} ({section.get('seconds', 0):.0f} s)", ""]
        if "error" in section:
            lines += [f"failed: {section['error']}", ""]
            continue
        rows = section["rows"]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ± ".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--cifar10", default=None, metavar="PATH",
                        help="CIFAR-10 for the real run (official archive, class folders or "
                             "a .tar.gz of them); without it that section is skipped")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on a CPU: exercises the code, measures nothing")
    parser.add_argument("--only", nargs="+", default=None, metavar="SECTION",
                        help="run only these sections")
    args = parser.parse_args(argv)
    if not args.out:
        raise ConfigError("--out '': give a folder")
    sizes = SMOKE if args.smoke else FULL
    sections: dict[str, Callable[[], list[dict]]] = {
        "resnet18 throughput": lambda: throughput(sizes),
        "other backbones (bf16)": lambda: backbones(sizes),
        "grid (vectorized vs sequential, bf16)": lambda: grid(sizes),
        "real CIFAR-10 run": lambda: real_run(sizes, args.cifar10),
        "metrics": lambda: metrics(sizes),
    }
    if args.only:
        unknown = [o for o in args.only if not any(name.startswith(o) for name in sections)]
        if unknown:
            raise ConfigError(f"--only {' '.join(unknown)}: unknown section (sections: "
                              f"{', '.join(sections)})")
        sections = {k: v for k, v in sections.items() if any(k.startswith(o) for o in args.only)}
    out = Path(args.out)
    report = {"hardware": hardware(), "smoke": args.smoke, "jax": jax.__version__,
              "sizes": dataclasses.asdict(sizes), "sections": {}}
    print(f"hardware: {report['hardware']}", flush=True)
    for name, run in sections.items():
        t0 = time.perf_counter()
        try:
            report["sections"][name] = {"rows": run()}
        except Exception as e:  # noqa: BLE001 - one failed section must not sink the others
            report["sections"][name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())}",
                                        "traceback": traceback.format_exc()[-4000:]}
        report["sections"][name]["seconds"] = time.perf_counter() - t0
        atomic_write_json(out / "gpu_check.json", report)
        atomic_write_text(out / "gpu_check.md", markdown(report))
        status = "failed" if "error" in report["sections"][name] else "done"
        print(f"{name}: {status} in {report['sections'][name]['seconds']:.0f} s", flush=True)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return report


if __name__ == "__main__":
    sys.exit(run_main(main))
