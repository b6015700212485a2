"""experiments/paper.py: the plan of every scale, the tiny scale end to end (kill + resume,
skipped CIFAR-100, every promised file), failures and bad input, the claim measures."""

import io as _io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax import workdir as wdir
from ncfine_jax.cli import run_main
from ncfine_jax.experiment.grid import point_name
from ncfine_jax.paper import build_plan, get_scale, plan_table, select
from ncfine_jax.paper import measures
from ncfine_jax.paper.claims import CLAIMS, FAILS, HOLDS, NOT_RUN, UNINFORMATIVE, VERDICTS
from ncfine_jax.paper.command import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "paper.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "paper-cache"))


def run_cli(argv):
    """``main`` as the script runs it, in-process: (exit code, stdout, stderr)."""
    out, err = _io.StringIO(), _io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run_main(main, argv)
        except SystemExit as e:  # argparse errors exit from inside parse_args
            code = e.code
    return code, out.getvalue(), err.getvalue()


def cifar_like_tar(path: Path) -> Path:
    from test_experiments import make_cifar_like_tar

    # 30 / 10 images per class: exactly the tiny scale's 300 / 100 subset.
    return make_cifar_like_tar(path, n_train=30, n_test=10)


def files_of(directory: Path) -> dict:
    return {p.relative_to(directory): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the plan


@pytest.mark.parametrize("scale", ["tiny", "cpu", "full"])
def test_dry_run_prints_every_item_and_writes_nothing(tmp_path, scale):
    root = tmp_path / "paper"
    code, out, err = run_cli(["--scale", scale, "--workdir", str(root), "--dry-run",
                              "--cifar100", "cifar100"])
    assert code == 0, err
    assert not root.exists()
    plan = build_plan(scale)
    for item in plan:
        assert f"{item.name} [{item.kind}] -> {root / item.name}" in out
    images = sum(i.cost_images for i in plan)
    assert f"total: {len(plan)} items" in out
    assert (f"{images / 1e6:.2f}M training images" if images >= 1e6 else f"{images:,} training images") in out
    if scale == "full":
        grid = next(i for i in plan if i.kind == "grid")
        # the paper's 3 x 3 grid plus the wd = 0 column, 350 epochs on 50,000 images each
        assert len(grid.configs) == 12 and grid.cost_images == 12 * 350 * 50_000
        assert {c.arch for i in plan if i.kind == "run" for c in i.configs} == {
            "resnet18", "densenet121", "vgg16"}
        assert any(c.epochs == 1000 for i in plan if i.kind == "run" for c in i.configs)


def test_dry_run_marks_items_without_their_data_set_skipped_and_leaves_them_out(
        tmp_path, monkeypatch):
    root = tmp_path / "paper"
    monkeypatch.setenv("NCFINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))
    plan = build_plan("cpu")
    # A path that does not exist is bad input: one line, exit 2, nothing planned or written.
    missing = tmp_path / "no_such_cifar10.tar.gz"
    code, out, err = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run",
                              "--cifar10", str(missing)])
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith(f"error: --cifar10 {missing}: no such file or folder")
    # The name, with no archive on this machine: the dry run says a run downloads it; the
    # CIFAR-100 items (no --cifar100) are marked skipped and left out of the total.
    code, out, err = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run",
                              "--cifar10", "cifar10"])
    assert code == 0, err
    assert ("data --cifar10 cifar10: not on this machine" in out
            and "the run downloads https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
            in out and "--cifar100" not in out.split("\n 1.")[0]), out
    for item in plan:
        if item.dataset == "cifar100":
            assert f"{item.name} [skipped: --cifar100 not given]" in out
        elif item.dataset == "cifar10":
            assert f"{item.name} [{item.kind}]" in out
        else:
            assert f"{item.name} [gm]" in out
    images = sum(i.cost_images for i in plan if i.dataset == "cifar10")
    assert (f"total: {len(plan) - 2} items, {images:,} training images" in out
            and "(2 skipped item(s) not counted)" in out)
    # The official folder in $NCFINE_DATA_DIR, or a path given: the dry run names it.
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    code, out, _ = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run"])
    assert f"data --cifar10 cifar10: {tmp_path / 'data' / 'cifar-10-batches-py'}" in out
    given = tmp_path / "cifar.tar.gz"
    given.write_bytes(b"")
    code, out, _ = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run",
                            "--cifar10", str(given)])
    assert code == 0 and f"data --cifar10: {given.resolve()}" in out
    assert not root.exists()


