"""Experiment scripts end to end: outputs, bad input (exit 2, one line, workdir untouched)."""

import io as _io
import json
import os
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main
from ncfine_jax.labels import CIFAR10_CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"clp_accuracy", "clp_accuracy_train_mapping", "lpo_accuracy", "ot_accuracy", "ari",
               "nmi", "nc1", "nc2", "msdr", "final_train_accuracy", "final_test_accuracy"}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NCFINE_DATA_DIR", raising=False)
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))


def make_cifar_like_tar(path: Path, n_train: int = 12, n_test: int = 4, seed: int = 0) -> Path:
    """A class-folder .tar.gz with CIFAR-10's class folders; each class has its own colour."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", n_train), ("test", n_test)):
            for c, name in enumerate(CIFAR10_CLASS_NAMES):
                for i in range(n):
                    base = np.array([25 * c, 255 - 25 * c, (80 * c) % 256], np.float64)
                    img = np.clip(base + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                    buf = _io.BytesIO()
                    Image.fromarray(img).save(buf, format="PNG")
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.png")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


def run_cli(name, argv):
    """Run an experiment's main in-process as the script does: (exit code, stderr)."""
    err = _io.StringIO()
    with redirect_stderr(err):
        code = run_main(lambda a: main(EXPERIMENTS[name], a), argv)
    return code, err.getvalue()


