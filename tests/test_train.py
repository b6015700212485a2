"""Training engine: schedules, optimizer, augmentation, end-to-end run, resume, sharding.

Tiny models (conftest.tiny_config: an MLP with BatchNorm on 32x32 images, compiled in a
few seconds) keep the file within its ~120 s budget on 2 cores; shared runs are
session-scoped fixtures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncfine_jax import manifest
from ncfine_jax.errors import ConfigError, DataError, NcfineError
from ncfine_jax.io import read_json, read_jsonl
from ncfine_jax.train import (Checkpointer, TrainConfig, TrainData, TrainingDivergedError,
                              build_engine, create_train_state, hyperparams_of, lr_at_epoch,
                              make_optimizer, make_schedule, normalize, random_crop_flip,
                              step_milestone_epochs, train)
from ncfine_jax.train.sharding import put_replicated

pytestmark = pytest.mark.filterwarnings("ignore:.*donated buffers were not usable")


@pytest.fixture(scope="session")
def full_run(image_data, tmp_path_factory, train_config):
    """One uninterrupted 4-epoch run on 2 devices (shared by several tests)."""
    workdir = tmp_path_factory.mktemp("full_run")
    result = train(train_config, image_data, workdir, progress=False)
    return workdir, result


@pytest.fixture(scope="session")
def engine(image_data, train_config):
    """Compiled engine for train_config on both devices (no workdir)."""
    return build_engine(train_config, image_data)


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                      for x, y in zip(la, lb))


# ---------------------------------------------------------------- schedules / optimizer


def test_step_schedule_boundaries():
    spe = 10
    f = make_schedule("step", 350, spe)
    assert float(f(0)) == 1.0
    assert float(f(150 * spe - 1)) == 1.0
    assert float(f(150 * spe)) == pytest.approx(0.1)
    assert float(f(250 * spe - 1)) == pytest.approx(0.1)
    assert float(f(250 * spe)) == pytest.approx(0.01)
    assert float(f(350 * spe - 1)) == pytest.approx(0.01)
    # 1-based epochs in the log: 150 is the last epoch at full lr, 151 the first at 0.1 lr.
    assert lr_at_epoch("step", 0.1, 350, spe, 150) == pytest.approx(0.1)
    assert lr_at_epoch("step", 0.1, 350, spe, 151) == pytest.approx(0.01)
    assert lr_at_epoch("step", 0.1, 350, spe, 251) == pytest.approx(0.001)
    # One epoch: round(3/7) = 0 would decay before any training; milestones are >= 1.
    assert step_milestone_epochs(1) == (1, 1) and float(make_schedule("step", 1, spe)(0)) == 1.0
    # The host-side logged lr (float64) agrees with the device schedule (float32).
    for name in ("constant", "step", "cosine"):
        f = make_schedule(name, 350, spe)
        for epoch in (1, 150, 151, 250, 251, 300, 350):
            assert lr_at_epoch(name, 0.1, 350, spe, epoch) == pytest.approx(
                0.1 * float(f((epoch - 1) * spe)), rel=1e-6, abs=1e-9)


def test_cosine_and_constant_schedules():
    f = make_schedule("cosine", 10, 7)
    assert float(f(0)) == pytest.approx(1.0)
    assert float(f(35)) == pytest.approx(0.5, abs=1e-6)
    assert float(f(70)) == pytest.approx(0.0, abs=1e-7)
    s = np.arange(70)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(s)), 0.5 * (1 + np.cos(np.pi * s / 70)),
                               atol=1e-6)
    assert float(make_schedule("constant", 10, 7)(69)) == 1.0
    with pytest.raises(ConfigError, match="schedule"):
        make_schedule("linear", 10, 7)


def test_optimizer_matches_pytorch_sgd_in_float64():
    # PyTorch SGD(momentum=mu, weight_decay=wd): g += wd p; buf = mu buf + g (buf = g at
    # step 0); p -= lr_t buf; with the step schedule (x0.1 from step 2 on: 2 epochs of 1).
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    cfg = TrainConfig(lr=0.3, weight_decay=0.01, momentum=0.9, schedule="step", epochs=7)
    tx = make_optimizer(cfg, steps_per_epoch=1)  # milestones at epochs 3 and 5
    p = rng.normal(size=(5,))
    params = {"w": jnp.asarray(p, jnp.float32)}
    state = tx.init(params)
    ref_p, buf = p.copy(), None
    for t in range(6):
        g = rng.normal(size=(5,))
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = {"w": params["w"] + updates["w"]}
        d = g + 0.01 * ref_p
        buf = d if buf is None else 0.9 * buf + d
        lr_t = 0.3 * (1.0 if t < 3 else 0.1 if t < 5 else 0.01)
        ref_p = ref_p - lr_t * buf
        np.testing.assert_allclose(np.asarray(params["w"]), ref_p, rtol=1e-5, atol=1e-6)
        assert float(state.hyperparams["lr_factor"]) * 0.3 == pytest.approx(lr_t)


# ---------------------------------------------------------------- augmentation / inputs


def test_random_crop_flip_is_a_crop_of_the_same_sample():
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    out = np.asarray(jax.jit(random_crop_flip, static_argnames="pad")(
        jax.random.PRNGKey(int(rng.integers(1 << 30))), jnp.asarray(images), pad=2))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(len(images)):  # sample i comes from image i only (labels stay aligned)
        candidates = [padded[i, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(out[i], c) for c in candidates)
    # Over many draws of the same shape (one compilation) offsets and flips all occur.
    crop = jax.jit(random_crop_flip, static_argnames="pad")
    same = jnp.asarray(np.repeat(images[:1], 6, 0))
    seen = {m.tobytes() for k in range(40)
            for m in np.asarray(crop(jax.random.PRNGKey(k), same, pad=2))}
    assert len(seen) > 30


def test_normalize_matches_numpy(image_data):
    mean, std = image_data.normalization()
    x = image_data.x_train.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-5)
    got = np.asarray(normalize(jnp.asarray(image_data.x_train[:3]), mean, std))
    np.testing.assert_allclose(got, (x[:3] - mean) / std, rtol=1e-5, atol=1e-5)
    feats = TrainData(np.c_[np.ones(5), np.arange(5.0)].astype(np.float32), np.zeros(5, int),
                      np.zeros(5, int), np.ones((2, 2), np.float32), np.zeros(2, int),
                      np.zeros(2, int), 1)
    m, s = feats.normalization()  # a constant feature gets std 1, not 0
    np.testing.assert_allclose(m, [1, 2])
    np.testing.assert_allclose(s, [1, np.sqrt(2)])


# ---------------------------------------------------------------- step and engine


def test_train_step_is_pure_and_jittable(engine, train_config):
    state = engine.init_state()
    batch = {"inputs": engine.x_train[:16], "labels": engine.y_train[:16]}
    step = jax.jit(engine.train_step)
    s1, m1 = step(state, batch, jax.random.PRNGKey(0))
    s2, m2 = step(state, batch, jax.random.PRNGKey(0))
    assert tree_equal(s1, s2) and float(m1["loss"]) == float(m2["loss"])
    assert int(s1.step) == 1 and not tree_equal(s1.params, state.params)
    assert not tree_equal(s1.batch_stats, state.batch_stats)  # BatchNorm stats updated
    assert float(m1["lr"]) == pytest.approx(train_config.lr)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(s1.params))


def test_seed_determinism_and_sharded_equals_single_device(engine, image_data, train_config):
    a, ma = engine.epoch(engine.init_state())
    b, _ = engine.epoch(engine.init_state())
    assert tree_equal(a, b)
    other = create_train_state(dataclasses.replace(train_config, seed=4), engine.model,
                               engine.input_shape, engine.tx)
    c, _ = engine.epoch(put_replicated(other, engine.mesh))
    assert not tree_equal(a.params, c.params)
    assert ma["loss"].shape == (engine.steps_per_epoch,) == (70 // 16,)
    # The same epoch on one device: same function up to float summation order.
    single = build_engine(train_config, image_data, devices=jax.devices()[:1])
    assert engine.mesh.devices.size == 2 and single.mesh.devices.size == 1
    s, ms = single.epoch(single.init_state())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(s)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ma["loss"], ms["loss"], rtol=2e-5)


def test_scan_epoch_equals_per_step_loop(engine, image_data, train_config):
    # CPU engines default to the per-step loop; the scan (accelerator default) must match.
    assert engine.epoch_mode == "loop"
    scan = build_engine(train_config, image_data, epoch_mode="scan")
    a, ma = engine.epoch(engine.init_state())
    b, mb = scan.epoch(scan.init_state())
    for x, y in zip(jax.tree.leaves((a, ma)), jax.tree.leaves((b, mb))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    assert int(b.step) == engine.steps_per_epoch


def test_vmapped_epoch_over_learning_rates_matches_separate_runs(engine, train_config):
    # A stack of states with different lr/weight decay runs as one compiled epoch.
    hyper = ((0.05, 5e-4), (0.2, 1e-2))
    configs = [dataclasses.replace(train_config, lr=lr, weight_decay=wd) for lr, wd in hyper]
    base = engine.init_state()
    out, alive, metrics = engine.run_epoch(engine.init_stack(configs), engine.alive(2),
                                           base.key, np.int32(0), engine.x_train,
                                           engine.y_train)
    assert np.asarray(alive).all()
    np.testing.assert_allclose(metrics["lr"][0], [0.05, 0.2], rtol=1e-6)
    assert float(out.opt_state.hyperparams["weight_decay"][1]) == pytest.approx(1e-2)
    for i, cfg in enumerate(configs):
        ref, _ = engine.epoch(hyperparams_of(base, cfg))  # a stack of one, compiled
        got = engine.unstack(out, i)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    assert not tree_equal(jax.tree.map(lambda a: a[0], out.params),
                          jax.tree.map(lambda a: a[1], out.params))


# ---------------------------------------------------------------- end to end


def test_end_to_end_writes_the_workdir_layout(full_run, image_data, train_config):
    workdir, result = full_run
    cfg = read_json(workdir / "config.json")
    # The record holds the precision that ran ("auto" resolved: fp32 on this CPU).
    assert train_config.precision == "auto" and cfg["config"]["precision"] == "fp32"
    assert cfg["config"] == train_config.resolved().to_dict()
    assert isinstance(cfg["git_commit"], str)
    assert cfg["git_commit"] and cfg["num_devices"] == 2 and cfg["steps_per_epoch"] == 4
    log = read_jsonl(workdir / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    for r in log:
        assert {"epoch", "loss", "train_accuracy", "test_accuracy", "lr", "wall_time_s"} <= set(r)
        assert np.isfinite(r["loss"]) and 0 <= r["test_accuracy"] <= 1
    # step schedule over 4 epochs: milestones after epochs round(12/7)=2 and round(20/7)=3.
    assert [r["lr"] for r in log] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert sorted(p.name for p in (workdir / "features").iterdir()) == \
        ["epoch_0000.npz", "epoch_0002.npz", "epoch_0004.npz"]
    assert Checkpointer(workdir / "checkpoints").latest_epoch() == 4
    f = np.load(workdir / "features" / "epoch_0004.npz")
    assert f["train_features"].shape == (70, 16) and f["test_features"].shape == (24, 16)
    assert f["train_features"].dtype == np.float32 and int(f["epoch"]) == 4
    np.testing.assert_array_equal(f["train_labels"], image_data.train_labels)
    np.testing.assert_array_equal(f["train_classes"], image_data.train_classes)
    np.testing.assert_array_equal(f["test_classes"], image_data.test_classes)
    # Features are the eval-mode penultimate layer of the final state, test accuracy too.
    logits, feats = result.model.apply(
        {"params": result.state.params, "batch_stats": result.state.batch_stats},
        normalize(jnp.asarray(image_data.x_test), result.mean, result.std), train=False)
    np.testing.assert_allclose(f["test_features"], np.asarray(feats), rtol=1e-5, atol=1e-5)
    acc = np.mean(np.argmax(np.asarray(logits), -1) == image_data.test_labels)
    assert log[-1]["test_accuracy"] == pytest.approx(acc)
    assert not np.array_equal(f["test_features"],
                              np.load(workdir / "features" / "epoch_0000.npz")["test_features"])


def training_script(image_data, train_config, tmp_path) -> str:
    """Python source that loads ``image_data`` (saved under ``tmp_path``) as ``data`` and
    ``train_config`` as ``cfg`` in a subprocess that the test then kills."""
    np.savez(tmp_path / "data.npz", **{k: getattr(image_data, k) for k in (
        "x_train", "train_labels", "train_classes", "x_test", "test_labels", "test_classes")})
    return textwrap.dedent(f"""
        import json, os, signal, warnings
        import numpy as np
        warnings.filterwarnings("ignore")
        from ncfine_jax.train import TrainConfig, TrainData, train
        d = np.load({str(tmp_path / "data.npz")!r})
        data = TrainData(*(d[k] for k in ("x_train", "train_labels", "train_classes",
                           "x_test", "test_labels", "test_classes")), num_labels=4)
        cfg = TrainConfig.from_dict(json.loads({json.dumps(train_config.to_dict())!r}))
    """)


def test_sigkill_after_checkpoint_then_resume_is_bit_identical(full_run, image_data, tmp_path,
                                                              train_config):
    workdir_a, result_a = full_run
    workdir_b = tmp_path / "run"
    script = training_script(image_data, train_config, tmp_path) + textwrap.dedent(f"""
        def kill(epoch, record):  # epoch 3 is logged, its checkpoint (epoch 4) never made
            if epoch == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        train(cfg, data, {str(workdir_b)!r}, progress=False, on_epoch_end=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["epoch"] for r in read_jsonl(workdir_b / "log.jsonl")] == [1, 2, 3]
    assert Checkpointer(workdir_b / "checkpoints").latest_epoch() == 2
    result_b = train(train_config, image_data, workdir_b, progress=False)
    assert result_b.resumed_from == 2
    assert tree_equal(result_a.state, result_b.state)
    strip = lambda log: [{k: v for k, v in r.items() if "time" not in k} for r in log]
    assert strip(read_jsonl(workdir_b / "log.jsonl")) == strip(read_jsonl(workdir_a / "log.jsonl"))
    for name in ("epoch_0000.npz", "epoch_0002.npz", "epoch_0004.npz"):
        fa, fb = np.load(workdir_a / "features" / name), np.load(workdir_b / "features" / name)
        assert all(np.array_equal(fa[k], fb[k]) for k in fa.files)
    # A finished run resumes to a no-op that returns the same state.
    again = train(train_config, image_data, workdir_b, progress=False)
    assert again.resumed_from == 4 and tree_equal(again.state, result_b.state)


