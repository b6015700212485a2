"""Training throughput of the JAX engine per backbone, batch size and precision.

Times epochs (one ``lax.scan`` per epoch; on CPU one dispatch per step, see
``ncfine_jax.train.step.make_epoch_runner``) of the real train step (on-device uint8
data, on-device pad-4 crop + flip, SGD with momentum and weight decay, BatchNorm update)
on random images, over all local devices; compile time (first call minus a steady call)
is reported separately. FLOP/img is XLA's cost analysis of one jitted train step (2 FLOPs
per multiply-add) divided by the batch size; "fwd" is the same for one eval-mode forward
pass, and train/fwd is about 3. XLA counts only the multiply-adds that touch real
(non-padding) pixels, so for ResNet-18 at width 64 it gives 0.97 GFLOP forward and 2.90
GFLOP per training image, against 1.11 / 3.3 for the conventional count (0.56 GMAC
forward) that includes the zero padding; TFLOP/s here is therefore a slight
underestimate by the conventional measure. When torch is importable, an equivalent
PyTorch ResNet-18 (channels_last, bf16 autocast for bf16, torch.compile, per-sample crop
+ flip on device, SGD) is timed on the same batch sizes and the ratio JAX/PyTorch printed.

Usage (GPU, full widths):
  python benchmarks/train_throughput.py --archs resnet18,vgg16,densenet121 --steps 50
CPU smoke (2 cores, about two minutes):
  python benchmarks/train_throughput.py --archs resnet18,mlp --width 16 --steps 5 \
      --repeats 2 --batch-sizes 128,512
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import time
import warnings
from typing import Sequence

import jax
import numpy as np

from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.models import BACKBONES
from ncfine_jax.train import TrainConfig, TrainData, apply_model, build_engine, normalize

warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")


def hardware() -> str:
    """Devices, host CPU model and core count, jax version (one line; also grid_bench.py)."""
    devices = jax.devices()
    kind = devices[0].device_kind
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{len(devices)} x {kind} ({devices[0].platform}); host CPU: {cpu}, "
            f"{os.cpu_count()} cores; jax {jax.__version__}")


def _flops(compiled_or_lowered) -> float:
    cost = compiled_or_lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def fake_data(n: int, num_classes: int, seed: int = 0) -> TrainData:
    """n random uint8 CIFAR-shaped images with random labels (8 per device as test set)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    m = 8 * jax.device_count()
    return TrainData(x, y, y, x[:m], y[:m], y[:m], num_classes)


def bench_jax(arch: str, width: int | None, batch: int, precision: str, steps: int,
              repeats: int, num_classes: int, epoch_mode: str | None = None) -> dict:
    """Time ``repeats`` scans of ``steps`` train steps; returns a table row."""
    data = fake_data(steps * batch, num_classes)
    config = TrainConfig(arch=arch, width=width, batch_size=batch, precision=precision,
                         epochs=1, augment=True, eval_batch_size=8 * jax.device_count())
    engine = build_engine(config, data, epoch_mode=epoch_mode)
    state = engine.init_state()
    # FLOPs of one step (a scan's body may be counted once by the cost model).
    batch_arrays = {"inputs": engine.x_train[:batch], "labels": engine.y_train[:batch]}
    step_flops = _flops(jax.jit(engine.train_step).lower(state, batch_arrays,
                                                         jax.random.PRNGKey(0)))

    def fwd(params, stats, x):
        return apply_model(engine.model, params, stats, normalize(
            x, engine.mean, engine.std, config.compute_dtype), False)[0]

    fwd_flops = _flops(jax.jit(fwd).lower(state.params, state.batch_stats,
                                          engine.x_train[:batch]))
    states, alive, key = engine.stack([state]), engine.alive(1), state.key

    def epoch(states):
        return engine.run_epoch(states, alive, key, np.int32(0), engine.x_train,
                                engine.y_train)

    t0 = time.perf_counter()
    states, _, metrics = epoch(states)  # compiles
    jax.block_until_ready(metrics)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        states, _, metrics = epoch(states)
        jax.block_until_ready((states, metrics))
        times.append(time.perf_counter() - t0)
    rates = steps * batch / np.asarray(times)
    flop_img = step_flops / batch
    compile_s = first_s - float(np.mean(times))  # first call minus a steady call
    return {"impl": f"jax ({engine.epoch_mode})", "arch": arch, "width": width, "batch": batch,
            "precision": precision, "compile_s": compile_s, "img_s": float(rates.mean()),
            "img_s_std": float(rates.std()), "gflop_img": flop_img / 1e9,
            "fwd_gflop_img": fwd_flops / batch / 1e9,
            "tflops": flop_img * float(rates.mean()) / 1e12,
            "loss_finite": bool(np.all(np.isfinite(np.asarray(metrics["loss"]))))}