def snapshot(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def check_outputs(workdir: Path, label_kind: str) -> dict:
    for name in ("experiment.json", "label_mapping.json", "config.json", "log.jsonl",
                 "results.json", "report.md"):
        assert (workdir / name).is_file(), name
    assert list((workdir / "features").glob("epoch_*.npz"))
    assert list((workdir / "checkpoints").iterdir())
    results = json.loads((workdir / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    figures = sorted(p.name for p in (workdir / "figures").glob("*.png"))
    assert {"nc_curves.png", "distance_heatmaps.png", "pca.png"} <= set(figures)
    for f in figures:
        assert (workdir / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for f in figures:
        assert f"figures/{f}" in (workdir / "report.md").read_text()
    assert json.loads((workdir / "label_mapping.json").read_text())["kind"] == label_kind
    return results


def test_tiny_coarse_cifar10_writes_every_output(tmp_path):
    data = make_cifar_like_tar(tmp_path / "tiny_cifar.tar.gz")
    workdir = tmp_path / "run"
    code, err = run_cli("coarse_cifar10", [
        "--data", str(data), "--arch", "resnet18", "--width", "4", "--epochs", "1",
        "--batch-size", "20", "--clp-reduce", "pca", "--workdir", str(workdir), "--no-progress"])
    assert code == 0, err
    results = check_outputs(workdir, "coarse")
    assert (workdir / "figures" / "tsne_superclasses.png").exists()
    assert set(results["nc1"]) == {"1"}  # default save epochs clipped to --epochs 1
    assert results["clp_accuracy"] is not None and 0 <= results["clp_accuracy"] <= 1
    mapping = json.loads((workdir / "label_mapping.json").read_text())
    assert mapping["classes_of_label"] == [[c, c + 5] for c in range(5)]
    # The same command again resumes the finished run instead of refusing it.
    code, err = run_cli("coarse_cifar10", [
        "--data", str(data), "--arch", "resnet18", "--width", "4", "--epochs", "1",
        "--batch-size", "20", "--clp-reduce", "pca", "--workdir", str(workdir), "--no-progress"])
    assert code == 0, err


@pytest.mark.slow
def test_coarse_cifar10_on_shared_jpeg_subset(tmp_path, shared_cifar10_jpeg, shared_cifar10_cache,
                                              monkeypatch):
    monkeypatch.setenv("NCFINE_CACHE_DIR", str(shared_cifar10_cache))
    workdir = tmp_path / "run"
    code, err = run_cli("coarse_cifar10", [
        "--data", str(shared_cifar10_jpeg), "--subset", "500,100", "--width", "4",
        "--epochs", "2", "--save-features-at", "1", "2", "--clp-reduce", "tsne",
        "--workdir", str(workdir), "--no-progress"])
    assert code == 0, err
    results = check_outputs(workdir, "coarse")
    assert set(results["msdr"]) == {"1", "2"}
    feats = np.load(workdir / "features" / "epoch_0002.npz")
    assert feats["train_features"].shape == (500, 32)
    assert np.array_equal(np.bincount(feats["train_classes"], minlength=10), [50] * 10)


def test_fine_labels_run_on_digits(tmp_path):
    workdir = tmp_path / "fine"
    code, err = run_cli("fine_cifar10", [
        "--data", "digits", "--arch", "mlp", "--width", "32", "--epochs", "2",
        "--clp-reduce", "none", "--workdir", str(workdir), "--no-progress"])
    assert code == 0, err
    results = check_outputs(workdir, "fine")
    assert results["clp_accuracy"] is None  # CLP needs a coarsening
    mapping = json.loads((workdir / "label_mapping.json").read_text())
    assert mapping["num_labels"] == 20


def test_digits_demo_end_to_end(tmp_path):
    """The offline demo script, as a user runs it (fewer epochs to keep CI short)."""
    workdir = tmp_path / "digits"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "coarse_digits.py"), "--epochs", "20",
         "--save-features-at", "5", "20", "--workdir", str(workdir), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = check_outputs(workdir, "coarse")
    assert "tsne_superclasses.png" in os.listdir(workdir / "figures")
    # The paper's effect on real digits: clustering within coarse labels recovers the digits.
    assert results["final_train_accuracy"] > 0.95
    assert results["lpo_accuracy"] > 0.9
    assert results["clp_accuracy"] > 0.8
    assert str(workdir) in proc.stdout


BAD_INPUTS = [
    (["--num-coarse", "3"], "--num-coarse 3"),
    (["--arch", "resnet1000"], "--arch: invalid choice: 'resnet1000'"),
    (["--data", "no_such_dataset"], "no_such_dataset"),
    (["--save-features-at", "5", "50"], "--save-features-at 50"),
    (["--epochs", "0"], "--epochs 0"),
    (["--subset", "x"], "--subset"),
    (["--lr", "-1"], "--lr"),
]


@pytest.mark.parametrize("extra,needle", BAD_INPUTS)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, extra, needle):
    workdir = tmp_path / "w"
    code, err = run_cli("coarse_digits", ["--epochs", "10", "--workdir", str(workdir), *extra])
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not workdir.exists()


def test_workdir_with_other_config_is_refused_unchanged(tmp_path):
    workdir = tmp_path / "w"
    args = ["--epochs", "2", "--width", "16", "--clp-reduce", "none", "--workdir", str(workdir),
            "--no-progress"]
    assert run_cli("coarse_digits", args)[0] == 0
    log_before = (workdir / "log.jsonl").read_bytes()
    # Analysis-only flags re-analyse the finished run instead of refusing or retraining it.
    code, err = run_cli("coarse_digits", [*args[:5], "pca", *args[6:]])
    assert code == 0, err
    assert json.loads((workdir / "results.json").read_text())["analysis"]["reduce"] == "pca"
    assert (workdir / "log.jsonl").read_bytes() == log_before
    before = snapshot(workdir)
    code, err = run_cli("coarse_digits", [*args, "--lr", "0.2"])
    assert code == 2 and "different config" in err and "lr" in err
    assert snapshot(workdir) == before
    code, err = run_cli("coarse_digits", [*args, "--lr", "0.2", "--overwrite"])
    assert code == 0, err
    assert json.loads((workdir / "experiment.json").read_text())["lr"] == 0.2


def test_script_exit_code_and_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "coarse_cifar10.py"), "--arch", "nope",
         "--workdir", str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--arch: invalid choice: 'nope'" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_augment_is_a_flag_recorded_in_the_run_identity(tmp_path):
    from ncfine_jax.experiment.config import ExperimentConfig, identity
    from ncfine_jax.experiment.cli import build_parser
    from ncfine_jax.experiment.run import prepare_data
    from ncfine_jax.experiment.config import config_from_args

    spec = EXPERIMENTS["coarse_cifar10"]
    parse = lambda argv: config_from_args(spec.defaults, build_parser(spec).parse_args(argv))
    on, off = parse([]), parse(["--augment", "off"])
    assert on.train.augment is True and off.train.augment is False
    assert on.identity() != off.identity() and off.to_dict()["augment"] is False
    assert ExperimentConfig.from_dict(off.to_dict()) == off
    # A (version-1) record written before the field existed is a run with augmentation.
    old = {k: v for k, v in on.to_dict().items() if k not in ("augment", "record_version")}
    assert identity(old) == on.identity() and ExperimentConfig.from_dict(old).train.augment
    err = _io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(spec, ["--augment", "maybe", "--workdir", str(tmp_path / "w")])
    assert exit_.value.code == 2 and "--augment" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1 and not (tmp_path / "w").exists()
    # The engine sees the request on images.
    tar = make_cifar_like_tar(tmp_path / "c.tar.gz", n_train=4, n_test=2)
    cfg = parse(["--data", str(tar), "--augment", "off", "--batch-size", "8", "--epochs", "1"])
    assert prepare_data(cfg).train_config.augment is False
    assert prepare_data(cfg.replace(augment=True)).train_config.augment is True


def test_the_run_and_grid_commands_load_matplotlib_only_to_draw():
    # matplotlib is imported by the first figure, not by a run that has none to draw yet.
    code = ("import sys, ncfine_jax.experiment.run, ncfine_jax.experiment.grid, "
            "ncfine_jax.paper.command; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
    from ncfine_jax.analysis.figures import pyplot

    assert pyplot().get_backend().lower() == "agg"
