"""benchmarks/train_throughput.py runs end to end on a tiny model; it and grid_bench.py
(which imports the former's helpers) reject bad flags."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ncfine_jax.cli import run_main

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
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
