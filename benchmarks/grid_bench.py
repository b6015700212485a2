"""k models vmapped in one program vs the same k models trained one after the other.

Both paths run the engine's real training epoch (on-device data, pad-4 crop + flip for
images, SGD with momentum and weight decay, BatchNorm update) for the same total number of
steps: "sequential" runs the epoch of a one-model stack (a single run) on each of the k
models in turn; "vmapped" runs one epoch of the k-model stack (every model with its own
lr and weight decay), as ``train_grid`` does. Compile time (first call minus a steady
call) is reported separately and excluded from the throughput.

Columns: img/s per model = steps x batch / time for all k models (how fast each model
progresses); total img/s = k times that; speed-up = sequential time / vmapped time (> 1:
vmapping wins). Mean ± std over --repeats timed repeats.

Usage (CPU, 2 cores, about 3 minutes):
  python benchmarks/grid_bench.py --archs mlp,resnet18 --width 8 --k 4 --batch-size 64 \
      --steps 4 --repeats 3
GPU (the paper's grid: 9 ResNet-18 at batch 128):
  python benchmarks/grid_bench.py --archs resnet18 --k 9 --width 0 --batch-size 128 \
      --steps 50

The last column is what ``--grid-mode auto`` (``ncfine_jax.train.choose_mode``, a few
timed steps of each mode) picks for the same grid: it should name the faster path.
README has the measured table.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.models import BACKBONES
from ncfine_jax.train import TrainConfig, build_engine, choose_mode

# The sibling script's host description and fake data (importable by path, as a script).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import fake_data, hardware  # noqa: E402

warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")


def bench(arch: str, width: int | None, k: int, batch: int, steps: int, repeats: int,
          precision: str, epoch_mode: str | None = None) -> dict:
    """Time ``repeats`` epochs of ``steps`` steps of k models, both ways; one table row."""
    data = fake_data(steps * batch, num_classes=10)
    config = TrainConfig(arch=arch, width=width, batch_size=batch, precision=precision,
                         epochs=1000, schedule="constant", augment=True,
                         eval_batch_size=8 * jax.device_count())
    single = build_engine(config, data, epoch_mode=epoch_mode)
    stack = build_engine(config, data, epoch_mode=epoch_mode, num_models=k)
    configs = [dataclasses.replace(config, lr=float(lr), weight_decay=5e-4)
               for lr in np.geomspace(0.1, 0.001, k)]
    key = single.init_state().key

    def epoch(engine, states):
        return engine.run_epoch(states, engine.alive(len(jax.tree.leaves(states)[0])), key,
                                np.int32(0), engine.x_train, engine.y_train)[0]

    def run_sequential(stacks):
        out = [epoch(single, s) for s in stacks]
        jax.block_until_ready(out)
        return out

    def run_vmapped(stacked):
        out = epoch(stack, stacked)
        jax.block_until_ready(out)
        return out

    states = [single.init_stack([c]) for c in configs]
    stacked = stack.init_stack(configs)
    row = {"arch": arch, "width": width, "k": k, "batch": batch, "steps": steps,
           "precision": precision, "epoch_mode": single.epoch_mode}
    for name, fn, arg in (("sequential", run_sequential, states),
                          ("vmapped", run_vmapped, stacked)):
        t0 = time.perf_counter()
        arg = fn(arg)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            arg = fn(arg)
            times.append(time.perf_counter() - t0)
        times = np.asarray(times)
        row[f"{name}_s"] = (float(times.mean()), float(times.std()))
        row[f"{name}_compile_s"] = max(0.0, first - float(times.mean()))
        per_model = steps * batch / times
        row[f"{name}_img_s"] = (float(per_model.mean()), float(per_model.std()))
    row["speedup"] = row["sequential_s"][0] / row["vmapped_s"][0]
    row["auto"] = choose_mode(configs, data, chunk_size=None, report=False)
    return row


def table(rows: Sequence[dict]) -> str:
    def pm(v, digits=0):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    lines = ["| arch | width | epoch mode | k | batch | steps | seq img/s per model "
             "| vmap img/s per model | seq total img/s | vmap total img/s "
             "| speed-up (seq/vmap time) | compile s seq / vmap | auto picks |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r["k"]
        lines.append(
            f"| {r['arch']} | {r['width'] or 'default'} | {r['epoch_mode']} | {k} | "
            f"{r['batch']} | {r['steps']} | "
            f"{pm(r['sequential_img_s'])} | {pm(r['vmapped_img_s'])} | "
            f"{r['sequential_img_s'][0] * k:.0f} | {r['vmapped_img_s'][0] * k:.0f} | "
            f"{r['speedup']:.2f} | "
            f"{r['sequential_compile_s']:.1f} / {r['vmapped_compile_s']:.1f} | "
            f"{r['auto']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = ArgumentParser(prog="grid_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="mlp,resnet18", help="comma-separated backbones")
    parser.add_argument("--width", type=int, default=8, help="backbone width (None: 0)")
    parser.add_argument("--k", type=int, default=4, help="models in the grid")
    parser.add_argument("--batch-size", type=int, default=64, help="batch per model and step")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--epoch-mode", choices=("scan", "loop"), default=None,
                        help="epoch driver of both paths (default: the engine's for the "
                             "backend: loop on CPU, scan elsewhere)")
    args = parser.parse_args(argv)
    archs = [a for a in args.archs.split(",") if a]
    unknown = [a for a in archs if a not in BACKBONES]
    if unknown:
        raise ConfigError(f"--archs {','.join(unknown)}: unknown backbone(s); known: "
                          f"{', '.join(sorted(BACKBONES))}")
    for flag, v in (("--k", args.k), ("--batch-size", args.batch_size),
                    ("--steps", args.steps), ("--repeats", args.repeats)):
        if v < 1:
            raise ConfigError(f"{flag} {v}: must be >= 1")
    width = args.width or None
    print(hardware())
    rows = []
    for arch in archs:
        rows.append(bench(arch, width, args.k, args.batch_size, args.steps, args.repeats,
                          args.precision, args.epoch_mode))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    return rows


if __name__ == "__main__":
    sys.exit(run_main(main))
