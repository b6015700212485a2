"""benchmarks/train_throughput.py runs end to end on a tiny model; it and grid_bench.py
(which imports the former's helpers) reject bad flags."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax.cli import run_main

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script("train_throughput")


def test_benchmark_prints_a_table_row(bench, capsys):
    assert run_main(bench.main, ["--archs", "mlp", "--width", "4", "--steps", "2",
                                 "--repeats", "1", "--batch-sizes", "8",
                                 "--precisions", "fp32", "--no-torch"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| jax")]
    assert len(rows) == 1 and "| mlp/w4 | 8 | fp32 |" in rows[0]
    assert "hardware:" in out and "skipped (--no-torch)" in out


@pytest.mark.parametrize("argv,match", [(["--archs", "resnet99"], "unknown backbone"),
                                        (["--precisions", "fp16"], "fp32 or bf16"),
                                        (["--batch-sizes", "x"], "--batch-sizes")])
def test_benchmark_bad_flags_exit_2(bench, capsys, argv, match):
    assert run_main(bench.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and match in err and err.count("\n") == 1


def test_grid_bench_bad_flags_exit_2(capsys):
    grid_bench = load_script("grid_bench")
    for argv, match in ((["--k", "0"], "--k 0: must be >= 1"),
                        (["--archs", "resnet99"], "unknown backbone")):
        assert run_main(grid_bench.main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and match in err and err.count("\n") == 1


def test_gpu_check_smoke_measures_every_section(tmp_path, capsys):
    """benchmarks/gpu_check.py --smoke: the GPU check's code, at tiny sizes on the CPU."""
    from PIL import Image

    folder = tmp_path / "cifar"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in range(10):
            (folder / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    folder / split / f"class{c}" / f"{i:02d}.png")
    check = load_script("gpu_check")
    out = tmp_path / "out"
    assert run_main(check.main, ["--smoke", "--out", str(out), "--cifar10", str(folder)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["smoke"] and len(report["sections"]) == 5
    for name, section in report["sections"].items():
        assert "error" not in section, (name, section.get("traceback"))
        assert section["rows"], name
    run = report["sections"]["real CIFAR-10 run"]["rows"][0]
    assert run["epochs"] == 2 and run["steady_epoch_s"] > 0
    throughput = report["sections"]["resnet18 throughput"]["rows"]
    assert [(r["precision"], r["batch"]) for r in throughput if r["impl"].startswith("jax")] == [
        ("bf16", 16)]
    assert all(np.isfinite(r["img_s"]) and r["loss_finite"] for r in throughput
               if r["impl"].startswith("jax"))
    assert "smoke" in (out / "gpu_check.md").read_text()
    capsys.readouterr()
    assert run_main(check.main, ["--smoke", "--out", str(out), "--only", "nope"]) == 2
    assert "--only nope: unknown section" in capsys.readouterr().err
