"""Multi-process runs for real: processes on 127.0.0.1 started by ``python -m ncfine_jax.launch``.

Float32 training is chaotic, so a run on 2 processes is compared with the same run on 1
process (2 devices, and 1 device) after ONE step at float-rounding tolerance, and after
several steps against a float-noise control measured here: the 1-process run on 2 devices
vs on 1 device (which differ only in the order of float sums). Each epoch is one step
(64 digits, batch 64).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from contextlib import redirect_stderr

import numpy as np
import pytest

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main
from ncfine_jax.io import read_json, read_jsonl

SCRIPT = Path(__file__).with_name("run_with_faults.py")
EPOCHS = 4
RUN_FLAGS = ["--epochs", str(EPOCHS), "--width", "16", "--subset", "64,40", "--batch-size", "64",
             "--save-features-at", "1", str(EPOCHS), "--checkpoint-every", "1",
             "--clp-reduce", "none", "--no-progress"]
# Point lr0.05_wd0.0005 is the single run's config: its device-count control applies.
GRID_FLAGS = RUN_FLAGS + ["--lr", "0.05", "0.02", "--wd", "5e-4", "0", "--vectorize",
                          "--no-analysis"]
CONTROL_FACTOR = 10.0


def launch(n: int, devices: int, *args: str, env: dict | None = None, timeout: float = 600):
    """``python -m ncfine_jax.launch -n N --devices-per-process D -- run_with_faults.py ...``"""
    cmd = [sys.executable, "-m", "ncfine_jax.launch", "-n", str(n), "--devices-per-process",
           str(devices), "--", str(SCRIPT), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "NCFINE_TEST_KILL_AT"}
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[1])


def features(workdir: Path, epoch: int) -> np.ndarray:
    with np.load(workdir / "features" / f"epoch_{epoch:04d}.npz") as z:
        return np.concatenate([z["train_features"].ravel(), z["test_features"].ravel()])


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def strip_times(log: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "time" not in k} for r in log]


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    """The same run on 2 processes x 1 device, 1 process x 2 devices, 1 process x 1 device."""
    root = tmp_path_factory.mktemp("distributed")
    runs = {}
    for name, n, d in (("2x1", 2, 1), ("1x2", 1, 2), ("1x1", 1, 1)):
        analysis = [] if name == "2x1" else ["--no-analysis"]
        proc = launch(n, d, "coarse_digits", *RUN_FLAGS, *analysis, "--workdir", str(root / name))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = (root / name, proc)
    return runs


def test_two_processes_equal_one_process(single_runs):
    two_procs, proc = single_runs["2x1"]
    one_proc_two_dev, _ = single_runs["1x2"]
    one_dev, _ = single_runs["1x1"]
    # Both processes took part; process 0 alone wrote: one log line per epoch, one summary.
    assert "launch: process 1 pid" in proc.stdout
    assert [r["epoch"] for r in read_jsonl(two_procs / "log.jsonl")] == list(range(1, EPOCHS + 1))
    assert proc.stdout.count("final train acc") == 1 and "[0] " in proc.stdout
    config = read_json(two_procs / "config.json")
    assert config["num_devices"] == 2 and config["mesh"] == [1, 2]
    assert read_json(two_procs / "results.json")["lpo_accuracy"] is not None
    # One step: float rounding.
    for other in (one_proc_two_dev, one_dev):
        np.testing.assert_allclose(features(two_procs, 1), features(other, 1), rtol=1e-5,
                                   atol=1e-5)
    # Several steps: no farther than the device-count control (times a small factor).
    control = relative(features(one_dev, EPOCHS), features(one_proc_two_dev, EPOCHS))
    for other in (one_proc_two_dev, one_dev):
        drift = relative(features(two_procs, EPOCHS), features(other, EPOCHS))
        assert drift <= CONTROL_FACTOR * max(control, 1e-7), (drift, control)


def test_grid_on_a_2x2_mesh_of_two_processes_equals_one_device(single_runs, tmp_path):
    runs = {}
    for name, n, d, mesh in (("2x2", 2, 2, "2x2"), ("1x1", 1, 1, "1x1")):
        proc = launch(n, d, "grid", "coarse_digits", *GRID_FLAGS, "--mesh", mesh,
                      "--workdir", str(tmp_path / name))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = tmp_path / name
    summary = read_json(runs["2x2"] / "summary.json")
    points = [p["workdir"] for p in summary["points"]]
    assert len(points) == 4 and not any(p["diverged"] for p in summary["points"])
    control = relative(features(single_runs["1x1"][0], EPOCHS),
                       features(single_runs["1x2"][0], EPOCHS))
    for point in points:
        got, on_one = runs["2x2"] / point, runs["1x1"] / point
        assert read_json(got / "config.json")["mesh"] == [2, 2]
        assert [r["epoch"] for r in read_jsonl(got / "log.jsonl")] == list(range(1, EPOCHS + 1))
        np.testing.assert_allclose(features(got, 1), features(on_one, 1), rtol=1e-5, atol=1e-5)
        drift = relative(features(got, EPOCHS), features(on_one, EPOCHS))
        assert drift <= CONTROL_FACTOR * max(control, 1e-7), (point, drift, control)


def test_killed_processes_stop_together_and_resume_to_the_uninterrupted_run(single_runs,
                                                                           tmp_path):
    reference, _ = single_runs["2x1"]
    workdir = tmp_path / "run"
    args = ["coarse_digits", *RUN_FLAGS, "--workdir", str(workdir)]
    # Process 1 dies after its checkpoint of epoch 2: the launcher stops process 0 at once
    # and returns the failure; nothing is a finished result.
    t0 = time.monotonic()
    proc = launch(2, 1, *args, env={"NCFINE_TEST_KILL_AT": "2:1"})
    assert proc.returncode == 128 + 9, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not (workdir / "results.json").exists()
    for path in (workdir / "features").glob("epoch_*.npz"):
        np.load(path)["train_features"]  # complete files only (written atomically)
    # Every process killed right after the checkpoint of epoch 3, then the same launch.
    proc = launch(2, 1, *args, env={"NCFINE_TEST_KILL_AT": "3"})
    assert proc.returncode == 128 + 9 and not (workdir / "results.json").exists()
    proc = launch(2, 1, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert strip_times(read_jsonl(workdir / "log.jsonl")) == \
        strip_times(read_jsonl(reference / "log.jsonl"))
    for epoch in (1, EPOCHS):
        assert np.array_equal(features(workdir, epoch), features(reference, epoch))
    results = json.loads((workdir / "results.json").read_text())
    assert results["lpo_accuracy"] == read_json(reference / "results.json")["lpo_accuracy"]


def test_a_refusal_of_process_0_stops_every_process_with_one_line(single_runs, tmp_path):
    from ncfine_jax import workdir as wdir

    run = tmp_path / "run"
    shutil.copytree(single_runs["2x1"][0], run)
    with wdir.lock(run):  # another command holds the workdir: process 0 refuses it
        proc = launch(2, 1, "coarse_digits", *RUN_FLAGS, "--workdir", str(run), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    errors = [line for line in lines if "error: " in line]
    assert any(line.startswith("[0] error: ") and "in use by another command" in line
               for line in errors), lines
    assert any(line.startswith("[1] error: ") and "refused by process 0" in line
               for line in errors), lines
    assert not any("Traceback" in line or "DEADLINE" in line for line in lines), lines


def test_launcher_and_mesh_flags_reject_bad_input(tmp_path):
    bad = [(["-n", "0", "--", "x.py"], "-n 0: must be >= 1"),
           (["-n", "2"], "give it after --"),
           (["-n", "2", "--", "experiments/nope.py"], "experiments/nope.py: no such script")]
    for argv, message in bad:
        proc = subprocess.run([sys.executable, "-m", "ncfine_jax.launch", *argv],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1
    for flags, message in ((["--mesh", "2x1"], "a single run trains one model"),
                           (["--mesh", "1x3"], "needs 3 devices, there are 2"),
                           (["--mesh", "2by2"], "invalid MxD value"),
                           (["--coordinator", "127.0.0.1:1"], "--num-processes, --process-id: "
                                                              "needed")):
        err = io.StringIO()
        with redirect_stderr(err):
            try:
                code = run_main(lambda a: main(EXPERIMENTS["coarse_digits"], a),
                                [*RUN_FLAGS, *flags, "--workdir", str(tmp_path / "w")])
            except SystemExit as e:  # argparse's own errors exit inside parse_args
                code = e.code
        assert code == 2 and message in err.getvalue(), err.getvalue()
        assert err.getvalue().count("\n") == 1 and not (tmp_path / "w").exists()