def bench_torch(width: int | None, batch: int, precision: str, steps: int, repeats: int,
                num_classes: int, flop_img: float) -> dict:
    """The PyTorch reference: CIFAR ResNet-18 (kuangliu layout), same step contents."""
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    w = 64 if width is None else width

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = tnn.BatchNorm2d(cout)
            self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = tnn.BatchNorm2d(cout)
            self.sc = tnn.Sequential()
            if stride != 1 or cin != cout:
                self.sc = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                         tnn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.sc(x))

    class ResNet18(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Conv2d(3, w, 3, 1, 1, bias=False),
                                       tnn.BatchNorm2d(w), tnn.ReLU())
            layers, cin = [], w
            for i in range(4):
                for j in range(2):
                    cout = w * 2**i
                    layers.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                    cin = cout
            self.layers = tnn.Sequential(*layers)
            self.fc = tnn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    model = ResNet18().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    n = steps * batch
    x_all = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, device=device)
    y_all = torch.randint(0, num_classes, (n,), device=device)
    mean = torch.tensor([0.49, 0.48, 0.45], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26], device=device).view(1, 3, 1, 1)
    ar = torch.arange(32, device=device)

    def augment(xb):  # per-sample pad-4 crop + flip on device, NHWC uint8
        b = xb.shape[0]
        padded = F.pad(xb, (0, 0, 4, 4, 4, 4))
        dy = torch.randint(0, 9, (b, 1), device=device)
        dx = torch.randint(0, 9, (b, 1), device=device)
        rows, cols = ar[None] + dy, ar[None] + dx
        flip = torch.rand(b, device=device) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        out = padded[torch.arange(b, device=device)[:, None, None], rows[:, :, None],
                     cols[:, None, :]]
        return out.permute(0, 3, 1, 2)

    def step(xb, yb):
        x = ((augment(xb).float() / 255 - mean) / std).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step_c = torch.compile(step)

    def epoch():
        perm = torch.randperm(n, device=device)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            loss = step_c(x_all[idx], y_all[idx])
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    epoch()
    sync()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        epoch()
        sync()
        times.append(time.perf_counter() - t0)
    rates = steps * batch / np.asarray(times)
    return {"impl": f"torch {torch.__version__} ({device})", "arch": "resnet18",
            "width": width, "batch": batch, "precision": precision,
            "compile_s": compile_s, "img_s": float(rates.mean()),
            "img_s_std": float(rates.std()), "gflop_img": flop_img / 1e9,
            "fwd_gflop_img": float("nan"), "tflops": flop_img * float(rates.mean()) / 1e12,
            "loss_finite": True}


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ConfigError(f"--batch-sizes: {text!r} is not a comma-separated list of integers")
    if not values or min(values) < 1:
        raise ConfigError(f"--batch-sizes: {text!r} needs positive integers")
    return values


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="resnet18", help="comma list of backbones")
    p.add_argument("--width", type=int, default=None, help="base width (default: model's)")
    p.add_argument("--batch-sizes", default="128,512", help="global batch sizes")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16")
    p.add_argument("--steps", type=int, default=50, help="train steps per timed epoch call")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed epoch calls (after one warm-up call)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--epoch-mode", choices=("auto", "scan", "loop"), default="auto",
                   help="scan = one lax.scan per epoch; loop = one dispatch per step; "
                        "auto = loop on CPU (XLA:CPU convs are slow inside loops), else scan")
    args = p.parse_args(argv)
    archs = [a for a in args.archs.split(",") if a]
    for a in archs:
        if a not in BACKBONES:
            raise ConfigError(f"--archs: unknown backbone {a!r} ({', '.join(sorted(BACKBONES))})")
    precisions = [q for q in args.precisions.split(",") if q]
    for q in precisions:
        if q not in ("fp32", "bf16"):
            raise ConfigError(f"--precisions: {q!r} must be fp32 or bf16")
    if args.steps < 1 or args.repeats < 1:
        raise ConfigError("--steps and --repeats must be >= 1")
    batches = _int_list(args.batch_sizes)
    has_torch = importlib.util.find_spec("torch") is not None and not args.no_torch

    print(f"hardware: {hardware()}")
    print(f"steps per timed epoch call {args.steps}, repeats {args.repeats}, width "
          f"{args.width or 'default'}; images/s = mean ± std over repeats")
    if not has_torch:
        print("PyTorch reference: skipped (torch not importable)" if not args.no_torch
              else "PyTorch reference: skipped (--no-torch)")
    header = ("| impl | arch | batch | prec | compile s | images/s | train GFLOP/img "
              "| fwd GFLOP/img | TFLOP/s | vs torch |")
    print(header)
    print("|" + "---|" * 10)
    for arch in archs:
        for batch in batches:
            for precision in precisions:
                row = bench_jax(arch, args.width, batch, precision, args.steps, args.repeats,
                                args.num_classes,
                                None if args.epoch_mode == "auto" else args.epoch_mode)
                ratio = ""
                trow = None
                if has_torch and arch == "resnet18":
                    try:
                        trow = bench_torch(args.width, batch, precision, args.steps,
                                           args.repeats, args.num_classes,
                                           row["gflop_img"] * 1e9)
                        ratio = f"{row['img_s'] / trow['img_s']:.2f}x"
                    except Exception as e:  # the reference must never sink the JAX table
                        print(f"PyTorch reference failed: {type(e).__name__}: {e}",
                              file=sys.stderr)
                for r in (row, trow):
                    if r is None:
                        continue
                    print(f"| {r['impl']} | {arch}{'' if args.width is None else f'/w{args.width}'}"
                          f" | {batch} | {precision} | {r['compile_s']:.1f} | "
                          f"{r['img_s']:.0f} ± {r['img_s_std']:.0f} | {r['gflop_img']:.4g} | "
                          f"{r['fwd_gflop_img']:.4g} | {r['tflops']:.3g} | "
                          f"{ratio if r is row else ''} |", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