@pytest.mark.parametrize("moment", ["while_writing", "committed_not_recorded"])
def test_sigkill_during_an_asynchronous_checkpoint_resumes_bit_identical(
        full_run, image_data, tmp_path, train_config, moment):
    # Killed right after ``save`` returned (orbax still writing in its thread, or done
    # and renamed but not yet recorded in the manifest): the run resumes from the latest
    # checkpoint orbax committed and ends as the uninterrupted run.
    workdir_a, result_a = full_run
    workdir_b = tmp_path / "run"
    script = training_script(image_data, train_config, tmp_path) + textwrap.dedent(f"""
        from ncfine_jax.train.checkpoint import Checkpointer
        save = Checkpointer.save
        def save_then_die(self, epoch, state):
            save(self, epoch, state)
            if epoch == 2:
                if {moment!r} == "committed_not_recorded":
                    self.manager.wait_until_finished()
                os.kill(os.getpid(), signal.SIGKILL)
        Checkpointer.save = save_then_die
        train(cfg, data, {str(workdir_b)!r}, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["epoch"] for r in read_jsonl(workdir_b / "log.jsonl")] == [1, 2]
    if moment == "committed_not_recorded":
        assert manifest.verify(workdir_b, "checkpoints/2") == manifest.NOT_RECORDED
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "damaged checkpoint" fallback warning
        result_b = train(train_config, image_data, workdir_b, progress=False)
    if moment == "committed_not_recorded":
        assert result_b.resumed_from == 2
        assert manifest.verify(workdir_b, "checkpoints/2") is None  # recorded on restore
    else:
        assert result_b.resumed_from in (0, 2)  # 2 when orbax finished before the kill
    assert tree_equal(result_a.state, result_b.state)
    strip = lambda log: [{k: v for k, v in r.items() if "time" not in k} for r in log]
    assert strip(read_jsonl(workdir_b / "log.jsonl")) == strip(read_jsonl(workdir_a / "log.jsonl"))


def test_saves_are_asynchronous_and_recorded_once_committed(tmp_path, train_config):
    from ncfine_jax import workdir as wdir

    state = {"w": jnp.arange(4.0)}
    with wdir.lock(tmp_path / "run"):
        ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
        assert ckpt.manager._options.enable_async_checkpointing
        ckpt.save(1, state)
        assert ckpt._pending == 1  # returned before the write was waited for
        ckpt.wait()
        assert ckpt._pending is None and ckpt.epochs() == [1]
        assert manifest.verify(tmp_path / "run", "checkpoints/1") is None
        ckpt.save(2, state)
        ckpt.close()  # the final wait
    assert manifest.verify(tmp_path / "run", "checkpoints/2") is None
    restored = Checkpointer(tmp_path / "run" / "checkpoints").restore(2, state)
    assert np.array_equal(np.asarray(restored["w"]), np.arange(4.0))


def test_workdir_with_other_config_is_refused_unless_overwrite(full_run, image_data,
                                                              other_image_data, tmp_path,
                                                              train_config):
    workdir, _ = full_run
    before = (workdir / "log.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"different config \(lr: 0.05 -> 0.1\)"):
        train(dataclasses.replace(train_config, lr=0.1), image_data, workdir, progress=False)
    with pytest.raises(ConfigError, match="different data"):
        train(train_config, other_image_data, workdir, progress=False)
    assert (workdir / "log.jsonl").read_bytes() == before  # nothing touched
    # Bookkeeping fields may differ on resume (the finished run returns at once).
    train(dataclasses.replace(train_config, checkpoint_every=1), image_data, workdir,
          progress=False)
    # overwrite=True removes only the engine's files.
    run_dir = tmp_path / "ow"
    run_dir.mkdir()
    (run_dir / "label_mapping.json").write_text("{}")
    (run_dir / "log.jsonl").write_text('{"epoch": 9}\n')
    with pytest.raises(ConfigError, match="no config.json"):
        train(train_config, image_data, run_dir, progress=False)
    short = dataclasses.replace(train_config, epochs=1, save_features_at=())
    res = train(short, image_data, run_dir, overwrite=True, progress=False)
    assert [r["epoch"] for r in res.log] == [1] and (run_dir / "label_mapping.json").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, diverging,
                                                       no_degeneracy_checks):
    # Only the NaN/inf check: with the explosion and collapse checks on, this run stops
    # earlier (test_exploding_loss_stops_before_it_is_nan).
    cfg, data = diverging
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged: loss is (nan|inf) in epoch \d+ "
                             r"\(first at step \d of 4") as e:
        train(cfg, data, tmp_path, progress=False)
    assert isinstance(e.value, NcfineError) and "\n" not in str(e.value)
    good = [r["epoch"] for r in read_jsonl(tmp_path / "log.jsonl")]
    assert good and good == list(range(1, len(good) + 1))
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_epoch() == good[-1]
    engine = build_engine(cfg, data)
    state = ckpt.restore(good[-1], engine.init_state())
    ckpt.close()
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(state.params))
    assert int(state.step) == good[-1] * 4


def test_exploding_loss_stops_before_it_is_nan(tmp_path, diverging):
    # lr 1000: the loss passes 100 log(4) long before it is NaN; the run stops at that
    # step, writes nothing of the epoch and records why in diverged.json.
    cfg, data = diverging
    with pytest.raises(TrainingDivergedError, match=r"loss is \S+ \(above 138.6\) in epoch 1 "
                                                    r"\(first at step \d of 4") as e:
        train(cfg, data, tmp_path, progress=False)
    assert "\n" not in str(e.value) and "last good checkpoint: epoch none" in str(e.value)
    record = read_json(tmp_path / "diverged.json")
    assert record["reason"] == "exploded" and record["epoch"] == 1 and record["loss"] > 138.6
    assert not (tmp_path / "log.jsonl").exists()
    assert Checkpointer(tmp_path / "checkpoints").latest_epoch() is None
    # Rerunning reports the recorded divergence without training again.
    with pytest.raises(TrainingDivergedError, match="above 138.6"):
        train(cfg, data, tmp_path, progress=False)


def test_features_collapsed_to_a_constant_stop_the_run(tmp_path, diverging, monkeypatch):
    # With the explosion check off, lr 1000 kills every ReLU in epoch 1 while the loss is
    # still finite: the test features are one constant vector, which the run reports.
    monkeypatch.setattr("ncfine_jax.train.engine.EXPLODED_LOSS_FACTOR", math.inf)
    cfg, data = diverging
    with pytest.raises(TrainingDivergedError, match=r"the features collapsed to a constant in "
                                                    r"epoch 1 \(lr=1000.0"):
        train(cfg, data, tmp_path, progress=False)
    record = read_json(tmp_path / "diverged.json")
    assert record["reason"] == "collapsed" and record["last_good_checkpoint"] is None
    assert not (tmp_path / "log.jsonl").exists() and not (tmp_path / "features").exists()


def test_bf16_compute_keeps_float32_params(image_data, train_config):
    cfg = dataclasses.replace(train_config, precision="bf16")
    eng = build_engine(cfg, image_data)
    state, metrics = eng.epoch(eng.init_state())
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert np.all(np.isfinite(metrics["loss"]))


def test_bad_config_and_data_raise_one_line_errors(image_data, train_config):
    for bad, match in ((dict(arch="resnet99"), "arch"), (dict(lr=-1.0), "lr"),
                       (dict(schedule="poly"), "schedule"), (dict(precision="fp16"), "precision"),
                       (dict(batch_size=0), "batch_size"), (dict(save_features_at=(9,)),
                                                            "save_features_at")):
        with pytest.raises(ConfigError, match=match):
            dataclasses.replace(train_config, **bad).validate()
    with pytest.raises(ConfigError, match="divisible"):
        build_engine(dataclasses.replace(train_config, batch_size=15), image_data)
    feats = TrainData(np.zeros((20, 4), np.float32), np.zeros(20, int), np.zeros(20, int),
                      np.zeros((5, 4), np.float32), np.zeros(5, int), np.zeros(5, int), 2)
    # One behaviour for augmentation of feature vectors everywhere: none (preflight).
    from ncfine_jax.train.preflight import preflight

    vectors = dataclasses.replace(train_config, batch_size=4, eval_batch_size=4)
    assert vectors.augment and not preflight(vectors, 20, False, 2).augment
    assert preflight(vectors, 20, True, 2).augment
    build_engine(vectors, feats)  # trains without augmentation rather than refusing
    with pytest.raises(ConfigError, match="batch_size=40 exceeds the 20 training samples"):
        build_engine(dataclasses.replace(vectors, batch_size=40), feats)
    bad_labels = dataclasses.replace(image_data, train_labels=image_data.train_labels + 4)
    with pytest.raises(DataError, match="train_labels holds label"):
        bad_labels.validate()
    with pytest.raises(DataError, match="uint8"):
        dataclasses.replace(image_data, x_train=image_data.x_train.astype(np.float32),
                            x_test=image_data.x_test.astype(np.float32)).validate()
    assert TrainConfig.from_dict(train_config.to_dict()) == train_config
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({"lr": 0.1, "lrr": 0.2})


def test_learns_coarse_digits(tmp_path):
    # Real data, float features: 5 coarse labels (digit // 2) are learnt in a few epochs.
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    tr, te = order[:1400], order[1400:]
    data = TrainData(x[tr], y[tr] // 2, y[tr], x[te], y[te] // 2, y[te], num_labels=5)
    cfg = TrainConfig(arch="mlp", width=64, epochs=4, batch_size=64, lr=0.05,
                      schedule="cosine", augment=False, eval_batch_size=100)
    result = train(cfg, data, tmp_path, progress=False)
    assert result.log[0]["loss"] > result.log[-1]["loss"]
    assert result.final["test_accuracy"] > 0.9
