"""What a researcher sees when running an experiment: default workdirs that never trap a
new config, a start block and phase lines, one line per epoch with --no-progress, live
TensorBoard curves, training curves, a report that states the run's config and regime,
readable figures, errors that name the remedy, and fast, grouped --help."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, default_workdir, main
from ncfine_jax.experiment.cli import build_parser
from ncfine_jax.experiment.config import config_from_args

REPO = Path(__file__).resolve().parents[1]
DEMO = EXPERIMENTS["coarse_digits"]
QUICK = ["--epochs", "3", "--width", "32", "--clp-reduce", "pca"]


def run(argv, capsys):
    """(exit code, stdout, stderr) of the digits demo script run in this process."""
    code = run_main(lambda a: main(DEMO, a), argv)
    out, err = capsys.readouterr()
    return code, out, err


def config_of(argv):
    return config_from_args(DEMO.defaults, build_parser(DEMO).parse_args(argv))


# ----------------------------------------------------------------------- default workdir


def test_default_workdir_names_what_differs_and_hashes_the_rest():
    plain = default_workdir(config_of([]), DEMO.defaults)
    assert plain == Path("runs/coarse_digits/lr0.05_wd0.0005_seed0")
    small = default_workdir(config_of(["--width", "16", "--epochs", "5"]), DEMO.defaults)
    assert small.parent == plain.parent
    assert re.fullmatch(r"lr0\.05_wd0\.0005_seed0_width16_epochs5_[0-9a-f]{6}", small.name)
    # The same flags give the same folder (that is how a run resumes) ...
    assert default_workdir(config_of(["--epochs", "5", "--width", "16"]), DEMO.defaults) == small
    # ... analysis and bookkeeping flags do not make another run ...
    assert default_workdir(config_of(["--width", "16", "--epochs", "5", "--clp-reduce", "pca",
                                      "--eval-every", "2"]), DEMO.defaults) == small
    # ... and a setting without a readable token still gives its own folder (the hash).
    other = default_workdir(config_of(["--width", "16", "--epochs", "5",
                                       "--save-features-at", "2", "5"]), DEMO.defaults)
    assert other != small and other.name.startswith("lr0.05_wd0.0005_seed0_width16_epochs5_")
    data = [default_workdir(config_of(["--data", p]), DEMO.defaults) for p in
            ("/a/cifar10_jpeg.tar.gz", "/b/cifar10_jpeg.tar.gz")]
    assert data[0] != data[1] and all("_data-cifar10_jpeg_" in d.name for d in data)


def test_a_smoke_run_then_a_bigger_run_in_default_workdirs_then_the_same_command_resumes(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    smoke = ["--epochs", "2", "--width", "16", "--clp-reduce", "pca", "--no-progress"]
    bigger = ["--epochs", "3", "--width", "32", "--clp-reduce", "pca", "--no-progress"]
    for argv in (smoke, bigger):
        code, out, err = run(argv, capsys)
        assert code == 0, err
    runs = sorted((tmp_path / "runs" / "coarse_digits").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)
    log = {r: (r / "log.jsonl").read_bytes() for r in runs}
    code, out, err = run(bigger, capsys)  # the same command: nothing retrained
    assert code == 0, err
    assert "finished and analysed: nothing to do" in out
    assert {r: (r / "log.jsonl").read_bytes() for r in runs} == log


def test_a_missing_data_file_is_reported_before_the_workdir_is_judged(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert run([*QUICK, "--workdir", str(workdir), "--no-progress"], capsys)[0] == 0
    missing = tmp_path / "no_such_cifar.tar.gz"
    code, out, err = run(["--epochs", "9", "--data", str(missing), "--workdir", str(workdir)],
                         capsys)
    assert code == 2 and str(missing) in err and "different config" not in err, err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------- what is said


def test_start_block_phase_lines_and_one_line_per_epoch(tmp_path, capsys):
    workdir = tmp_path / "w"
    code, out, err = run([*QUICK, "--workdir", str(workdir), "--no-progress"], capsys)
    assert code == 0, err
    for needle in ("coarse_digits: ", "loading the data ...", f"-> {workdir}", "  run ",
                   "new run", "  model ", "mlp, width 32 (32-d features), fp32",
                   "  labels ", "coarse: 5 labels", "  training ", "3 epochs x",
                   "  devices ", "compiling the training step and evaluation ...",
                   f"analysis -> {workdir / 'report.md'}", "NC metrics and D at",
                   "LPO (linear probe", "CLP (pca + KMeans", "fine-structure test", "figures ..."):
        assert needle in out, needle
    epoch_lines = [line for line in out.splitlines() if line.startswith("  epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert all(re.search(r"loss [0-9.]+ +acc [0-9.]+ .*img/s", line) for line in epoch_lines)
    assert "test " in epoch_lines[-1]  # the last epoch is always evaluated
    assert "it/s" not in err and "epoch/s" not in err  # no progress bar
    code, out, err = run([*QUICK, "--workdir", str(workdir), "--no-progress",
                          "--clp-reduce", "none"], capsys)
    assert code == 0 and "compiling" not in out, err
    assert "trained: analysing again (--clp-reduce: pca -> none)" in out, out


def test_tensorboard_events_hold_the_log_and_the_collapse_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    workdir = tmp_path / "w"
    code, out, err = run([*QUICK, "--workdir", str(workdir), "--no-progress",
                          "--save-features-at", "1", "3"], capsys)
    assert code == 0, err
    assert f"tensorboard --logdir {workdir}" in out
    scalars = read_scalars(workdir / "tensorboard")
    log = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    assert np.allclose([v for _, v in scalars["train/loss"]], [r["loss"] for r in log])
    assert np.allclose([v for _, v in scalars["train/lr"]], [r["lr"] for r in log])
    results = json.loads((workdir / "results.json").read_text())
    metrics = read_scalars(workdir / "tensorboard" / "analysis")
    assert [s for s, _ in metrics["collapse/nc1"]] == [1, 3]
    assert np.allclose([v for _, v in metrics["structure/msdr"]],
                       [results["msdr"][str(e)] for e in (1, 3)], rtol=1e-6)
    recorded = json.loads((workdir / "manifest.json").read_text())["files"]
    assert any(name.startswith("tensorboard/events.out.tfevents.") for name in recorded)


def test_without_the_tensorboard_extra_one_line_says_how_to_get_it(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr("ncfine_jax.tensorboard._summary_writer", lambda: None)
    workdir = tmp_path / "w"
    code, out, err = run([*QUICK, "--workdir", str(workdir), "--no-progress"], capsys)
    assert code == 0, err
    lines = [line for line in out.splitlines() if "tensorboardX" in line]
    assert len(lines) == 1 and "pip install 'ncfine_jax[tensorboard]'" in lines[0]
    assert not (workdir / "tensorboard").exists()


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the TFRecord event files in ``folder`` (not below it)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


# ----------------------------------------------------------------------- the report


def test_report_states_the_config_regime_and_warns_for_a_network_at_chance(tmp_path, capsys):
    chance = tmp_path / "chance"
    code, out, err = run(["--epochs", "1", "--lr", "1e-6", "--width", "16", "--clp-reduce",
                          "pca", "--workdir", str(chance), "--no-progress"], capsys)
    assert code == 0, err
    report = (chance / "report.md").read_text()
    assert "## Run" in report and "| backbone | mlp, width 16 |" in report
    assert "| lr, schedule | 1e-06, step |" in report and "| data | digits |" in report
    assert "Regime: final training accuracy" in report and "(not fitted" in report
    assert "Warning: an under-trained network" in report
    assert "present needs both p-values <= alpha" in report
    assert "## Timings" in report and "| total |" in report and "Timings (s): {" not in report
    assert "training_curves.png" in report and (chance / "figures/training_curves.png").is_file()


def test_the_demo_in_the_terminal_phase_gets_no_warning(tmp_path, capsys):
    workdir = tmp_path / "demo"
    code, out, err = run(["--clp-reduce", "pca", "--workdir", str(workdir), "--no-progress"],
                         capsys)
    assert code == 0, err
    report = (workdir / "report.md").read_text()
    assert "final training accuracy 1.0000 on the training labels (fitted" in report
    assert "Warning" not in report


# ----------------------------------------------------------------------- figures


def test_every_log_axis_gets_at_least_two_labelled_ticks():
    from ncfine_jax.analysis.figures import pyplot, readable_log_ticks

    plt = pyplot()
    for lo, hi in ((0.26, 0.35), (0.9, 1.1), (0.05, 3.0), (1e-4, 10.0), (41.0, 42.0)):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [lo, hi])
        ax.set_yscale("log")
        readable_log_ticks(fig)
        y0, y1 = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if y0 <= t <= y1]
        labels = [ax.yaxis.get_major_formatter()(t, i) for i, t in enumerate(ticks)]
        assert len(ticks) >= 2 and all(labels), (lo, hi, ticks)
        plt.close(fig)


def test_grid_heatmaps_label_rows_by_lr_and_columns_by_weight_decay(tmp_path, monkeypatch):
    from ncfine_jax.analysis import figures

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path, caption=None: drawn.setdefault(
        "fig", fig))
    D = np.abs(np.random.default_rng(0).normal(size=(4, 4)))
    runs = [{"lr": lr, "wd": wd, "distance_matrix": D, "superclass_of_class": [0, 0, 1, 1]}
            for lr in (0.1, 0.01) for wd in (5e-4, 0.0)]
    figures.plot_grid_heatmaps(runs, tmp_path / "g.png", class_names=list("abcd"))
    axes = np.array(drawn["fig"].axes[:4]).reshape(2, 2)  # the colorbars come after them
    assert [ax.get_title() for ax in axes[0]] == ["weight decay 0.0005", "weight decay 0"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["lr 0.1", "lr 0.01"]
    assert [t.get_text() for t in axes[1, 0].get_xticklabels()] == list("abcd")


# ----------------------------------------------------------------------- errors and help


def test_a_missing_cifar10_names_the_flag_the_variable_and_where_to_get_it(tmp_path):
    from ncfine_jax.data import load_dataset
    from ncfine_jax.errors import DataError

    with pytest.raises(DataError) as caught:
        load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache",
                     download=False)
    message = str(caught.value)
    assert "--data PATH" in message and "$NCFINE_DATA_DIR" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and "\n" not in message


HELP_COMMANDS = [*(["experiments/" + p.name] for p in sorted((REPO / "experiments").glob("*.py"))),
                 ["-m", "ncfine_jax.analyze"], ["-m", "ncfine_jax.launch"],
                 ["-m", "ncfine_jax.adopt"], ["-m", "ncfine_jax.data"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: c[-1])
def test_help_loads_no_jax_names_each_default_once_and_has_no_markup(command):
    run, target = ("run_module", command[1]) if command[0] == "-m" else ("run_path", command[0])
    probe = ("import io, runpy, sys, contextlib\nout = io.StringIO()\nsys.argv = [%r, '--help']\n"
             "with contextlib.redirect_stdout(out):\n    try:\n"
             "        runpy.%s(%r, run_name='__main__')\n    except SystemExit:\n        pass\n"
             "print(out.getvalue())\nprint('JAX' if 'jax' in sys.modules else 'NO JAX')"
             % (target, run, target))
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text, verdict = proc.stdout.rsplit("\n", 2)[0], proc.stdout.strip().splitlines()[-1]
    assert verdict == "NO JAX"
    assert "usage:" in text and "`" not in text
    for block in re.split(r"\n  (?=-)", text):  # one option's help per block
        assert block.count("(default:") <= 1, block


def test_grid_usage_puts_the_experiment_first(capsys):
    from ncfine_jax.experiment.cli import grid_main

    assert run_main(grid_main, ["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: grid.py EXPERIMENT ")