def test_plan_drives_the_registered_experiments_with_the_main_run_in_the_grid():
    from ncfine_jax.experiment import EXPERIMENTS

    for scale in ("tiny", "cpu", "full"):
        s = get_scale(scale)
        plan = build_plan(s)
        names = [i.name for i in plan]
        assert len(set(names)) == len(names)
        assert names.index("original_cifar10") < names.index("coarse_cifar10_grid")
        grid = next(i for i in plan if i.kind == "grid")
        assert grid.point(s.lr, s.weight_decay) is not None  # the main run
        assert grid.point(s.lr, 0.0) is not None  # App. A's wd = 0
        for item in plan:
            for c in item.configs:
                defaults = EXPERIMENTS[c.experiment].defaults
                assert c.labels == defaults.labels
                assert c.train.momentum == defaults.train.momentum
                assert c.data.subset in (s.subset, *s.role_subsets.values())


def test_only_selects_items_and_rejects_unknown_names(tmp_path):
    root = tmp_path / "paper"
    code, out, err = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run",
                              "--only", "gm", "original_cifar10"])
    assert code == 0, err
    assert "original_cifar10 [run]" in out and "gm_fig21_tau2 [gm]" in out
    assert "coarse_cifar10_grid" not in out and "fine_cifar10" not in out
    assert "total: 9 items" in out  # 4 sweeps x 2 parameterisations + the OT run
    assert [i.name for i in select(build_plan("tiny"), ["gm_fig21_tau2", "fine_cifar10"])] \
        == ["fine_cifar10", "gm_fig21_tau2"]  # plan order
    code, out, err = run_cli(["--scale", "tiny", "--workdir", str(root), "--only", "nope"])
    assert code == 2 and err.startswith("error: --only nope") and err.count("\n") == 1, err
    assert not root.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--scale", "huge", "--workdir", "{root}"], "--scale"),
    (["--scale", "tiny"], "--workdir"),
    (["--scale", "tiny", "--workdir", "{root}", "--only"], "--only"),
    (["--scale", "tiny", "--workdir", "{root}", "--dry-run", "--calibrate"], "--calibrate"),
    (["--scale", "tiny", "--workdir", "{root}", "--cifar10", " "], "empty"),
])
def test_bad_flags_one_error_line_exit_2(tmp_path, argv, needle):
    root = tmp_path / "paper"
    code, out, err = run_cli([a.replace("{root}", str(root)) for a in argv])
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not root.exists()


def test_script_bad_flag_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scale", "tiny", "--workdir",
                           str(tmp_path / "w"), "--bogus"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "w").exists()


def test_workdir_of_another_scale_or_foreign_folder_is_refused_unchanged(tmp_path):
    from ncfine_jax.io import atomic_write_json

    root = tmp_path / "paper"
    with wdir.lock(root):  # a paper DIR of another scale, as the project writes one
        atomic_write_json(root / "paper.json", {"scale": "full", "cifar10": "cifar10"})
    before = files_of(root)
    code, _, err = run_cli(["--scale", "tiny", "--workdir", str(root), "--only", "gm_fig21_tau2"])
    assert code == 2 and "another scale" in err and err.count("\n") == 1, err
    assert files_of(root) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code, _, err = run_cli(["--scale", "tiny", "--workdir", str(foreign), "--only", "gm"])
    assert code == 2 and "not a workdir of this project" in err, err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ the tiny scale


