"""benchmarks/train_throughput.py runs end to end on a tiny model and rejects bad flags."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ncfine_jax.cli import run_main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
