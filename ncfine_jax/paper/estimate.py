"""How long the ``cpu`` plan takes, from CPU time measured on short runs of each backbone.

Wall time on a shared machine depends on the other jobs; the CPU time a run consumes does
not (much). ``calibrate`` trains each backbone of a scale three times on the scale's
subset, in fresh workdirs: 1 epoch in a fresh process state ("cold": compilation, first
data load and analysis included), then 2 epochs and 1 epoch again ("warm"), recording
the process CPU seconds of each call. Warm 2 minus warm 1 is the CPU time of one epoch;
cold minus one epoch is the per-run overhead, counted in full for every run (a run whose
shapes were compiled before costs less). The Gaussian-mixture sweeps are timed the same
way (one sweep cold, then again with its program compiled). The estimate of an item is
its CPU seconds divided by the cores an idle machine gives it (``IDLE_CORES``); on a
loaded machine wall time is longer.

``DIR/calibration.json`` (written by ``experiments/paper.py --calibrate``) replaces the
built-in ``CPU_CALIBRATION``, which holds the values such a call measured for the
``cpu`` scale (README: when and under what load).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from ncfine_jax import gaussian_mixture as gm, workdir as wdir
from ncfine_jax.experiment import run_experiment
from ncfine_jax.io import atomic_write_json, read_json
from ncfine_jax.paper.runner import say

IDLE_CORES = 2

# CPU seconds measured by ``calibrate`` for the cpu scale; keys "<arch>/<width>".
#   epoch_cpu_s_per_image: CPU seconds of one training epoch per training image (test
#     evaluation included); run_overhead_cpu_s: the rest of a 1-epoch run;
#   gm_cpu_s_per_sample_step, gm_compile_cpu_s: a Gaussian-mixture sweep.
CPU_CALIBRATION: dict = {
    "scale": "cpu",
    "backbones": {
        "resnet18/8": {"epoch_cpu_s_per_image": 0.003748, "run_overhead_cpu_s": 44.9},
        "resnet18/16": {"epoch_cpu_s_per_image": 0.013336, "run_overhead_cpu_s": 51.7},
        "densenet121/8": {"epoch_cpu_s_per_image": 0.059614, "run_overhead_cpu_s": 171.0},
        "vgg16/8": {"epoch_cpu_s_per_image": 0.00199, "run_overhead_cpu_s": 44.0},
    },
    "gm_cpu_s_per_sample_step": 4.93e-07,
    "gm_compile_cpu_s": 4.83,
}


def _cpu_seconds() -> float:
    """CPU time of this process and its threads (user + system), seconds."""
    t = os.times()
    return t.user + t.system


def load_calibration(root: Path | None) -> dict:
    """``root/calibration.json`` when present, else the built-in table."""
    if root is not None and (Path(root) / wdir.CALIBRATION_FILE).is_file():
        try:
            return read_json(Path(root) / wdir.CALIBRATION_FILE)
        except (OSError, ValueError):
            pass
    return CPU_CALIBRATION


def estimator(scale: str, root: Path | None = None) -> Callable | None:
    """``item -> seconds`` on an idle 2-core CPU for ``scale`` when calibrated, else None
    (the ``full`` scale is a GPU job: no CPU estimate)."""
    cal = load_calibration(root)
    if cal.get("scale") != scale or not cal.get("backbones"):
        return None

    def seconds(item) -> float:
        if item.kind == "gm":
            st = item.study
            per, compile_s = cal.get("gm_cpu_s_per_sample_step"), cal.get("gm_compile_cpu_s")
            if per is None or compile_s is None:
                return 0.0
            compiles = len(st.values) if st.vary in ("d_input", "d_hidden") else 1
            return (compiles * compile_s + st.sample_steps * per) / IDLE_CORES
        total = 0.0
        for c in item.configs:
            b = cal["backbones"].get(f"{c.arch}/{c.train.width}")
            if b is None:
                return float("nan")
            total += b["run_overhead_cpu_s"] + c.epochs * item.n_train() * b["epoch_cpu_s_per_image"]
        return total / IDLE_CORES

    return seconds


def calibrate(plan, root: Path, scale: str, echo: Callable[[str], None] | None = None) -> dict:
    """Measure the CPU cost of every backbone of ``plan`` and of one Gaussian-mixture sweep;
    writes and returns ``root/calibration.json``.

    Each backbone: three ``run_experiment`` calls on the first item that trains it (its
    experiment, subset, batch and analysis): 1 epoch cold, 2 epochs, 1 epoch, in
    ``root/calibration/<arch>_w<width>_<name>``.
    """
    echo = echo or say
    root = Path(root)
    backbones: dict = {}
    for item in plan:
        if item.kind == "gm":
            continue
        c = item.configs[0]
        key = f"{c.arch}/{c.train.width}"
        if key in backbones:
            continue
        cpu, wall = {}, {}
        for name, epochs in (("cold1", 1), ("warm2", 2), ("warm1", 1)):
            config = c.replace(epochs=epochs, save_features_at=(epochs,))
            workdir = root / "calibration" / f"{c.arch}_w{c.train.width}_{name}"
            t0, w0 = _cpu_seconds(), time.perf_counter()
            run_experiment(config, workdir, progress=False)
            cpu[name], wall[name] = _cpu_seconds() - t0, time.perf_counter() - w0
        n = item.n_train()
        per_epoch = max(cpu["warm2"] - cpu["warm1"], 0.0)
        backbones[key] = {
            "epoch_cpu_s_per_image": per_epoch / n,
            "run_overhead_cpu_s": max(cpu["cold1"] - per_epoch, 0.0),
            "n_train": n, "cpu_s": cpu, "wall_s": wall,
            "wall_images_per_s_now": n / max(wall["warm2"] - wall["warm1"], 1e-9),
            "load_average": os.getloadavg(),
        }
        echo(f"{key}: {per_epoch:.0f} CPU s per epoch of {n:,} images, "
             f"{backbones[key]['run_overhead_cpu_s']:.0f} CPU s per run besides epochs; "
             f"wall s cold 1 / warm 2 / warm 1 epochs: {wall['cold1']:.0f} / "
             f"{wall['warm2']:.0f} / {wall['warm1']:.0f} at load {os.getloadavg()[0]:.1f}")
    gm_items = [i for i in plan if i.kind == "gm"]
    gm_per = gm_compile = None
    if gm_items:
        st = min(gm_items, key=lambda i: i.study.sample_steps).study
        cpu = []
        for _ in range(2):  # the second call finds the compiled program
            t0 = _cpu_seconds()
            gm.run_study(st.vary, st.config, range(st.seeds), values=st.values,
                         sigma2s=st.sigma2s, weight_decay=st.weight_decay)
            cpu.append(_cpu_seconds() - t0)
        gm_per = cpu[1] / st.sample_steps
        gm_compile = max(cpu[0] - cpu[1], 0.0)
        echo(f"gaussian mixture ({st.vary}): {cpu[1]:.1f} CPU s for {st.sample_steps:,} "
             f"sample-steps, {gm_compile:.1f} CPU s compiling")
    result = {"scale": scale, "backbones": backbones, "gm_cpu_s_per_sample_step": gm_per,
              "gm_compile_cpu_s": gm_compile, "idle_cores": IDLE_CORES,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(root / wdir.CALIBRATION_FILE, result)
    return result


__all__ = ["CPU_CALIBRATION", "IDLE_CORES", "calibrate", "estimator",
           "load_calibration"]