def _wait_for_done(status_path: Path, proc, count: int, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("the plan ended before it could be killed: "
                                 + proc.stderr.read().decode()[-3000:])
        try:
            statuses = json.loads(status_path.read_text())
        except (OSError, ValueError):
            statuses = {}
        done = [n for n, s in statuses.items() if s.get("state") == "done"]
        if len(done) >= count:
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} items done after {timeout} s")


@pytest.fixture(scope="module")
def tiny_paper(tmp_path_factory):
    """The tiny plan on a synthetic class-folder CIFAR-10: SIGKILLed once two items are
    done, then rerun to the end. Returns (root, {item done before the kill: its seconds},
    finished logs before the kill, rerun)."""
    base = tmp_path_factory.mktemp("tiny_paper")
    tar = cifar_like_tar(base / "cifar_like.tar.gz")
    root = base / "paper"
    cmd = [sys.executable, str(SCRIPT), "--scale", "tiny", "--workdir", str(root),
           "--cifar10", str(tar), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), NCFINE_CACHE_DIR=str(base / "cache"))
    env.pop("NCFINE_DATA_DIR", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        statuses = _wait_for_done(root / "paper_status.json", proc, 2, timeout=600)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = {n: s["seconds"] for n, s in statuses.items() if s["state"] == "done"}  # name: s
    logs = {p: (p.read_bytes(), p.stat().st_mtime_ns)
            for name in done for p in (root / name).rglob("log.jsonl")}
    assert logs  # at least one finished training run to check
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return root, done, logs, rerun


def test_tiny_rerun_after_sigkill_finishes_without_retraining(tiny_paper):
    root, done, logs, rerun = tiny_paper
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for path, (content, mtime) in logs.items():
        assert path.read_bytes() == content, path
        assert path.stat().st_mtime_ns == mtime, path
    for name in done:
        assert f"{name}: done (already finished)" in rerun.stdout
    statuses = json.loads((root / "paper_status.json").read_text())
    for item in build_plan("tiny"):
        expected = "skipped" if item.dataset == "cifar100" else "done"
        assert statuses[item.name]["state"] == expected, (item.name, statuses[item.name])
    for name, seconds in done.items():  # what training them took, not the rerun's check
        assert statuses[name]["seconds"] >= seconds > 0, (name, statuses[name], seconds)
    # The run killed mid-training resumed: one log line per epoch, none twice.
    for log in root.rglob("log.jsonl"):
        epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
        assert epochs == list(range(1, len(epochs) + 1)), log


def test_tiny_report_covers_every_claim_and_every_promised_file(tiny_paper):
    root, _, _, rerun = tiny_paper
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    report = json.loads((root / "paper_report.json").read_text())
    md = (root / "paper_report.md").read_text()
    assert report["scale"] == "tiny" and "scale `tiny`" in md.splitlines()[0]
    assert [c["key"] for c in report["claims"]] == [c.key for c in CLAIMS]
    by_key = {c["key"]: c for c in report["claims"]}
    for c in report["claims"]:
        assert c["verdict"] in VERDICTS
        assert c["source"] and c["criterion"] and c["reason"] and c["measured"]
        assert f"**{c['verdict']}**" in md
        for fig in c["figures"]:
            assert (root / fig).read_bytes()[:8] == PNG, fig
            assert f"]({fig})" in md
    # CIFAR-100 was not given: skipped, and its claim says so.
    assert by_key["cifar100"]["verdict"] == NOT_RUN
    assert "skipped: --cifar100 not given" in by_key["cifar100"]["measured"]
    # The tiny scale trains no DenseNet / VGG and no ResNet-18.
    assert "not in the tiny plan" in by_key["densenet121"]["measured"]
    assert "not resnet18" in by_key["resnet18"]["measured"]
    # Everything the runs promise: each run's files and figures, the grid's, the sweeps'.
    for item in build_plan("tiny"):
        if item.dataset == "cifar100":
            assert not (root / item.name).exists()
            continue
        if item.kind == "gm":
            data = json.loads((root / item.name / "results.json").read_text())
            assert data["records"] and data["study"]["vary"] == item.study.vary
            assert (root / item.name / f"gaussian_mixture_{item.study.vary}.png").read_bytes()[:8] == PNG
            continue
        runs = [root / item.name] if item.kind == "run" else \
            [root / item.name / f"lr{c.lr:g}_wd{c.weight_decay:g}" for c in item.configs]
        for run in runs:
            results = json.loads((run / "results.json").read_text())
            for fig in results["figures"]:
                assert (run / fig).read_bytes()[:8] == PNG, run / fig
            assert (run / "distance_matrices.npz").is_file()
        if item.kind == "grid":
            summary = json.loads((root / item.name / "summary.json").read_text())
            for fig in summary["figures"]:
                assert (root / item.name / fig).read_bytes()[:8] == PNG
    for fig in report["figures"]:
        assert (root / fig).read_bytes()[:8] == PNG
    assert {Path(f).name for f in report["figures"]} == {"nc1_msdr.png", "d_contrast.png",
                                                        "structure_by_run.png"}
    # The main run is judged from its own files: the reported MSDR is the run's last one.
    tiny = get_scale("tiny")
    main = json.loads((root / "coarse_cifar10_grid" / point_name(tiny.lr, tiny.weight_decay)
                       / "results.json").read_text())
    last = str(max(int(e) for e in main["msdr"]))
    msdr = by_key["msdr_above_1"]
    assert msdr["values"]["msdr"] == pytest.approx(main["msdr"][last], rel=1e-5)
    assert msdr["values"]["msdr_p_value"] == main["fine_structure"]["msdr_p_value"]
    # The tiny networks are far from the terminal phase: no verdict on trained networks.
    assert msdr["verdict"] == UNINFORMATIVE and msdr["regime"]["met"] is False
    assert msdr["regime"]["train_accuracy"] == main["final_train_accuracy"] < 0.99
    assert "regime not met" in msdr["measured"]
    cifar = [c for c in report["claims"] if not c["key"].startswith("gm_")]
    assert {c["verdict"] for c in cifar} <= {UNINFORMATIVE, NOT_RUN}, [
        (c["key"], c["verdict"]) for c in cifar]


def test_failed_item_is_reported_and_the_others_run(tmp_path):
    from ncfine_jax.io import atomic_write_json
    from ncfine_jax.paper.runner import header

    root = tmp_path / "paper"
    tar = cifar_like_tar(tmp_path / "c.tar.gz")

    # A paper DIR whose fine_cifar10 folder holds a user's file: that run refuses it.
    with wdir.lock(root):
        atomic_write_json(root / wdir.PAPER_FILE, header("tiny", str(tar.resolve())))
    (root / "fine_cifar10").mkdir()
    (root / "fine_cifar10" / "notes.txt").write_text("not a run")
    code, out, err = run_cli(["--scale", "tiny", "--workdir", str(root), "--cifar10", str(tar),
                              "--no-progress", "--only", "fine_cifar10", "gm_fig21_tau2",
                              "gm_fig21_tau2_pytorch"])
    assert code == 2 and err.count("\n") == 1 and "fine_cifar10" in err, err
    statuses = json.loads((root / "paper_status.json").read_text())
    assert statuses["fine_cifar10"]["state"] == "failed"
    assert "not a workdir of this project" in statuses["fine_cifar10"]["reason"]
    assert statuses["gm_fig21_tau2"]["state"] == "done"  # the item after the failure ran
    assert statuses["gm_fig21_tau2_pytorch"]["state"] == "done"
    assert statuses["original_cifar10"]["state"] == "not selected"
    report = json.loads((root / "paper_report.json").read_text())
    by_key = {c["key"]: c for c in report["claims"]}
    assert by_key["fine_cifar10"]["verdict"] == NOT_RUN
    assert "fine_cifar10 failed" in by_key["fine_cifar10"]["measured"]
    assert "not in --only" in by_key["clp_close_to_ot"]["measured"]
    assert by_key["gm_similar_subclasses"]["verdict"] in (HOLDS, FAILS, UNINFORMATIVE)
    assert (root / "fine_cifar10" / "notes.txt").read_text() == "not a run"
    assert (root / "gm_fig21_tau2" / "gaussian_mixture_tau2.png").read_bytes()[:8] == PNG


def test_tiny_on_the_shared_cifar10_jpeg(tmp_path, shared_cifar10_jpeg, shared_cifar10_cache,
                                         monkeypatch):
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(shared_cifar10_cache))
    root = tmp_path / "paper"
    code, out, err = run_cli(["--scale", "tiny", "--workdir", str(root), "--cifar10",
                              str(shared_cifar10_jpeg), "--no-progress", "--only",
                              "random_coarse_cifar10"])
    assert code == 0, err
    results = json.loads((root / "random_coarse_cifar10" / "results.json").read_text())
    inputs = results["analysis"]["inputs"][str(results["analysis"]["epoch"])]
    assert inputs["n_train"] == 300 and inputs["n_test"] == 100
    assert 0 <= results["clp_accuracy"] <= 1 and 0 <= results["lpo_accuracy"] <= 1
    report = json.loads((root / "paper_report.json").read_text())
    by_key = {c["key"]: c for c in report["claims"]}
    assert by_key["random_coarse"]["verdict"] == UNINFORMATIVE  # tiny: far from terminal
    assert by_key["msdr_above_1"]["verdict"] == NOT_RUN
    assert "not in --only" in by_key["msdr_above_1"]["measured"]


