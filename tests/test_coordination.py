"""Processes out of step: one late by more than gloo's 30 s rendezvous, process 0 busy
after the others are done (multi-process commands through ``python -m ncfine_jax.launch``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("coordinate.py")


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ncfine_jax.launch", "-n", "2", "--",
                           str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_process_late_by_more_than_gloos_rendezvous_is_waited_for():
    proc = launch("late", "33")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("gathered [10, 11]") == 2


def test_the_others_wait_while_process_0_finishes_past_the_shutdown_timeout():
    proc = launch("slow-end", "8")  # 8 s against jax.distributed's 3 s shutdown timeout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("done") == 2
