"""Bad input at every boundary: one ``error:`` line naming the input, exit 2, disk untouched.

Command lines: the experiment scripts (``ExperimentConfig`` flags), ``experiments/grid.py``,
``python -m ncfine_jax.analyze`` and the Gaussian-mixture scripts: integer and seed
ranges, negative numbers after a flag (``--wd -1e-4``), empty paths, equal grid values,
an ``--out`` that is a training workdir. Library: label transforms, ``LabelMapping.load``
and the metrics (MSDR's D, coinciding class means, float32 overflow).
"""

from __future__ import annotations

import importlib.util
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax import metrics
from ncfine_jax.errors import DataError, NcfineError
from ncfine_jax.labels import LabelMapping, coarsen, random_coarsen, transform_labels

from clirun import run_in_process

REPO = Path(__file__).resolve().parents[1]
INT32_MAX = 2**31 - 1


call = run_in_process


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes (folders: None)."""
    return {p.relative_to(root): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def assert_one_error_line(code, err, *needles):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def flag_ids(value):
    """Test ids: the flags of a case."""
    return " ".join(value) if isinstance(value, list) and value and value[0].startswith("-") else None


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"boundaries_{name[:-3]}",
                                                  REPO / "experiments" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def disk(tmp_path):
    """A folder with a file in it (``keep.txt``); tests check it is unchanged."""
    (tmp_path / "keep.txt").write_text("untouched")
    return tmp_path


# ----------------------------------------------------------------------------- experiment scripts

EXPERIMENT_CASES = [
    (["--seed", "-1"], ["--seed -1", "0..4294967295"]),
    (["--seed", str(2**32)], [f"--seed {2**32}", "0..4294967295"]),
    (["--seed", str(2**32 - 1), "--epochs", "0"], ["--epochs 0", "1..100000"]),
    (["--epochs", "1000000"], ["--epochs 1000000", "1..100000"]),
    (["--epochs", str(2**40)], [f"--epochs {2**40}", "1..100000"]),
    (["--width", "0"], ["--width 0", "1..65536"]),
    (["--width", str(2**31)], [f"--width {2**31}", "1..65536"]),
    (["--batch-size", "0"], ["--batch-size 0", f"1..{INT32_MAX}"]),
    (["--batch-size", str(2**31)], [f"--batch-size {2**31}", f"1..{INT32_MAX}"]),
    (["--checkpoint-every", "0"], ["--checkpoint-every 0", "1..100000"]),
    (["--checkpoint-every", str(2**31)], [f"--checkpoint-every {2**31}", "1..100000"]),
    (["--num-coarse", "0"], ["--num-coarse 0", f"1..{INT32_MAX}"]),
    (["--num-coarse", str(2**31)], [f"--num-coarse {2**31}", f"1..{INT32_MAX}"]),
    (["--clp-max-tsne-points", str(2**31)], ["--clp-max-tsne-points", str(INT32_MAX)]),
    (["--subset", f"{2**31},10"], ["--subset", str(INT32_MAX)]),
    (["--wd", "-1e-4"], ["--wd -0.0001", ">= 0"]),
    (["--wd=-1e-4"], ["--wd -0.0001", ">= 0"]),
    (["--wd", "-5"], ["--wd -5", ">= 0"]),
    (["--lr", "0"], ["--lr 0", "positive"]),
    (["--lr", "-1e-3"], ["--lr -0.001", "positive"]),
    (["--lr=-0.1"], ["--lr -0.1", "positive"]),
]


@pytest.mark.parametrize("argv,needles", EXPERIMENT_CASES, ids=flag_ids)
def test_experiment_flags_out_of_range(disk, argv, needles):
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.cli import main

    before = snapshot(disk)
    code, _, err = call(partial(main, EXPERIMENTS["coarse_digits"]),
                        argv + ["--workdir", str(disk / "run")])
    assert_one_error_line(code, err, *needles)
    assert snapshot(disk) == before


def test_experiment_limits_are_inclusive():
    """The largest allowed values pass the flag checks (the range is not off by one)."""
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.config import config_from_args
    from ncfine_jax.experiment.cli import build_parser

    spec = EXPERIMENTS["coarse_digits"]
    args = build_parser(spec).parse_args(["--seed", str(2**32 - 1), "--epochs", "100000",
                                          "--width", "65536", "--checkpoint-every", "100000",
                                          "--wd", "-0.0", "--lr", "1e-5"])
    config = config_from_args(spec.defaults, args)
    assert (config.seed, config.epochs, config.train.width) == (2**32 - 1, 100000, 65536)
    assert config.weight_decay == 0.0 and str(config.weight_decay) == "0.0"  # not -0.0


def test_experiment_empty_workdir_is_refused(disk, monkeypatch):
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.cli import main

    monkeypatch.chdir(disk)  # the default workdir would be created under here
    before = snapshot(disk)
    code, _, err = call(partial(main, EXPERIMENTS["coarse_digits"]), ["--workdir", ""])
    assert_one_error_line(code, err, "--workdir", "must not be empty")
    assert snapshot(disk) == before
    for flag in ("--ot-workdir", "--data-dir"):
        code, _, err = call(partial(main, EXPERIMENTS["coarse_digits"]),
                            ["--workdir", str(disk / "w"), flag, ""])
        assert_one_error_line(code, err, flag, "must not be empty")
        assert snapshot(disk) == before


# ----------------------------------------------------------------------------- grid


@pytest.mark.parametrize("argv,needles", [
    (["--wd", "0", "-0.0"], ["--wd 0 -0", "0 and -0 are the same value"]),
    (["--lr", "0.1", "0.10"], ["--lr 0.1 0.1", "0.1 and 0.1 are the same value"]),
    (["--lr", "0.01", "1e-2", "0.1"], ["--lr", "0.01 and 0.01"]),
    (["--wd", "5e-4", "-1e-4"], ["--wd -0.0001", ">= 0"]),
    (["--wd=-1e-4"], ["--wd -0.0001", ">= 0"]),
    (["--lr", "0.1", "-0.1"], ["--lr -0.1", "positive"]),
    (["--seed", "-1"], ["--seed -1"]),
    (["--seed", str(2**32)], ["--seed", "0..4294967295"]),
    (["--epochs", "0"], ["--epochs 0"]),
    (["--batch-size", str(2**31)], ["--batch-size", str(INT32_MAX)]),
], ids=flag_ids)
def test_grid_flags(disk, argv, needles):
    from ncfine_jax.experiment.cli import grid_main as main

    before = snapshot(disk)
    code, _, err = call(main, ["coarse_digits", *argv, "--workdir", str(disk / "grid")])
    assert_one_error_line(code, err, *needles)
    assert snapshot(disk) == before


def test_grid_empty_workdir_is_refused(disk, monkeypatch):
    from ncfine_jax.experiment.cli import grid_main as main

    monkeypatch.chdir(disk)  # Path("") is the current folder
    before = snapshot(disk)
    code, _, err = call(main, ["coarse_digits", "--lr", "0.1", "--wd", "0", "--workdir", ""])
    assert_one_error_line(code, err, "--workdir", "must not be empty")
    assert snapshot(disk) == before


# ----------------------------------------------------------------------------- analyze


@pytest.mark.parametrize("argv,needles", [
    (["--seed", "-1"], ["--seed -1", "0..4294967295"]),
    (["--seed", str(2**32)], [f"--seed {2**32}", "0..4294967295"]),
    (["--num-coarse", "0"], ["--num-coarse 0", f"1..{INT32_MAX}"]),
    (["--num-coarse", str(2**31)], ["--num-coarse", f"1..{INT32_MAX}"]),
    (["--chunk-rows", "0"], ["--chunk-rows 0", f"1..{INT32_MAX}"]),
    (["--epochs", "-1"], ["--epochs -1", f"0..{INT32_MAX}"]),
    (["--clp-max-tsne-points", str(2**31)], ["--clp-max-tsne-points", str(INT32_MAX)]),
], ids=flag_ids)
def test_analyze_flags(disk, argv, needles):
    from ncfine_jax.analyze import main

    before = snapshot(disk)
    code, _, err = call(main, [str(disk / "f.npz"), *argv, "--out", str(disk / "out")])
    assert_one_error_line(code, err, *needles)
    assert snapshot(disk) == before


def test_analyze_empty_out_is_refused(disk, monkeypatch):
    from ncfine_jax.analyze import main

    monkeypatch.chdir(disk)
    before = snapshot(disk)
    code, _, err = call(main, [str(disk / "f.npz"), "--num-coarse", "2", "--out", ""])
    assert_one_error_line(code, err, "--out", "must not be empty")
    assert snapshot(disk) == before


@pytest.mark.parametrize("held", [("experiment.json", "config.json", "checkpoints"),
                                  ("config.json",), ("checkpoints",), ("grid.json",)])
def test_analyze_out_that_is_a_training_workdir_is_refused(tmp_path, held):
    from ncfine_jax.analyze import main

    run = tmp_path / "run"
    run.mkdir()
    for name in held:
        if name == "checkpoints":
            (run / name / "10").mkdir(parents=True)
            (run / name / "10" / "state").write_bytes(b"weights")
        else:
            (run / name).write_text('{"kept": true}')
    (run / "results.json").write_text('{"clp_accuracy": 0.9}')
    (run / "report.md").write_text("# the run's own report\n")
    np.savez(tmp_path / "f.npz", train_features=np.ones((4, 2), np.float32),
             train_classes=np.arange(4, dtype=np.int32))
    before = snapshot(tmp_path)
    code, _, err = call(main, [str(tmp_path / "f.npz"), "--num-coarse", "2", "--out", str(run)])
    assert_one_error_line(code, err, f"--out {run}", "training workdir", held[0])
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- Gaussian mixture

GM_CASES = [
    (["--seeds", "0"], ["--seeds 0", f"1..{INT32_MAX}"]),
    (["--seeds", str(2**31)], ["--seeds", f"1..{INT32_MAX}"]),
    (["--batch-size", "0"], ["--batch-size 0", f"1..{INT32_MAX}"]),
    (["--weight-decay", "-1e-4"], ["--weight-decay", ">= 0", "-0.0001"]),
    (["--weight-decay=-1e-4"], ["--weight-decay", ">= 0", "-0.0001"]),
    (["--lr", "-1e-3"], ["--lr", "> 0"]),
    (["--lr=0"], ["--lr", "> 0"]),
    (["--d-input", "0"], ["--d-input", "positive"]),
    (["--d-hidden", str(2**31)], ["--d-hidden", f"1..{INT32_MAX}"]),
    (["--steps", "0"], ["--steps", "positive"]),
    (["--steps", str(2**31)], ["--steps", f"1..{INT32_MAX}"]),
    (["--num-clusters", "0"], ["--num-clusters", "positive"]),
    (["--samples-per-cluster", str(2**30)], ["--samples-per-cluster", "more than"]),
]


@pytest.mark.parametrize("argv,needles", GM_CASES, ids=flag_ids)
def test_gaussian_mixture_flags(disk, argv, needles):
    main = script("gaussian_mixture.py").main
    before = snapshot(disk)
    code, _, err = call(main, ["--vary", "d_input", *argv, "--out", str(disk / "gm")])
    assert_one_error_line(code, err, *needles)
    assert snapshot(disk) == before


@pytest.mark.parametrize("argv,needles", [
    (["--seeds", "0"], ["--seeds 0"]),
    (["--values", "128", "0"], ["--values 0", f"1..{INT32_MAX}"]),
    (["--values", str(2**31)], ["--values", f"1..{INT32_MAX}"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--setting", "standard:none:-1e-3"], ["--setting standard:none:-1e-3", "lr"]),
    (["--steps", str(2**31)], ["--steps", f"1..{INT32_MAX}"]),
], ids=flag_ids)
def test_width_study_flags(disk, argv, needles):
    main = script("gaussian_mixture_width_study.py").main
    before = snapshot(disk)
    code, _, err = call(main, [*argv, "--out", str(disk / "ws")])
    assert_one_error_line(code, err, *needles)
    assert snapshot(disk) == before


@pytest.mark.parametrize("name,argv", [("gaussian_mixture.py", ["--vary", "d_input"]),
                                       ("gaussian_mixture_width_study.py", [])])
def test_gaussian_mixture_empty_out_is_refused(disk, monkeypatch, name, argv):
    monkeypatch.chdir(disk)
    before = snapshot(disk)
    code, _, err = call(script(name).main, [*argv, "--out", ""])
    assert_one_error_line(code, err, "--out", "must not be empty")
    assert snapshot(disk) == before


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("fn", [partial(coarsen, num_classes=4, num_coarse=2),
                                partial(random_coarsen, num_classes=4, num_coarse=2, seed=0)])
def test_coarse_labels_refuse_bool_and_2d(fn):
    with pytest.raises(DataError, match="labels: expected an integer array, got dtype bool"):
        fn(np.array([True, False, True]))
    with pytest.raises(DataError, match=r"labels: expected a 1-D array \[n\] .* shape \(3, 4\)"):
        fn(np.eye(4, dtype=np.int32)[:3])  # one-hot rows are not class indices
    with pytest.raises(DataError, match=r"shape \(\)"):
        fn(np.int32(1))
    np.testing.assert_array_equal(coarsen(np.array([0, 1, 2, 3]), 4, 2), [0, 1, 0, 1])


def test_coarse_labels_refuse_2d_under_jit():
    import jax
    import jax.numpy as jnp

    with pytest.raises(DataError, match="1-D array"):
        jax.jit(lambda v: coarsen(v, 4, 2))(jnp.zeros((3, 4), jnp.int32))


def test_transform_and_num_coarse_refuse_bools():
    with pytest.raises(DataError, match="y_train: expected an integer array, got dtype bool"):
        transform_labels("coarse", np.array([True, False]), np.array([0, 1]), 2, num_coarse=1)
    with pytest.raises(DataError, match="y_test: expected a 1-D array"):
        transform_labels("coarse", np.array([0, 1]), np.array([[0, 1]]), 2, num_coarse=1)
    with pytest.raises(NcfineError, match="num_coarse must be a positive int, got True"):
        coarsen(np.array([0, 1]), 2, True)


def test_label_mapping_load_of_a_folder_or_unreadable_path(tmp_path):
    folder = tmp_path / "label_mapping.json"
    folder.mkdir()
    with pytest.raises(NcfineError, match=f"label mapping {folder}: is a folder") as info:
        LabelMapping.load(folder)
    assert "\n" not in str(info.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NcfineError, match=f"label mapping {blocker / 'm.json'}: cannot be read"):
        LabelMapping.load(blocker / "m.json")  # a path through a file: NotADirectoryError
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with pytest.raises(NcfineError, match=f"label mapping {bad}: not valid JSON") as info:
        LabelMapping.load(bad)
    assert "\n" not in str(info.value)
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.json"
        LabelMapping.for_kind("original", 3).save(locked)
        locked.chmod(0)
        try:
            with pytest.raises(NcfineError, match=f"label mapping {locked}: cannot be read"):
                LabelMapping.load(locked)
        finally:
            locked.chmod(0o600)


# ----------------------------------------------------------------------------- metrics


def _msdr_reference(D, s):
    D, s = np.asarray(D, np.float64), np.asarray(s)
    same = (s[:, None] == s[None, :]) & ~np.eye(len(s), dtype=bool)
    return D[same].mean() / np.diag(D).mean()


@pytest.mark.parametrize("D,pattern", [
    (np.array([[1.0, -0.5], [-0.5, 1.0]]), "2 negative entries"),
    (np.array([[0.0, 3.0], [3.0, 0.0]]), "diagonal is all 0"),
    (np.ones((2, 3)), r"expected shape \[C, C\] .* got \(2, 3\)"),
    (np.ones(3), r"got \(3,\)"),
    (np.ones((1, 1)), r"C >= 2"),
    (np.stack([np.ones((2, 2)), np.ones((2, 2)) - np.eye(2)]), "diagonal is all 0"),
])
def test_msdr_refuses_bad_distance_matrices(D, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        metrics.msdr(D, np.zeros(D.shape[-1], np.int32))
    assert str(info.value).startswith("distance_matrix: ") and "\n" not in str(info.value)


def test_msdr_accepts_one_collapsed_class():
    D = np.array([[0.0, 4.0, 9.0], [4.0, 2.0, 5.0], [9.0, 5.0, 1.0]])
    s = np.array([0, 0, 1], np.int32)
    assert float(metrics.msdr(D, s)) == pytest.approx(_msdr_reference(D, s), rel=1e-6)
    # unchecked, a zero diagonal stays the documented non-finite result
    assert not np.isfinite(float(metrics.msdr(D - np.diag(np.diag(D)), s, validate=False)))


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25).astype(np.int32)
    x = rng.normal(size=(4, 6))[y] * 3 + rng.normal(size=(100, 6))
    return x, y


@pytest.mark.parametrize("fn", [metrics.nc1, metrics.nc2, metrics.cdnv])
@pytest.mark.parametrize("dtype", [None, np.float64])
def test_identical_class_means_are_an_error_not_a_number(blobs, fn, dtype):
    x, y = blobs
    means = np.stack([x[y == k].mean(0) for k in range(4)])
    same = x - means[y] + 7.0  # every class mean is exactly (7, ..., 7)
    with pytest.raises(DataError, match="class means coincide") as info:
        fn(same, y, 4, dtype=dtype)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="class means coincide|not finite"):
        fn(np.full_like(x, 2.5), y, 4, dtype=dtype)  # constant features
    assert np.isfinite(float(fn(x, y, 4, dtype=dtype)))  # distinct means still work


def test_nc2_identical_means_unchecked_still_returns_a_value(blobs):
    x, y = blobs
    means = np.stack([x[y == k].mean(0) for k in range(4)])
    assert np.ndim(metrics.nc2(x - means[y], y, 4, validate=False)) == 0


def test_nc1_of_float64_features_overflowing_float32(blobs):
    x, y = blobs
    with pytest.raises(DataError, match=r"features: values up to .*e\+200 overflow float32") as info:
        metrics.nc1(x * 1e200, y, 4)
    assert "dtype=np.float64" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="squared distances .* overflow float32"):
        metrics.nc1((x * 1e20).astype(np.float32), y, 4)
    with pytest.raises(DataError, match="squared distances .* overflow float64"):
        metrics.nc1(x * 1e200, y, 4, dtype=np.float64)
    # Where float64 holds the squares, NC1 is scale invariant: the same value as at scale 1.
    ref = float(metrics.nc1(x, y, 4, dtype=np.float64))
    assert float(metrics.nc1(x * 1e100, y, 4, dtype=np.float64)) == pytest.approx(ref, rel=1e-9)