# ------------------------------------------------------------------ the measures


def test_d_contrasts_against_a_direct_float64_computation():
    rng = np.random.default_rng(int(time.time()))
    superclass = np.array([0, 1, 2, 0, 1, 2])
    D = rng.uniform(1, 10, (6, 6))
    D = (D + D.T) / 2
    diag, lines = measures.d_contrasts(D.astype(np.float32), superclass)
    off = [D[i, j] for i in range(6) for j in range(6) if i != j]
    same = [D[i, j] for i in range(6) for j in range(6) if i != j and superclass[i] == superclass[j]]
    across = [D[i, j] for i in range(6) for j in range(6) if superclass[i] != superclass[j]]
    assert diag == pytest.approx(np.mean(off) / np.mean(np.diag(D)), rel=1e-5)
    assert lines == pytest.approx(np.mean(across) / np.mean(same), rel=1e-5)


def test_the_structure_figure_marks_each_run_with_its_claims_verdict_only(tmp_path, monkeypatch):
    from ncfine_jax.paper import figures as pf

    drawn = {}
    monkeypatch.setattr(pf, "_save", lambda fig, path, caption: drawn.setdefault("fig", fig))
    rows = [{"label": "main", "clp": 0.9, "lpo": 0.9, "clusters": 0.9, "chance": 0.5,
             "verdict": "uninformative"},  # high bars, but the claim did not hold
            {"label": "long", "clp": 0.4, "lpo": 0.5, "clusters": 0.7, "chance": 0.5,
             "verdict": "holds"},
            {"label": "other", "clp": 0.8, "lpo": 0.8, "clusters": 0.8, "chance": 0.5}]
    pf.plot_structure_bars(rows, tmp_path / "s.png", title="t", caption="c")
    texts = [t.get_text() for t in drawn["fig"].axes[0].texts]
    assert texts == ["uninformative", "holds"]


