"""k models vmapped in one program vs the same k models trained one after the other.

Both paths run the real training epoch (``lax.scan`` over steps, on-device data, pad-4
crop + flip for images, SGD with momentum and weight decay, BatchNorm update) for the
same total number of steps: "sequential" calls the engine's jitted single-run epoch on
each of the k states in turn; "vmapped" calls ``ncfine_jax.grid``'s epoch once on the k
stacked states (every model with its own lr and weight decay). Compile time (first call
minus a steady call) is reported separately and excluded from the throughput.

Columns: img/s per model = steps x batch / time for all k models (how fast each model
progresses); total img/s = k times that; speed-up = sequential time / vmapped time (> 1:
vmapping wins). Mean ± std over --repeats timed repeats.

Usage (CPU, 2 cores, about 3 minutes):
  python benchmarks/grid_bench.py --archs mlp,resnet18 --width 8 --k 4 --batch-size 64 \
      --steps 4 --repeats 3
GPU (the paper's grid: 9 ResNet-18 at batch 128):
  python benchmarks/grid_bench.py --archs resnet18 --k 9 --width 0 --batch-size 128 \
      --steps 50

Measured on the 2-core CPU with the CPU command above and --repeats 5 (README): the MLP
gains about 3x from vmapping (one dispatch for k tiny models: 9,220 vs 28,791 img/s per
model), ResNet-18 loses about 3x (119 vs 37; XLA:CPU grouped convolutions); hence
``ncfine_jax.grid.VECTORIZE_BY_DEFAULT``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.grid import build_grid_engine, default_mode
from ncfine_jax.models import MODELS
from ncfine_jax.train import TrainConfig, replicated, with_hyperparams

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
    grid = build_grid_engine(config, data, epoch_mode=epoch_mode)
    engine = grid.engine
    lrs = np.geomspace(0.1, 0.001, k)
    # Copies: the epochs donate their state, and with_hyperparams shares the params. All
    # leaves replicated, as the epochs return them: with_hyperparams' new scalars sit on
    # one device, and a state of other shardings would recompile in the first timed call.
    repl = replicated(engine.mesh)
    states = [jax.device_put(jax.tree.map(jnp.copy, with_hyperparams(
        grid.init_state, lr=float(lr), weight_decay=5e-4)), repl) for lr in lrs]

    def run_sequential(states):
        out = [engine.run_epoch(s, engine.x_train, engine.y_train)[0] for s in states]
        jax.block_until_ready(out)
        return out

    stacked = jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), repl)
    alive = jnp.ones(k, bool)

    def run_vmapped(stacked):
        out = grid.run_epoch(stacked, alive, grid.init_state.key, jnp.int32(0),
                             engine.x_train, engine.y_train)[0]
        jax.block_until_ready(out)
        return out

    row = {"arch": arch, "width": width, "k": k, "batch": batch, "steps": steps,
           "precision": precision, "epoch_mode": engine.epoch_mode}
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
    return row


def table(rows: Sequence[dict]) -> str:
    def pm(v, digits=0):
        return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"

    lines = ["| arch | width | epoch mode | k | batch | steps | seq img/s per model "
             "| vmap img/s per model | seq total img/s | vmap total img/s "
             "| speed-up (seq/vmap time) | compile s seq / vmap |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r["k"]
        lines.append(
            f"| {r['arch']} | {r['width'] or 'default'} | {r['epoch_mode']} | {k} | "
            f"{r['batch']} | {r['steps']} | "
            f"{pm(r['sequential_img_s'])} | {pm(r['vmapped_img_s'])} | "
            f"{r['sequential_img_s'][0] * k:.0f} | {r['vmapped_img_s'][0] * k:.0f} | "
            f"{r['speedup']:.2f} | "
            f"{r['sequential_compile_s']:.1f} / {r['vmapped_compile_s']:.1f} |")
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
    unknown = [a for a in archs if a not in MODELS]
    if unknown:
        raise ConfigError(f"--archs {','.join(unknown)}: unknown backbone(s); known: "
                          f"{', '.join(sorted(MODELS))}")
    for flag, v in (("--k", args.k), ("--batch-size", args.batch_size),
                    ("--steps", args.steps), ("--repeats", args.repeats)):
        if v < 1:
            raise ConfigError(f"{flag} {v}: must be >= 1")
    width = args.width or None
    print(hardware())
    print("default grid mode on this backend (" + jax.default_backend() + "): " +
          ", ".join(f"{a} {default_mode(arch=a)}" for a in archs))
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
