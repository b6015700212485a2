"""lr x wd grid: vmapped grid == single runs, divergence, resume, chunks, grid.py.

Tiny models (conftest: an MLP with BatchNorm on 32x32 images; a width-8 MLP on feature
vectors) keep the file near its ~90 s budget on 2 cores; the 2 x 2 grid and its four
single runs are session-scoped fixtures shared by several tests.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ncfine_jax.cli import run_main
from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment import grid as G
from ncfine_jax.experiment.cli import grid_main
from ncfine_jax.io import read_json, read_jsonl
from ncfine_jax.train import (MODES, Checkpointer, ModeTiming, TrainConfig, build_engine,
                              choose_mode, faster_mode,
                              estimate_model_memory, plan_chunks, read_divergence, train,
                              train_grid)

pytestmark = pytest.mark.filterwarnings("ignore:.*donated buffers were not usable")

POINTS = ((0.05, 5e-4), (0.05, 0.0), (0.2, 5e-4), (0.2, 0.0))


def point_configs(base: TrainConfig, points=POINTS) -> list[TrainConfig]:
    return [dataclasses.replace(base, lr=lr, weight_decay=wd) for lr, wd in points]


@pytest.fixture(scope="session")
def base(train_config) -> TrainConfig:
    """The engine tests' run (70 training images, batch 16 -> 4 steps per epoch;
    augmentation and BatchNorm on), shortened to 3 epochs with a checkpoint after each."""
    return dataclasses.replace(train_config, epochs=3, save_features_at=(0, 2, 3),
                               checkpoint_every=1)


@pytest.fixture(scope="session")
def vmapped_grid(image_data, base, tmp_path_factory):
    """The 2 x 2 grid trained vmapped in one chunk."""
    root = tmp_path_factory.mktemp("grid")
    workdirs = [root / G.point_name(lr, wd) for lr, wd in POINTS]
    results = train_grid(point_configs(base), image_data, workdirs, vectorize=True,
                         progress=False)
    return workdirs, results


@pytest.fixture(scope="session")
def single_runs(image_data, base, tmp_path_factory):
    """The four corresponding single runs through the normal engine."""
    root = tmp_path_factory.mktemp("single")
    return [(root / f"run{i}", train(c, image_data, root / f"run{i}", progress=False))
            for i, c in enumerate(point_configs(base))]


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=rtol, atol=atol)


# ------------------------------------------------------------------ equivalence


def test_vmapped_grid_equals_single_runs(vmapped_grid, single_runs):
    workdirs, results = vmapped_grid
    for (lr, wd), wdir, res, (single_dir, single) in zip(POINTS, workdirs, results, single_runs):
        assert not res.diverged and res.resumed_from == 0
        # Same init, batches and augmentation: parameters, BatchNorm statistics, momentum
        # and step agree up to float summation order.
        assert int(res.state.step) == int(single.state.step) == 3 * 4
        assert float(res.state.opt_state.hyperparams["learning_rate"]) == pytest.approx(lr)
        assert float(res.state.opt_state.hyperparams["weight_decay"]) == pytest.approx(wd)
        assert_trees_close(res.state.params, single.state.params)
        assert_trees_close(res.state.batch_stats, single.state.batch_stats)
        assert_trees_close(res.state.opt_state, single.state.opt_state)
        # Metrics: the same log records (wall times aside).
        got, want = read_jsonl(wdir / "log.jsonl"), read_jsonl(single_dir / "log.jsonl")
        assert [r["epoch"] for r in got] == [1, 2, 3]
        for g, w in zip(got, want):
            assert set(g) == set(w)
            for key in ("loss", "train_accuracy", "test_accuracy", "lr"):
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), key
        # The same features files, and the same config.json apart from provenance.
        for epoch in (0, 2, 3):
            name = f"features/epoch_{epoch:04d}.npz"
            with np.load(wdir / name) as a, np.load(single_dir / name) as b:
                assert sorted(a.files) == sorted(b.files)
                for key in a.files:
                    np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=2e-5)
        cg, cs = read_json(wdir / "config.json"), read_json(single_dir / "config.json")
        for key in ("config", "data", "steps_per_epoch", "num_devices"):
            assert cg[key] == cs[key]
        # The workdir restores with the engine's own Checkpointer.
        ckpt = Checkpointer(wdir / "checkpoints")
        assert ckpt.latest_epoch() == 3
        ckpt.close()
    # Different hyperparameters did train differently.
    p0, p3 = (jax.tree.leaves(r.state.params)[0] for r in (results[0], results[3]))
    assert not np.allclose(np.asarray(p0), np.asarray(p3))


def test_grid_points_may_differ_only_in_hyperparameters(image_data, base, tmp_path):
    cfgs = [base, dataclasses.replace(base, seed=4)]
    with pytest.raises(ConfigError, match="differ only in lr, weight_decay, momentum; they also "
                                          "differ in seed"):
        train_grid(cfgs, image_data, [tmp_path / "a", tmp_path / "b"], progress=False)
    with pytest.raises(ConfigError, match="share a workdir"):
        train_grid(point_configs(base)[:2], image_data, [tmp_path / "a", tmp_path / "a"])
    assert not any(tmp_path.iterdir())


def test_engine_layout_errors_name_the_parameter_not_a_flag(image_data, base, tmp_path):
    """The engine layer is called by code as well as by the command line: its errors name
    its own parameter (the command line checks its flag first, naming the flag)."""
    from ncfine_jax.train.layout import check_mesh_shape

    three = point_configs(base)[:3]
    dirs = [tmp_path / c for c in "abc"]
    with pytest.raises(ConfigError, match=r"^mesh_shape \(2, 1\): the sequential mode"):
        train_grid(three, image_data, dirs, vectorize=False, mesh_shape=(2, 1), progress=False)
    with pytest.raises(ConfigError, match=r"^mesh_shape \(2, 1\): 2 model rows do not divide"):
        train_grid(three, image_data, dirs, vectorize=True, mesh_shape=(2, 1), progress=False)
    with pytest.raises(ConfigError, match=r"^mesh_shape \(1, 3\): needs 3 devices, there are 2"):
        check_mesh_shape((1, 3), 1, 2)
    with pytest.raises(ConfigError, match=r"^--mesh 1x3: needs 3 devices"):
        check_mesh_shape((1, 3), 1, 2, name="--mesh 1x3")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ resume and chunks


def test_killed_chunked_grid_resumes_to_the_same_result(vmapped_grid, image_data, base,
                                                        tmp_path, monkeypatch):
    _, reference = vmapped_grid
    workdirs = [tmp_path / G.point_name(lr, wd) for lr, wd in POINTS]
    saves = []
    real_save = Checkpointer.save

    def save_then_die(self, epoch, state):
        real_save(self, epoch, state)
        saves.append((self.directory.parent.name, epoch))
        # Killed in epoch 2 between the first and the second point's checkpoint: the first
        # point is one checkpoint ahead of the second.
        if epoch == 2 and len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_grid(point_configs(base), image_data, workdirs, chunk_size=2, progress=False)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    assert [len(read_jsonl(w / "log.jsonl")) for w in workdirs[:2]] == [2, 2]
    assert not (workdirs[2] / "log.jsonl").exists()  # the second chunk never started

    results = train_grid(point_configs(base), image_data, workdirs, chunk_size=2,
                         progress=False)
    assert [r.resumed_from for r in results] == [1, 1, 0, 0]
    for res, ref, wdir in zip(results, reference, workdirs):
        log = read_jsonl(wdir / "log.jsonl")
        assert [r["epoch"] for r in log] == [1, 2, 3]
        for got, want in zip(log, ref.log):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert_trees_close(res.state, ref.state)
    # A finished grid returns at once from its checkpoints.
    again = train_grid(point_configs(base), image_data, workdirs, chunk_size=2, progress=False)
    assert [r.resumed_from for r in again] == [3, 3, 3, 3]
    assert_trees_close(again[3].state, results[3].state, rtol=0, atol=0)


def test_plan_chunks_and_memory_estimate(image_data, base):
    assert plan_chunks(9, 10, 100, memory_fraction=1.0) == [9]  # 10 fit
    assert plan_chunks(9, 30, 100, memory_fraction=1.0) == [3, 3, 3]
    assert plan_chunks(10, 30, 100, memory_fraction=1.0) == [3, 3, 2, 2]
    assert plan_chunks(4, 10**12, 100) == [1, 1, 1, 1]  # nothing fits: one at a time
    assert plan_chunks(12, 1, None) == [12]
    assert plan_chunks(12, 1, 10**12, chunk_size=5) == [4, 4, 4]
    # Chunks that a mesh with 2 model rows can split: multiples of 2.
    assert plan_chunks(8, 20, 100, memory_fraction=1.0, multiple=2) == [4, 4]  # 5 fit
    assert plan_chunks(8, 30, 100, memory_fraction=1.0, multiple=2) == [2, 2, 2, 2]  # 3 fit
    assert plan_chunks(12, 1, 10**12, chunk_size=5, multiple=2) == [4, 4, 4]
    with pytest.raises(ConfigError, match="chunk_size=0"):
        plan_chunks(3, 1, None, chunk_size=0)
    engine = build_engine(base, image_data)
    est = estimate_model_memory(engine, 70, 24)
    params = sum(x.size * 4 for x in jax.tree.leaves(engine.init_state().params))
    # State = params + BatchNorm stats + momentum (+ scalars): about twice the params.
    assert 2 * params < est.state_bytes < 2.2 * params
    # Activations kept for backward: at least the [16, 3072] float input and hidden layers.
    assert est.train_bytes > 2 * est.state_bytes + 16 * 3072 * 4 // 2
    assert est.per_model_bytes >= est.state_bytes + est.train_bytes


# ------------------------------------------------------------------ divergence


def test_nan_point_is_marked_diverged_and_the_others_go_on(tmp_path, diverging,
                                                          no_degeneracy_checks):
    # lr 1000 diverges after a few finite epochs (the engine's own NaN test); lr 0.05 not.
    diverging_config, data = diverging
    base = dataclasses.replace(diverging_config, save_features_at=(6,))
    configs = point_configs(base, ((1000.0, 5e-4), (0.05, 5e-4)))
    out = {}
    for mode in ("vectorize", "sequential"):
        workdirs = [tmp_path / mode / G.point_name(c.lr, c.weight_decay) for c in configs]
        res = train_grid(configs, data, workdirs, vectorize=mode == "vectorize",
                         progress=False)
        bad, good = res
        epoch = bad.divergence["epoch"]
        assert bad.diverged and bad.state is None and 1 < epoch <= base.epochs
        assert read_divergence(workdirs[0])["epoch"] == epoch
        assert [r["epoch"] for r in read_jsonl(workdirs[0] / "log.jsonl")] == \
            list(range(1, epoch))
        assert not (workdirs[0] / "features").exists()
        ckpt = Checkpointer(workdirs[0] / "checkpoints")
        assert ckpt.latest_epoch() == epoch - 1
        ckpt.close()
        assert not good.diverged and read_divergence(workdirs[1]) is None
        log = read_jsonl(workdirs[1] / "log.jsonl")
        assert [r["epoch"] for r in log] == list(range(1, 7))
        assert all(np.isfinite(r["loss"]) for r in log)
        assert (workdirs[1] / "features" / "epoch_0006.npz").exists()
        out[mode] = (bad.divergence, log, good.state)
        # Rerunning neither revives the diverged point nor retrains the finished one.
        again = train_grid(configs, data, workdirs, vectorize=mode == "vectorize",
                           progress=False)
        assert again[0].diverged and again[1].resumed_from == 6
        assert len(read_jsonl(workdirs[1] / "log.jsonl")) == 6
    # Both paths stop the bad point in the same epoch; frozen in the vmapped stack, the
    # healthy point trained exactly as on its own.
    (div_v, log_v, state_v), (div_s, log_s, state_s) = out["vectorize"], out["sequential"]
    assert div_v["epoch"] == div_s["epoch"]
    for a, b in zip(log_v, log_s):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert_trees_close(state_v.params, state_s.params)


# ------------------------------------------------------------------ experiments/grid.py


def test_grid_script_writes_every_subworkdir_summary_and_figures(tmp_path, capsys):
    workdir = tmp_path / "grid"
    argv = ["coarse_digits", "--lr", "0.05", "0.01", "--wd", "5e-4", "0", "--epochs", "2",
            "--width", "16", "--subset", "400,100", "--save-features-at", "1", "2",
            "--clp-reduce", "pca", "--workdir", str(workdir), "--no-progress"]
    assert run_main(grid_main, argv) == 0
    summary = read_json(workdir / "summary.json")
    assert summary["mode"] in MODES
    assert [(p["lr"], p["wd"]) for p in summary["points"]] == [
        (0.05, 5e-4), (0.05, 0.0), (0.01, 5e-4), (0.01, 0.0)]
    for p in summary["points"]:
        sub = workdir / p["workdir"]
        for name in ("experiment.json", "label_mapping.json", "config.json", "log.jsonl",
                     "checkpoints", "features/epoch_0001.npz", "features/epoch_0002.npz",
                     "results.json", "report.md", "figures"):
            assert (sub / name).exists(), sub / name
        results = read_json(sub / "results.json")
        assert not p["diverged"] and p["epoch"] == 2
        for key in ("clp_accuracy", "lpo_accuracy", "final_train_accuracy",
                    "final_test_accuracy"):
            assert p[key] == results[key] and 0 <= p[key] <= 1
        assert p["nc1"] == results["nc1"]["2"] and p["nc2"] == results["nc2"]["2"]
        # The sub-workdir is the single run's: same experiment.json as coarse_digits.py.
        exp = read_json(sub / "experiment.json")
        assert (exp["experiment"], exp["lr"], exp["weight_decay"]) == \
            ("coarse_digits", p["lr"], p["wd"])
    for fig in ("grid_distance_heatmaps.png", "grid_clp_lpo.png",
                "grid_heatmaps_epoch_0001.png", "grid_heatmaps_epoch_0002.png"):
        assert (workdir / "figures" / fig).stat().st_size > 1000
    assert "| 0.05 | 0.0005 | no |" in capsys.readouterr().out

    # Bad input: one line, exit 2, nothing in the workdir changed.
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    for bad, message in (
            (["nonexistent"], "EXPERIMENT: the first argument must name an experiment"),
            (argv[:1] + ["--lr", "0.1", "0.1"] + argv[4:], "duplicate grid points"),
            (argv[:3] + ["0.02"] + argv[4:], "holds a different grid"),
            (argv + ["--sequential", "--chunk-size", "2"], "--chunk-size: only applies"),
            (argv[:1] + ["--lr", "-1"] + argv[4:], "--lr -1.0: must be positive")):
        assert run_main(grid_main, bad) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before
    # Rerunning the finished grid retrains and re-analyses nothing.
    kept = [workdir / p["workdir"] / name for p in summary["points"]
            for name in ("log.jsonl", "results.json", "features/epoch_0002.npz")]
    assert run_main(grid_main, argv) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == {p: before[p] for p in kept}
    assert read_json(workdir / "summary.json")["points"] == summary["points"]


def test_scan_epoch_equals_single_run_scan_epoch(image_data, base):
    # Accelerators drive epochs with one lax.scan (CPU loops over steps): check that path.
    engine = build_engine(base, image_data, epoch_mode="scan", num_models=2)
    configs = point_configs(base, POINTS[::3])
    key = engine.init_state().key
    out, alive, metrics = engine.run_epoch(engine.init_stack(configs), engine.alive(2), key,
                                           np.int32(0), engine.x_train, engine.y_train)
    assert np.asarray(alive).all() and metrics["loss"].shape == (engine.steps_per_epoch, 2)
    single = build_engine(base, image_data, epoch_mode="scan")
    for i, state in enumerate(single.init_stack([c]) for c in configs):
        ref, _, ref_metrics = single.run_epoch(state, single.alive(1), key, np.int32(0),
                                               single.x_train, single.y_train)
        assert_trees_close(engine.unstack(out, i), single.unstack(ref, 0))
        np.testing.assert_allclose(metrics["loss"][:, i], ref_metrics["loss"][:, 0], rtol=1e-5)


def test_faster_mode_is_the_one_with_more_images_per_second_per_model():
    def timing(mode, models, step_s):
        return ModeTiming(mode, models, compile_s=1.0, step_s=step_s, batch_size=16)

    # 4 models stacked in 0.1 s per step = 640 img/s each; one model in 0.05 s = 320.
    assert faster_mode([timing("vectorize", 4, 0.1), timing("sequential", 1, 0.05)]) == \
        "vectorize"
    assert faster_mode([timing("vectorize", 4, 0.3), timing("sequential", 1, 0.05)]) == \
        "sequential"
    # A tie trains every point exactly as its single run.
    assert faster_mode([timing("vectorize", 2, 0.1), timing("sequential", 1, 0.05)]) == \
        "sequential"
    assert timing("vectorize", 4, 0.1).images_per_s_per_model == pytest.approx(640)


def test_auto_grid_mode_times_both_modes_and_says_so(image_data, base, monkeypatch, capsys):
    from ncfine_jax.train import grid as train_grid_module

    configs = [dataclasses.replace(base, lr=lr) for lr in (0.05, 0.02, 0.01, 0.005)]
    measured = []
    time_modes = train_grid_module.time_modes

    def recorded(*args, **kwargs):
        measured.extend(time_modes(*args, **kwargs))
        return measured

    monkeypatch.setattr(train_grid_module, "time_modes", recorded)
    mode = choose_mode(configs, image_data)
    assert [(t.mode, t.models) for t in measured] == [("vectorize", 4), ("sequential", 1)]
    assert all(t.step_s > 0 and t.compile_s > 0 for t in measured)
    assert mode == faster_mode(measured)
    printed = capsys.readouterr().out
    assert "grid mode auto (timed): vectorize x4" in printed and printed.strip().endswith(mode)
    # On a CPU the MLP's steps are dispatch-bound: stacking 4 of them costs little more
    # than one (grid_bench.py: 3.2x the images per second per model on 2 cores).
    assert mode == "vectorize"
    # Nothing to time: one point, an explicit chunk size, a models axis > 1.
    assert choose_mode(configs[:1], image_data) == "sequential"
    assert choose_mode(configs, image_data, chunk_size=2) == "vectorize"
    assert choose_mode(configs, image_data, mesh_shape=(2, 1)) == "vectorize"
    assert len(measured) == 2