def test_the_msdr_figure_shades_each_runs_permutation_null(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgb

    from ncfine_jax.paper import figures as pf

    results = {"fine_structure": {"by_epoch": {
        "20": {"msdr_null_p025": 1.0, "msdr_null_p975": 1.02},
        "5": {"msdr_null_p025": 1.01, "msdr_null_p975": 1.05},
        "10": None}}}  # an epoch without a null is left out
    band = measures.msdr_null_band(results)
    assert band == [(5, 1.01, 1.05), (20, 1.0, 1.02)]
    assert measures.msdr_null_band({}) == []
    drawn = {}
    monkeypatch.setattr(pf, "_save", lambda fig, path, caption: drawn.setdefault("fig", fig))
    pf.plot_epoch_curves({"main": {"msdr": [(5, 1.3), (20, 1.2)]}, "other": {"msdr": [(5, 1.1)]}},
                         tmp_path / "f.png", panels=(("msdr", "t", "MSDR", False),), title="t",
                         caption="c", bands={"main": {"msdr": band}})
    ax = drawn["fig"].axes[0]
    shaded = [c for c in ax.collections if c.get_paths()]
    assert len(shaded) == 1  # the run with a null only, in its line's colour
    assert np.allclose(shaded[0].get_facecolor()[0][:3], to_rgb(ax.lines[0].get_color()))
    ys = shaded[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(1.0) and ys.max() == pytest.approx(1.05)


def test_trend_measures():
    assert measures.spearman([1, 2, 3, 4], [1, 3, 2, 9]) == pytest.approx(0.8)
    assert measures.spearman([1, 2], [5, 5]) is None
    records = [{"value": v, "sigma2": s, "msdr_mean": m, "train_acc_min": 1.0}
               for v, s, m in [(8, 0.0, 1.0), (8, 4.0, 3.0), (8, 16.0, 9.0), (16, 4.0, None)]]
    lines = measures.gm_lines(records)
    assert list(lines) == [8]  # a point where every seed diverged is left out
    assert measures.gm_level(lines[8], 2.0) == pytest.approx((np.log(3.0) + np.log(9.0)) / 2)
    assert measures.gm_level(lines[8], 100.0) is None


def test_plan_table_costs_add_up():
    plan = build_plan("cpu")
    text = plan_table(plan, Path("/x"))
    grid = next(i for i in plan if i.kind == "grid")
    per = grid.configs[0].epochs * grid.n_train()
    assert f"{len(grid.configs)} runs x {per:,} = " in text
    assert sum(i.cost_images for i in plan) == sum(
        c.epochs * (c.data.subset[0]) for i in plan for c in i.configs)


def test_time_estimate_from_a_calibration_file(tmp_path):
    from ncfine_jax.paper.estimate import IDLE_CORES, estimator

    root = tmp_path / "paper"
    root.mkdir()
    calibration = {"scale": "cpu", "gm_cpu_s_per_sample_step": 1e-6, "gm_compile_cpu_s": 10.0,
                   "backbones": {f"{c.arch}/{c.train.width}": {"epoch_cpu_s_per_image": 0.01,
                                                               "run_overhead_cpu_s": 100.0}
                                 for i in build_plan("cpu") for c in i.configs}}
    (root / wdir.CALIBRATION_FILE).write_text(json.dumps(calibration))
    seconds = estimator("cpu", root)
    assert estimator("tiny", root) is None  # a calibration of another scale is not used
    plan = build_plan("cpu")
    ot, grid = plan[0], plan[1]
    n = ot.n_train()
    assert seconds(ot) == pytest.approx((100 + ot.configs[0].epochs * n * 0.01) / IDLE_CORES)
    assert seconds(grid) == pytest.approx(len(grid.configs) * seconds(ot))
    tau2 = next(i for i in plan if i.name == "gm_fig21_tau2")
    assert seconds(tau2) == pytest.approx((10 + tau2.study.sample_steps * 1e-6) / IDLE_CORES)
    code, out, err = run_cli(["--scale", "cpu", "--workdir", str(root), "--dry-run",
                              "--cifar100", "cifar100"])
    assert code == 0, err
    total = sum(seconds(i) for i in plan)
    assert f"estimated time on an idle 2-core CPU: {total / 3600:.1f} h" in out
    assert sorted(p.name for p in root.iterdir()) == [wdir.CALIBRATION_FILE]  # nothing written
