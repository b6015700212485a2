"""Faults injected for real: bad inputs, concurrent commands, damaged files, broken storage,
degenerate training. Each asserts the exit code, the one-line message and that files on disk
are byte-identical (or that the run recovers to the result of an uninterrupted one)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax import workdir as wdir
from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main
from ncfine_jax.experiment.cli import grid_main
from ncfine_jax.io import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("run_with_faults.py")
FLAGS = ["--epochs", "4", "--width", "16", "--subset", "400,100", "--batch-size", "100",
         "--save-features-at", "2", "4", "--checkpoint-every", "1", "--clp-reduce", "none",
         "--no-progress"]

pytestmark = pytest.mark.filterwarnings("ignore:.*donated buffers were not usable")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(argv, name="coarse_digits"):
    """An experiment's main in-process, as its script runs it: (exit code, stderr)."""
    err = io.StringIO()
    with redirect_stderr(err):
        entry = grid_main if name == "grid" else (lambda a: main(EXPERIMENTS[name], a))
        code = run_main(entry, argv)
    return code, err.getvalue()


def script(*args, env=None, **kwargs) -> subprocess.Popen:
    """run_with_faults.py in a new process (its own PID, its own locks)."""
    full_env = {k: v for k, v in os.environ.items() if k != "NCFINE_TEST_KILL_AT"}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO, **kwargs)


