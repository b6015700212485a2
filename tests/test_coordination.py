"""Processes out of step: one late by more than gloo's 30 s rendezvous, process 0 busy
after the others are done (multi-process commands through ``python -m ncfine_jax.launch``).

Both commands mostly wait, so they start together (one module fixture) and each test
checks its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("coordinate.py")
LATE_S = 33  # beyond gloo's 30 s rendezvous
SLOW_END_S = 8  # beyond coordinate.py's 3 s shutdown timeout


@pytest.fixture(scope="module")
def commands():
    """{mode: (exit code, stdout, stderr)} of the two commands, run at the same time."""
    procs = {mode: subprocess.Popen(
        [sys.executable, "-m", "ncfine_jax.launch", "-n", "2", "--", str(SCRIPT), mode,
         str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
        for mode, seconds in (("late", LATE_S), ("slow-end", SLOW_END_S))}
    done = {}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[mode] = (proc.returncode, out, err)
    return done


def test_a_process_late_by_more_than_gloos_rendezvous_is_waited_for(commands):
    code, out, err = commands["late"]
    assert code == 0, out[-2000:] + err[-2000:]
    assert out.count("gathered [10, 11]") == 2


def test_the_others_wait_while_process_0_finishes_past_the_shutdown_timeout(commands):
    code, out, err = commands["slow-end"]
    assert code == 0, out[-2000:] + err[-2000:]
    assert out.count("done") == 2
