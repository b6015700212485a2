"""A run file that cannot be written (checkpoint, features, log, manifest, results, figures):
the command ends at once with one line naming the file, the cause and the last good
checkpoint; no thread is left waiting; nothing already on disk is lost; once the cause is
gone, the same command resumes from that checkpoint and ends as an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax import manifest
from ncfine_jax import workdir as wdir
from ncfine_jax.io import read_json, read_jsonl

from test_reliability import FLAGS, assert_one_line_error, run_cli, script, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:.*donated buffers were not usable")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished, analysed digits run (checkpoints of epochs 3 and 4 kept)."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NCFINE_CACHE_DIR", str(root / "cache"))
        code, err = run_cli([*FLAGS, "--workdir", str(root / "run")])
    assert code == 0, err
    return root / "run"


def stopped_after_epoch_3(finished: Path, tmp_path: Path) -> Path:
    """The run as a command stopped after epoch 4's log line left it: epoch 4's
    checkpoint and features and the analysis not written yet."""
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    shutil.rmtree(run / "checkpoints" / "4")
    (run / "features" / "epoch_0004.npz").unlink()
    (run / wdir.RESULTS_FILE).unlink()
    return run


def strip_times(log):
    return [{k: v for k, v in r.items() if "time" not in k} for r in log]


def assert_ends_as_the_uninterrupted_run(run: Path, finished: Path) -> None:
    assert strip_times(read_jsonl(run / "log.jsonl")) == strip_times(read_jsonl(finished / "log.jsonl"))
    with np.load(run / "features/epoch_0004.npz") as a, \
            np.load(finished / "features/epoch_0004.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert manifest.verify(run, "checkpoints/4") is None


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (a folder or a file) bind-mounted read-only over itself (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root")
    proc = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True,
                       capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def a_file_in_place_of(path: Path):
    """``path`` (a folder) moved aside and a plain file put in its place; put back after."""
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    path.write_text("not a folder")
    try:
        yield path
    finally:
        path.unlink()
        aside.rename(path)


def threads_started_during(call):
    """(call's result, threads it started that are still alive a moment after it returned,
    other than daemons)."""
    before = set(threading.enumerate())
    result = call()
    deadline = time.monotonic() + 5
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()
                and not t.daemon]
        if not left or time.monotonic() > deadline:
            return result, left
        time.sleep(0.1)


def unchanged_except(run: Path, before: dict, changing=("log.jsonl", "manifest.json")) -> None:
    """Every file there before is there with the same bytes, except those a run changes
    as it goes (the log is cut back to the checkpoint and appended, the manifest updated)."""
    now = snapshot(run)
    for name, data in before.items():
        if str(name) not in changing:
            assert now.get(name) == data, name


@pytest.mark.parametrize("target, how, needles", [
    ("checkpoints", read_only, ["checkpoint of epoch 4 in", "could not be written "
                                "(Read-only file system); last good checkpoint: epoch 3"]),
    ("checkpoints", a_file_in_place_of, ["checkpoints", "is a file, not a folder; move it "
                                         "away and rerun"]),
    ("features", read_only, ["features/epoch_0004.npz: could not be written (Read-only "
                             "file system); last good checkpoint: epoch 3"]),
    ("features", a_file_in_place_of, ["features/epoch_0004.npz: could not be written (",
                                      "features is a file, not a folder); last good "
                                      "checkpoint: epoch 3"]),
    ("log.jsonl", read_only, ["log.jsonl: could not be written (Device or resource busy); "
                              "last good checkpoint: epoch 3"]),
    ("manifest.json", read_only, ["manifest.json: could not be written (Device or resource "
                                  "busy); last good checkpoint: epoch 3"]),
])
def test_a_failed_write_during_training_is_one_line_and_the_rerun_resumes(
        finished, tmp_path, target, how, needles):
    run = stopped_after_epoch_3(finished, tmp_path)
    before = snapshot(run)
    argv = [*FLAGS, "--workdir", str(run), "--no-analysis"]
    with how(run / target):
        (code, err), left = threads_started_during(lambda: run_cli(argv))
        assert_one_line_error(code, err, *needles)
        assert not left, left  # no writer thread left waiting
    unchanged_except(run, before)
    assert manifest.verify(run, "checkpoints/3") is None
    code, err = run_cli(argv)  # the cause removed: resumes from epoch 3's checkpoint
    assert code == 0, err
    assert_ends_as_the_uninterrupted_run(run, finished)


def test_a_failed_write_of_the_analysis_names_the_finished_checkpoint(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / wdir.RESULTS_FILE).unlink()  # analysed again
    before = snapshot(run)
    with read_only(run / wdir.FIGURES_DIR):
        code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert_one_line_error(code, err, f"{run / wdir.FIGURES_DIR}/", "could not be written "
                          "(Read-only file system); last good checkpoint: epoch 4")
    unchanged_except(run, before)
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert code == 0, err
    assert read_json(run / wdir.RESULTS_FILE)["lpo_accuracy"] == read_json(
        finished / wdir.RESULTS_FILE)["lpo_accuracy"]


def test_the_reproduction_a_read_only_checkpoint_folder_no_longer_hangs(finished, tmp_path):
    # A finished run with its last checkpoint, features and results deleted, checkpoints/
    # mounted read-only, the same command again: once it printed the error line and
    # never exited (orbax's writer threads waited 300 s for a folder that never came).
    run = stopped_after_epoch_3(finished, tmp_path)
    with read_only(run / "checkpoints"):
        proc = script("coarse_digits", *FLAGS, "--workdir", str(run), "--no-analysis")
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the command did not exit after its checkpoint failed")
    assert_one_line_error(proc.returncode, err, "checkpoint of epoch 4", "Read-only file "
                          "system", "last good checkpoint: epoch 3")