def snapshot(directory: Path) -> dict:
    """Every file's bytes, except the lock file's (the PID of its latest holder)."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != wdir.LOCK_FILE}


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished digits run (checkpoints of epochs 3 and 4 kept) and its file snapshot."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NCFINE_CACHE_DIR", str(root / "cache"))
        code, err = run_cli([*FLAGS, "--workdir", str(root / "run")])
    assert code == 0, err
    return root / "run", snapshot(root / "run")


def copy_run(finished_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    return run


# ------------------------------------------------------------------ checks before writing


@pytest.mark.parametrize("extra,needles", [
    (["--batch-size", "1000", "--overwrite"], ["--batch-size 1000: exceeds the 400 training"]),
    (["--arch", "resnet18", "--overwrite"], ["--arch resnet18: needs images", "--arch mlp"]),
    (["--subset", "400,5", "--overwrite"], ["test split has no sample of", "--subset 400,5"]),
    (["--lr", "inf", "--overwrite"], ["--lr inf: must be a finite number"]),
    (["--lr", "0.2", "--overwrite", "--mesh", "2x1"], ["a single run trains one model"]),
])
def test_late_checks_run_before_overwrite_deletes_anything(finished_run, tmp_path, extra,
                                                           needles):
    run = copy_run(finished_run, tmp_path)
    code, err = run_cli([*FLAGS, "--workdir", str(run), *extra])
    assert_one_line_error(code, err, *needles)
    assert snapshot(run) == finished_run[1]
    fresh = tmp_path / "fresh"
    code, err = run_cli([*FLAGS, "--workdir", str(fresh), *extra])
    assert_one_line_error(code, err, *needles)
    assert not fresh.exists()


def test_ot_workdir_must_be_a_finished_original_label_run(finished_run, tmp_path):
    code, err = run_cli([*FLAGS, "--workdir", str(tmp_path / "w"), "--ot-workdir",
                         str(finished_run[0])])
    assert_one_line_error(code, err, "trained on 'coarse' labels", "original")
    code, err = run_cli([*FLAGS, "--workdir", str(tmp_path / "w"), "--ot-workdir",
                         str(tmp_path)])
    assert_one_line_error(code, err, "holds no finished run")
    assert not (tmp_path / "w").exists()


def test_grid_heatmap_epochs_that_are_never_saved(tmp_path):
    code, err = run_cli(["coarse_digits", *FLAGS, "--lr", "0.05", "--wd", "0", "5e-4",
                         "--heatmap-epochs", "3", "--workdir", str(tmp_path / "g")], "grid")
    assert_one_line_error(code, err, "--heatmap-epochs 3: no features are saved then")
    assert not (tmp_path / "g").exists()


def test_overwrite_never_empties_a_folder_that_holds_no_run(tmp_path):
    folder = tmp_path / "thesis"
    (folder / "figures").mkdir(parents=True)
    (folder / "paper.tex").write_text("\\section{Results}")
    (folder / "figures" / "plot.pdf").write_bytes(b"%PDF")
    before = snapshot(folder)
    for argv, name in (([*FLAGS, "--workdir", str(folder), "--overwrite"], "coarse_digits"),
                       (["coarse_digits", *FLAGS, "--lr", "0.05", "--wd", "0",
                         "--workdir", str(folder), "--overwrite"], "grid")):
        code, err = run_cli(argv, name)
        assert_one_line_error(code, err, "not a workdir of this project", "nothing was changed")
        assert "use --overwrite" not in err
        assert snapshot(folder) == before


def test_overwrite_removes_only_this_projects_files(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "notes.txt").write_text("keep me")
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--lr", "0.02", "--overwrite"])
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "keep me"
    assert [r["epoch"] for r in read_jsonl(run / "log.jsonl")] == [1, 2, 3, 4]
    assert read_json(run / "experiment.json")["lr"] == 0.02
    assert read_json(run / "config.json")["config"]["lr"] == 0.02


# ------------------------------------------------------------------ one owner


def test_a_locked_workdir_is_refused_with_the_holders_pid(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    with wdir.lock(run):
        proc = script("coarse_digits", *FLAGS, "--workdir", str(run))
        out, err = proc.communicate(timeout=300)
    assert_one_line_error(proc.returncode, err, f"in use by another command (PID {os.getpid()})")
    assert snapshot(run) == before


def test_two_commands_on_one_workdir_one_owner(tmp_path):
    run = tmp_path / "run"
    long_flags = [*FLAGS[:1], "60", *FLAGS[2:]]
    first = script("coarse_digits", *long_flags, "--workdir", str(run))
    deadline = time.monotonic() + 300
    while not (run / "log.jsonl").exists():  # the first command owns the workdir and trains
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The same command again: refused by the owner's lock, naming it.
    second = script("coarse_digits", *long_flags, "--workdir", str(run))
    _, err = second.communicate(timeout=300)
    assert_one_line_error(second.returncode, err, f"in use by another command (PID {first.pid})")
    # Another config: refused before it writes anything.
    third = script("coarse_digits", *long_flags, "--workdir", str(run), "--lr", "0.2")
    _, err = third.communicate(timeout=300)
    assert_one_line_error(third.returncode, err, "holds a run with a different config")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert [r["epoch"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, 61))
    assert read_json(run / "experiment.json")["lr"] == read_json(run / "config.json")["config"]["lr"]


def test_a_grid_whose_point_folder_is_in_use_is_refused_and_the_holder_unaffected(tmp_path):
    grid = tmp_path / "g"
    point = grid / "lr0.05_wd0"
    with wdir.lock(grid):  # a grid folder claimed, then stopped before its first write
        pass
    with wdir.lock(point):  # meanwhile another command (a run, or a grid) owns a point
        before = snapshot(grid)
        proc = script("grid", "coarse_digits", *FLAGS, "--lr", "0.05", "--wd", "0", "5e-4",
                      "--workdir", str(grid))  # another process: the lock is per process
        _, err = proc.communicate(timeout=300)
        assert_one_line_error(proc.returncode, err, "grid point", str(point),
                              "in use by another command", f"PID {os.getpid()}")
        assert snapshot(grid) == before
    assert not (grid / wdir.GRID_FILE).exists()
    assert not (grid / "lr0.05_wd0.0005" / wdir.EXPERIMENT_FILE).exists()


def test_a_lock_left_by_a_killed_command_never_blocks(tmp_path):
    run = tmp_path / "run"
    proc = script("coarse_digits", *FLAGS, "--workdir", str(run),
                  env={"NCFINE_TEST_KILL_AT": "2"})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and (run / wdir.LOCK_FILE).exists()
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert code == 0, err
    assert [r["epoch"] for r in read_jsonl(run / "log.jsonl")] == [1, 2, 3, 4]


# ------------------------------------------------------------------ damaged files


def test_unreadable_headers_are_one_line_naming_the_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    for name in ("experiment.json", "config.json"):
        run2 = tmp_path / name
        shutil.copytree(run, run2)
        (run2 / name).write_text((run2 / name).read_text()[:25])
        before = snapshot(run2)
        code, err = run_cli([*FLAGS, "--workdir", str(run2)])
        assert_one_line_error(code, err, str(run2 / name), "unreadable")
        assert snapshot(run2) == before
    # --overwrite may replace a run whose header is damaged (it is this project's file).
    code, err = run_cli([*FLAGS, "--workdir", str(tmp_path / "experiment.json"), "--overwrite"])
    assert code == 0, err


def test_a_log_line_cut_mid_write_is_repaired_on_resume(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "checkpoints" / "4")  # the kill came before epoch 4's checkpoint
    log = (run / "log.jsonl").read_bytes()
    (run / "log.jsonl").write_bytes(log[:-40])  # and mid-way through epoch 4's log line
    with pytest.warns(UserWarning, match="cut off mid-write"):
        code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert code == 0, err
    assert (run / "log.jsonl").read_bytes().count(b"\n") == 4
    assert read_jsonl(run / "log.jsonl")[-1]["loss"] == read_jsonl(finished_run[0] / "log.jsonl")[-1]["loss"]


def damage(checkpoint: Path, how: str) -> None:
    if how == "truncated array":
        data = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d")
        for p in data:
            p.write_bytes(p.read_bytes()[:8])
    elif how == "bytes changed in place":  # same size, inside the largest array file
        largest = max((p for p in checkpoint.rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)
        data = bytearray(largest.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4096] = bytes(b ^ 0x5A for b in data[middle:middle + 4096])
        largest.write_bytes(bytes(data))
    else:  # missing manifest
        for p in checkpoint.rglob("manifest.ocdbt"):
            p.unlink()


@pytest.mark.parametrize("how", ["truncated array", "missing manifest",
                                 "bytes changed in place"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path, how):
    run = copy_run(finished_run, tmp_path)
    damage(run / "checkpoints" / "4", how)
    (run / "features" / "epoch_0004.npz").unlink()
    proc = script("coarse_digits", *FLAGS, "--workdir", str(run))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    # One warning line, nothing else (orbax's own reports of the failed read are kept quiet).
    assert err.count("\n") == 1 and err.startswith("warning: checkpoint of epoch 4 in"), err
    assert "is damaged (" in err and "resuming from the checkpoint of epoch 3" in err
    # Epoch 4 was trained again from epoch 3's checkpoint: the same result as before.
    with np.load(run / "features/epoch_0004.npz") as a, \
            np.load(finished_run[0] / "features/epoch_0004.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    strip = lambda log: [{k: v for k, v in r.items() if "time" not in k} for r in log]  # noqa: E731
    assert strip(read_jsonl(run / "log.jsonl")) == strip(read_jsonl(finished_run[0] / "log.jsonl"))
    # No intact checkpoint at all: one line saying what to delete.
    for epoch in ("3", "4"):
        damage(run / "checkpoints" / epoch, how)
    before = snapshot(run)
    proc = script("coarse_digits", *FLAGS, "--workdir", str(run))
    _, err = proc.communicate(timeout=300)
    assert_one_line_error(proc.returncode, err, "no intact checkpoint", "is damaged (",
                          f"delete {run / 'checkpoints'}", "--overwrite")
    assert snapshot(run) == before
    if how == "bytes changed in place":  # the remedy it names works
        code, err = run_cli([*FLAGS, "--workdir", str(run), "--overwrite"])
        assert code == 0, err
        with np.load(run / "features/epoch_0004.npz") as a, \
                np.load(finished_run[0] / "features/epoch_0004.npz") as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_a_folder_with_run_files_but_no_manifest_is_refused_until_adopted(finished_run,
                                                                         tmp_path):
    from ncfine_jax.adopt import main as adopt_main

    run = copy_run(finished_run, tmp_path)
    (run / wdir.MANIFEST_FILE).unlink()  # a workdir of an older version, or a home folder
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        code, err = run_cli([*FLAGS, "--workdir", str(run), *extra])
        assert_one_line_error(code, err, "no manifest.json", f"python -m ncfine_jax.adopt {run}")
        assert snapshot(run) == before
    assert run_main(adopt_main, [str(run)]) == 0  # the remedy the line names
    assert "notes.txt" not in read_json(run / wdir.MANIFEST_FILE)["files"]
    code, err = run_cli([*FLAGS, "--workdir", str(run)])  # resumes: finished, analysed
    assert code == 0, err
    assert {k: v for k, v in snapshot(run).items() if k.name != wdir.MANIFEST_FILE} == {
        k: v for k, v in before.items()}


@pytest.mark.parametrize("name,content,needle", [
    ("experiment.json", "[1, 2]", "a JSON list, not an object"),
    ("experiment.json", "null", "a JSON null, not an object"),
    ("config.json", "[1]", "a JSON list, not an object"),
    ("config.json", '{"config": "x"}', "'config' is str"),
    ("diverged.json", "[]", "a JSON list, not an object"),
])
def test_a_header_of_the_wrong_shape_is_one_line_naming_it(finished_run, tmp_path, name,
                                                           content, needle):
    run = copy_run(finished_run, tmp_path)
    (run / name).write_text(content)
    before = snapshot(run)
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert_one_line_error(code, err, str(run / name), needle, "--overwrite")
    assert snapshot(run) == before


def test_damaged_outputs_are_found_on_rerun_and_the_remedy_works(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    log = (run / "log.jsonl").read_text().splitlines(keepends=True)
    (run / "log.jsonl").write_text("".join(log[:2] + log[:2]))  # lines written twice
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert_one_line_error(code, err, "line 3 repeats or goes back to epoch 1", "--overwrite")
    run2 = copy_run(finished_run, tmp_path / "2")
    features = run2 / "features" / "epoch_0004.npz"
    features.write_bytes(features.read_bytes()[:-100])  # truncated after it was written
    before = snapshot(run2)
    code, err = run_cli([*FLAGS, "--workdir", str(run2)])
    assert_one_line_error(code, err, str(features), "damaged", "--overwrite")
    assert snapshot(run2) == before
    for path in (run, run2):  # follow the remedy: the run is trained afresh, to the same result
        code, err = run_cli([*FLAGS, "--workdir", str(path), "--overwrite"])
        assert code == 0, err
        assert read_json(path / "results.json")["lpo_accuracy"] == read_json(
            finished_run[0] / "results.json")["lpo_accuracy"]
    # A results.json of the wrong shape is analysed again, never summarised.
    (run / "results.json").write_text('{"analysis": 5}')
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert code == 0, err
    assert isinstance(read_json(run / "results.json")["analysis"], dict)


# ------------------------------------------------------------------ storage


def test_workdir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target, needle in ((blocker / "run", "is a file, not a directory"),
                           (Path("/proc/ncfine_run"), "cannot be created")):
        code, err = run_cli([*FLAGS, "--workdir", str(target)])
        assert_one_line_error(code, err, str(target), needle)
    assert blocker.read_text() == "x"


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (root only; skips where mounting fails)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True,
                   capture_output=True)


def test_read_only_storage_is_one_line(finished_run, tmp_path):
    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        run = mnt / "run"
        shutil.copytree(finished_run[0], run)
        remount(mnt, "ro")
        before = snapshot(run)
        for argv in ([*FLAGS, "--workdir", str(run)],
                     [*FLAGS, "--workdir", str(mnt / "new")]):
            code, err = run_cli(argv)
            assert_one_line_error(code, err, "Read-only file system")
        assert snapshot(run) == before


def test_disk_full_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path):
    # Width 512: a checkpoint (params + momentum) takes ~2.2 MB; the third does not fit in
    # 6 MB next to the two kept ones and the rest of the workdir.
    flags = [*FLAGS, "--width", "512", "--epochs", "6"]
    with tmpfs(tmp_path / "mnt", "6m") as mnt:
        run = mnt / "run"
        proc = script("coarse_digits", *flags, "--workdir", str(run))
        _, err = proc.communicate(timeout=300)
        # The whole of stderr is one line (orbax's thread reports are kept quiet).
        assert_one_line_error(proc.returncode, err, "could not be written (No space left on "
                              "device)", "last good checkpoint: epoch")
        good = int(err.rsplit("epoch", 1)[1].strip())
        assert good >= 1
        remount(mnt, "size=64m")
        code, err = run_cli([*flags, "--workdir", str(run)])
        assert code == 0, err
        log = read_jsonl(run / "log.jsonl")
        assert [r["epoch"] for r in log] == list(range(1, 7))


# ------------------------------------------------------------------ degenerate training


def test_an_exploding_loss_stops_the_run_with_one_line(tmp_path):
    run = tmp_path / "run"
    code, err = run_cli([*FLAGS, "--lr", "1e6", "--workdir", str(run)])
    assert_one_line_error(code, err, "training diverged: loss is", "in epoch 1",
                          "last good checkpoint: epoch none")
    assert read_json(run / "diverged.json")["reason"] in ("exploded", "nonfinite", "collapsed")
    assert not (run / "results.json").exists()
    before = snapshot(run)
    code, err2 = run_cli([*FLAGS, "--lr", "1e6", "--workdir", str(run)])
    assert (code, err2) == (2, err) and snapshot(run) == before  # reported, not retrained


def test_a_grid_whose_every_point_diverged_exits_2(tmp_path):
    argv = ["coarse_digits", *FLAGS, "--lr", "1e6", "2e6", "--wd", "0",
            "--workdir", str(tmp_path / "g")]
    code, err = run_cli(argv, "grid")
    assert_one_line_error(code, err, "every grid point diverged")
    points = read_json(tmp_path / "g" / "summary.json")["points"]
    assert all(p["diverged"] and p["diverged_epoch"] == 1 for p in points)


# ------------------------------------------------------------------ folders on another disk


def test_folders_linked_to_another_disk_run_overwrite_and_resume(tmp_path):
    # The workdir itself and its checkpoints/ and features/ are links to a scratch disk,
    # made before the first run (a cluster habit). --overwrite with another config once
    # trained every epoch, then stopped with "damaged (not recorded as written
    # completely); rerun with --overwrite", again and again.
    scratch = tmp_path / "scratch"
    for name in ("run", "ckpt", "feat"):
        (scratch / name).mkdir(parents=True)
    run = tmp_path / "run"
    os.symlink(scratch / "run", run)
    os.symlink(scratch / "ckpt", run / "checkpoints")
    os.symlink(scratch / "feat", run / "features")
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--no-analysis"])
    assert code == 0, err
    recorded = read_json(run / wdir.MANIFEST_FILE)["files"]
    assert "features/epoch_0004.npz" in recorded and "checkpoints/4/_CHECKPOINT_METADATA" in recorded
    (scratch / "feat" / "mine.npz").write_bytes(b"a user's file beside the run's")
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--lr", "0.02", "--overwrite"])
    assert code == 0, err  # trained once, analysed, done
    assert (scratch / "feat" / "mine.npz").read_bytes() == b"a user's file beside the run's"
    assert (run / "features").is_symlink() and (run / "checkpoints").is_symlink()
    assert read_json(run / wdir.RESULTS_FILE)["experiment"]["lr"] == 0.02
    log = (run / wdir.LOG_FILE).read_bytes()
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--lr", "0.02"])
    assert (code, err) == (0, "") and (run / wdir.LOG_FILE).read_bytes() == log  # resumed: done


def test_a_run_moved_to_another_disk_resumes_and_its_remedies_work(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("checkpoints", "features"):  # moved there, linked back
        shutil.move(str(run / name), str(scratch / name))
        os.symlink(scratch / name, run / name)
    (scratch / "features" / "notes.txt").write_text("mine")
    shutil.rmtree(run / "checkpoints" / "4")
    (run / "features" / "epoch_0004.npz").unlink()
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--no-analysis"])
    assert code == 0, err
    with np.load(run / "features/epoch_0004.npz") as a, \
            np.load(finished_run[0] / "features/epoch_0004.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # A feature file damaged on the other disk: one line, and its remedy works at once.
    damaged = run / "features" / "epoch_0002.npz"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    (run / wdir.RESULTS_FILE).unlink()
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert_one_line_error(code, err, str(damaged), "damaged", "rerun with --overwrite")
    code, err = run_cli([*FLAGS, "--workdir", str(run), "--overwrite"])
    assert code == 0, err
    assert read_json(run / wdir.RESULTS_FILE)["lpo_accuracy"] == read_json(
        finished_run[0] / wdir.RESULTS_FILE)["lpo_accuracy"]
    assert (scratch / "features" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ the log against the run


def test_a_log_record_beyond_the_run_is_refused_and_the_remedy_works(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    log = (run / wdir.LOG_FILE).read_bytes()
    (run / wdir.LOG_FILE).write_bytes(log + b'{"epoch": 99, "loss": 0.1}\n')
    before = snapshot(run)
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert_one_line_error(code, err, "line 5 records epoch 99, outside this run's epochs "
                          "1..4", "delete line 5 of it", "--overwrite")
    assert snapshot(run) == before
    lines = (run / wdir.LOG_FILE).read_bytes().splitlines(keepends=True)
    (run / wdir.LOG_FILE).write_bytes(b"".join(lines[:4]))  # the remedy named
    code, err = run_cli([*FLAGS, "--workdir", str(run)])
    assert (code, err) == (0, "")
    assert {k: v for k, v in snapshot(run).items() if k.name != wdir.MANIFEST_FILE} == {
        k: v for k, v in finished_run[1].items() if k.name != wdir.MANIFEST_FILE}


def test_a_repeated_record_after_the_checkpoint_is_cut_back_with_a_warning(finished_run,
                                                                          tmp_path):
    run = copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "checkpoints" / "4")
    (run / "features" / "epoch_0004.npz").unlink()
    lines = (run / wdir.LOG_FILE).read_bytes().splitlines(keepends=True)
    (run / wdir.LOG_FILE).write_bytes(b"".join(lines + lines[3:]))  # epoch 4 twice
    with pytest.warns(UserWarning, match=r"records after epoch 3 \(lines 4..5\) repeat or "
                                         "skip epochs; cut back to the checkpoint of epoch 3"):
        code, err = run_cli([*FLAGS, "--workdir", str(run), "--no-analysis"])
    assert code == 0, err
    strip = lambda log: [{k: v for k, v in r.items() if "time" not in k} for r in log]  # noqa: E731
    assert strip(read_jsonl(run / "log.jsonl")) == strip(read_jsonl(finished_run[0] / "log.jsonl"))


# ------------------------------------------------------------------ stderr: our lines only


def test_library_log_lines_never_reach_stderr(finished_run, tmp_path):
    # Damaged checkpoint metadata once printed "ERROR:absl:Failed to json parse Metadata
    # file ..." beside the project's warning; an unfinished checkpoint write left by a
    # killed run, "WARNING:absl:Attempted to create temporary directory ...".
    run = copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "4" / "_CHECKPOINT_METADATA").write_text('{"bad')
    shutil.copytree(run / "checkpoints" / "3", run / "checkpoints" / "4.orbax-checkpoint-tmp")
    (run / "features" / "epoch_0004.npz").unlink()
    proc = script("coarse_digits", *FLAGS, "--workdir", str(run), "--no-analysis")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert err.count("\n") == 1 and err.startswith("warning: checkpoint of epoch 4 in"), err
    assert "resuming from the checkpoint of epoch 3" in err
    assert not (run / "checkpoints" / "4.orbax-checkpoint-tmp").exists()
