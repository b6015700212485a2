"""``python -m ncfine_jax.analyze --out DIR``: DIR is locked as a training workdir is, its
manifest records the outputs, files it does not list are never replaced, and a failed
write is one line."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import numpy as np

from ncfine_jax import manifest
from ncfine_jax import workdir as wdir

from clirun import run_in_process
from test_analyze import planted

FAST = ["--num-coarse", "2", "--clp-reduce", "pca", "--probe-solver", "sklearn",
        "--no-significance"]


def analyze(*argv):
    from ncfine_jax.analyze import main

    return run_in_process(main, list(argv))


def features(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, **planted())
    return path


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != wdir.LOCK_FILE}


def test_outputs_are_recorded_and_a_rerun_replaces_only_them(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
    assert code == 0 and err == "", err
    recorded = manifest.read(out)
    assert set(recorded) >= {wdir.RESULTS_FILE, wdir.REPORT_FILE, wdir.DISTANCES_FILE}
    assert any(n.startswith(wdir.FIGURES_DIR + "/") for n in recorded)
    assert "notes.txt" not in recorded
    assert all(manifest.verify(out, n) is None for n in recorded)
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert manifest.verify(out, wdir.RESULTS_FILE) is None


def test_a_second_command_into_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from ncfine_jax import workdir; "
         "lock = workdir.lock(Path(sys.argv[1]), '--out'); lock.__enter__(); "
         "print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
        assert code == 2 and err.count("\n") == 1, err
        assert f"--out {out}: in use by another command (PID {holder.pid})" in err, err
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder gone (its lock with it), the same command runs.
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
    assert code == 0, err


def test_a_lock_taken_while_the_analysis_ran_is_found_before_writing(tmp_path):
    # Another command claims the folder after the first check: the write is refused too.
    # The command imports the analysis when it runs (its --help stays fast): patch it there.
    from ncfine_jax.analysis import pipeline as command

    out = tmp_path / "out"
    out.mkdir()
    real = command.analyze

    def analyze_then_someone_claims(*args, **kwargs):
        done = real(*args, **kwargs)
        fd = os.open(out / wdir.LOCK_FILE, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        held.append(fd)
        return done

    held = []
    command.analyze = analyze_then_someone_claims
    try:
        code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
    finally:
        command.analyze = real
        for fd in held:
            os.close(fd)
    assert code == 2 and "in use by another command (PID 4242)" in err, err
    assert not (out / wdir.RESULTS_FILE).exists()


def test_outputs_no_manifest_lists_are_never_replaced_and_the_remedy_works(tmp_path):
    out = tmp_path / "out"
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 0, err
    (out / manifest.MANIFEST_FILE).unlink()  # an analysis an older version wrote
    before = snapshot(out)
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 2 and err.count("\n") == 1, err
    assert "holds results.json, report.md, distance_matrices.npz, which no manifest.json" in err
    assert f"python -m ncfine_jax.adopt {out}" in err
    assert snapshot(out) == before
    from ncfine_jax.adopt import main as adopt_main

    assert run_in_process(adopt_main, [str(out)])[0] == 0  # the remedy named
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 0, err
    # A user's own results.json (not an analysis): adopt refuses it; it is never replaced.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(mine))
    assert code == 2 and "holds results.json, which no manifest.json" in err, err
    assert run_in_process(adopt_main, [str(mine)])[0] == 2
    assert json.loads((mine / "results.json").read_text()) == {"accuracy": 0.9}


def test_a_failed_write_into_out_is_one_line_and_the_rerun_works(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").write_text("a file where the figures go")
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {out / 'figures'}/"), err
    assert f"could not be written ({out / 'figures'} is a file, not a folder)" in err
    assert "last good checkpoint" not in err  # an analysis folder has none
    assert (out / "figures").read_text() == "a file where the figures go"
    (out / "figures").unlink()  # the cause removed
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--out", str(out))
    assert code == 0, err


def test_a_damaged_manifest_is_one_line_and_its_remedy_works(tmp_path):
    out = tmp_path / "out"
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 0, err
    (out / manifest.MANIFEST_FILE).write_text("{not json")
    before = snapshot(out)
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 2 and "unreadable manifest" in err and "ncfine_jax.adopt" in err, err
    assert snapshot(out) == before
    from ncfine_jax.adopt import main as adopt_main

    assert run_in_process(adopt_main, [str(out)])[0] == 0  # the remedy named
    code, _, err = analyze(str(features(tmp_path)), *FAST, "--no-figures", "--out", str(out))
    assert code == 0, err
