"""``train(config, data, workdir)``: the resumable training loop that writes the workdir.

Workdir layout:
  config.json      {"config": TrainConfig.to_dict(), "data": TrainData.fingerprint(),
                    "git_commit": str, "steps_per_epoch": int, "num_devices": int,
                    "jax_version": str, "created_utc": str}
  log.jsonl        one record per epoch: epoch (1-based), loss, train_accuracy,
                   test_accuracy, lr, wall_time_s, epoch_time_s
  checkpoints/     orbax CheckpointManager, one step per checkpointed epoch
  features/epoch_XXXX.npz  (see features.save_features)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from ncfine_jax.errors import ConfigError
from ncfine_jax.io import append_jsonl, atomic_write_json, atomic_write_text, read_json, \
    read_jsonl
from ncfine_jax.models import get_model
from ncfine_jax.train.checkpoint import Checkpointer
from ncfine_jax.train.config import BOOKKEEPING_FIELDS, TrainConfig
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.features import features_path, save_features
from ncfine_jax.train.schedules import lr_at_epoch
from ncfine_jax.train.sharding import make_mesh, put_replicated, replicated
from ncfine_jax.train.state import (TrainingDivergedError, TrainState, create_train_state,
                                    make_optimizer)
from ncfine_jax.train.step import make_epoch_runner, make_eval_fn, make_train_step

# diverged.json is written by the grid trainer for a point whose loss became NaN/inf.
ENGINE_FILES = ("config.json", "log.jsonl", "checkpoints", "features", "diverged.json")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
      workdir: the run directory.
      state: final ``TrainState`` (replicated device arrays).
      log: all log.jsonl records, epochs 1..config.epochs.
      resumed_from: completed epoch the run restarted from (0 = fresh start).
      feature_files: features files of ``config.save_features_at`` (in the workdir).
      model: the Flax module (for inference with ``state.params``/``state.batch_stats``).
      mean, std: input normalisation, float32 [c] or [d].
    """

    workdir: Path
    state: TrainState
    log: list[dict]
    resumed_from: int
    feature_files: list[Path]
    model: Any
    mean: np.ndarray
    std: np.ndarray

    @property
    def final(self) -> dict:
        """The last log record."""
        return self.log[-1]


@dataclasses.dataclass
class Engine:
    """Model, compiled functions and device data of one (config, data, devices) triple.

    ``build_engine`` makes one; ``train`` uses it. Exposed so that benchmarks and tests
    can run epochs and evaluations without the workdir machinery.
    """

    config: TrainConfig
    model: Any
    tx: Any
    mesh: Any
    steps_per_epoch: int
    mean: np.ndarray
    std: np.ndarray
    train_step: Callable       # pure, unjitted
    run_epoch: Callable        # jitted, state donated: (state, x, y) -> (state, metrics)
    evaluate: Callable         # jitted: (params, batch_stats, x) -> (logits, features)
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    input_shape: tuple[int, ...]
    epoch_mode: str            # "scan" or "loop"

    def init_state(self) -> TrainState:
        """Fresh replicated state for ``config.seed``."""
        state = create_train_state(self.config, self.model, self.input_shape, self.tx)
        return put_replicated(state, self.mesh)


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout holding this package, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def build_engine(config: TrainConfig, data: TrainData,
                 devices: Sequence[jax.Device] | None = None,
                 epoch_mode: str | None = None) -> Engine:
    """Validate, build the model and optimizer, jit the epoch and eval functions, and put
    the data on device (replicated over the "data" mesh of ``devices``).

    ``epoch_mode``: "scan" (one ``lax.scan`` dispatch per epoch), "loop" (one dispatch per
    step, same batches and keys) or None = "loop" on CPU, "scan" elsewhere (see
    ``step.make_epoch_runner``: XLA:CPU is ~40x slower on convolutions inside loops).
    """
    config.validate()
    data.validate()
    mesh = make_mesh(devices)
    num_devices = mesh.devices.size
    n = len(data.x_train)
    if config.batch_size % num_devices:
        raise ConfigError(f"train config: batch_size={config.batch_size} must be divisible "
                          f"by the number of devices ({num_devices})")
    if config.eval_batch_size % num_devices:
        raise ConfigError(f"train config: eval_batch_size={config.eval_batch_size} must be "
                          f"divisible by the number of devices ({num_devices})")
    if n < config.batch_size:
        raise ConfigError(f"train config: batch_size={config.batch_size} exceeds the "
                          f"{n} training samples")
    if config.augment and not data.is_image:
        raise ConfigError("train config: augment=True needs [n, h, w, c] images; "
                          "set augment=False for feature-vector data")
    steps_per_epoch = n // config.batch_size
    compute_dtype = config.compute_dtype
    model_kwargs = dict(config.model_kwargs)
    if config.width is not None:
        model_kwargs["width"] = config.width
    model = get_model(config.arch, data.num_labels, dtype=compute_dtype, **model_kwargs)
    tx = make_optimizer(config, steps_per_epoch)
    mean, std = data.normalization()
    train_step = make_train_step(model, tx, mean, std, augment=config.augment,
                                 compute_dtype=compute_dtype, mesh=mesh)
    repl = replicated(mesh)
    if epoch_mode is None:
        epoch_mode = "loop" if mesh.devices.flat[0].platform == "cpu" else "scan"
    if epoch_mode not in ("scan", "loop"):
        raise ConfigError(f"epoch_mode={epoch_mode!r} must be 'scan', 'loop' or None")
    run_epoch = make_epoch_runner(train_step, steps_per_epoch, config.batch_size,
                                  mode=epoch_mode, out_sharding=repl)
    evaluate = jax.jit(make_eval_fn(model, mean, std, config.eval_batch_size,
                                    compute_dtype=compute_dtype, mesh=mesh),
                       out_shardings=repl)
    x_train, y_train, x_test = put_replicated(
        (data.x_train, np.asarray(data.train_labels, np.int32), data.x_test), mesh)
    return Engine(config, model, tx, mesh, steps_per_epoch, mean, std, train_step, run_epoch,
                  evaluate, x_train, y_train, x_test, tuple(np.shape(data.x_train)[1:]),
                  epoch_mode)


@contextlib.contextmanager
def quiet_cpu_donation():
    # CPU backends cannot reuse donated buffers and warn on every call; donation is for GPU.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
        yield


def prepare_run_workdir(workdir: Path, config: TrainConfig, fingerprint: dict,
                        steps_per_epoch: int, num_devices: int, overwrite: bool,
                        writer: bool) -> None:
    """Check (and on a fresh start write) ``workdir/config.json``; used by ``train`` and the
    grid trainer. Raises ConfigError when the workdir holds another config or other data."""
    config_path = workdir / "config.json"
    if overwrite and writer:
        for name in ENGINE_FILES:
            p = workdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if config_path.exists():
        saved = read_json(config_path)
        old = {k: v for k, v in saved.get("config", {}).items() if k not in BOOKKEEPING_FIELDS}
        new = config.result_fields()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise ConfigError(f"workdir {workdir}: holds a run with a different config "
                              f"({details}); use another workdir or overwrite=True")
        old_data = saved.get("data") or {}
        if old_data != fingerprint:
            diff = ", ".join(f"{k}: {old_data.get(k)!r} -> {fingerprint.get(k)!r}"
                             for k in sorted(set(old_data) | set(fingerprint))
                             if old_data.get(k) != fingerprint.get(k))
            raise ConfigError(f"workdir {workdir}: holds a run on different data ({diff}); "
                              "use another workdir or overwrite=True")
        return
    leftovers = [n for n in ENGINE_FILES[1:] if (workdir / n).exists()]
    if leftovers:
        raise ConfigError(f"workdir {workdir}: has {', '.join(leftovers)} but no config.json; "
                          "use another workdir or overwrite=True")
    if not writer:
        return
    atomic_write_json(config_path, {
        "config": config.to_dict(), "data": fingerprint, "git_commit": git_commit(),
        "steps_per_epoch": steps_per_epoch, "num_devices": num_devices,
        "jax_version": jax.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })


def divergence_message(loss: float, epoch: int, step: int, steps_per_epoch: int, lr: float,
                       weight_decay: float, last_good_epoch: int | None) -> str:
    """One line saying where the loss became NaN/inf (single runs and grid points)."""
    return (f"training diverged: loss is {loss} in epoch {epoch} (first at step {step} of "
            f"{steps_per_epoch}; lr={lr}, weight_decay={weight_decay}); last good "
            f"checkpoint: epoch {last_good_epoch or 'none'}")


def truncate_log(log_path: Path, last_epoch: int, writer: bool = True) -> list[dict]:
    """Keep records of epochs <= last_epoch (later ones came after the last checkpoint)."""
    if not log_path.exists():
        return []
    records = read_jsonl(log_path)
    kept = [r for r in records if r["epoch"] <= last_epoch]
    if len(kept) != len(records) and writer:
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def train(config: TrainConfig, data: TrainData, workdir: str | Path, *,
          overwrite: bool = False, devices: Sequence[jax.Device] | None = None,
          epoch_mode: str | None = None, progress: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) one run and write the workdir.

    Calling again with the same config, data and workdir resumes from the latest
    checkpoint (a finished run returns at once); the resumed run ends bit-identical on
    CPU to an uninterrupted one.

    Args:
      config: the run's hyperparameters.
      data: arrays and labels.
      workdir: run directory (created).
      overwrite: delete this engine's files in ``workdir`` (config.json, log.jsonl,
        checkpoints/, features/; nothing else) and start afresh. Without it a workdir
        whose config.json differs (in any field but checkpoint_every/keep_checkpoints)
        or was made on other data raises ``ConfigError``.
      devices: devices of the 1-D data mesh (default ``jax.devices()``).
      epoch_mode: "scan", "loop" or None (auto: loop on CPU); see ``build_engine``.
        Both give the same batches and keys; resuming bit-identically needs the same
        mode and platform.
      progress: show a tqdm bar over epochs.
      on_epoch_end: called as ``on_epoch_end(epoch, record)`` after the epoch's log
        record, features and checkpoint are written.

    Returns:
      ``TrainResult``.

    Raises:
      ConfigError / DataError: invalid config or data, or a mismatching workdir.
      TrainingDivergedError: the mean loss of an epoch is NaN/inf. Nothing of that epoch
        is written; the checkpoints of earlier epochs stay.
    """
    workdir = Path(workdir)
    engine = build_engine(config, data, devices, epoch_mode)
    fingerprint = data.fingerprint()
    workdir.mkdir(parents=True, exist_ok=True)
    # Multi-host: every process trains and checkpoints (orbax coordinates them); only
    # process 0 writes config.json, log.jsonl and features.
    writer = jax.process_index() == 0
    prepare_run_workdir(workdir, config, fingerprint, engine.steps_per_epoch,
                     engine.mesh.devices.size, overwrite, writer)
    log_path = workdir / "log.jsonl"
    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
    try:
        with quiet_cpu_donation():
            return _run(engine, data, workdir, log_path, ckpt, progress and writer,
                        on_epoch_end, writer)
    finally:
        ckpt.close()


def _run(engine: Engine, data: TrainData, workdir: Path, log_path: Path, ckpt: Checkpointer,
         progress: bool, on_epoch_end, writer: bool) -> TrainResult:
    config = engine.config
    state = engine.init_state()
    start = ckpt.latest_epoch() or 0
    if start:
        state = ckpt.restore(start, state)
    log = truncate_log(log_path, start, writer)
    wall_offset = log[-1]["wall_time_s"] if log else 0.0
    feature_files = [features_path(workdir, e) for e in config.save_features_at]
    test_labels = np.asarray(data.test_labels)

    def write_features(epoch: int, test_features=None) -> None:
        _, train_features = engine.evaluate(state.params, state.batch_stats, engine.x_train)
        if test_features is None:
            _, test_features = engine.evaluate(state.params, state.batch_stats, engine.x_test)
        if not writer:
            return
        save_features(features_path(workdir, epoch), epoch, np.asarray(train_features),
                      data.train_labels, data.train_classes, np.asarray(test_features),
                      data.test_labels, data.test_classes)

    if start == 0 and 0 in config.save_features_at:
        write_features(0)
    t0 = time.perf_counter()
    bar = tqdm(range(start + 1, config.epochs + 1), initial=start, total=config.epochs,
               disable=not progress, desc=f"{config.arch} {workdir.name}", unit="epoch")
    for epoch in bar:
        t_epoch = time.perf_counter()
        state, metrics = engine.run_epoch(state, engine.x_train, engine.y_train)
        losses = np.asarray(metrics["loss"], np.float64)
        loss = float(losses.mean())
        if not math.isfinite(loss):
            bad_step = int(np.argmin(np.isfinite(losses))) + 1
            raise TrainingDivergedError(divergence_message(
                loss, epoch, bad_step, engine.steps_per_epoch, config.lr, config.weight_decay,
                ckpt.latest_epoch()) + f" in {ckpt.directory}")
        # One eval pass gives the test accuracy and, at save epochs, the test features.
        logits, test_features = engine.evaluate(state.params, state.batch_stats, engine.x_test)
        test_accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == test_labels))
        now = time.perf_counter()
        record = {
            "epoch": epoch,
            "loss": loss,
            "train_accuracy": float(np.asarray(metrics["accuracy"], np.float64).mean()),
            "test_accuracy": test_accuracy,
            "lr": lr_at_epoch(config.schedule, config.lr, config.epochs,
                              engine.steps_per_epoch, epoch),
            "wall_time_s": round(wall_offset + now - t0, 3),
            "epoch_time_s": round(now - t_epoch, 3),
        }
        if writer:
            append_jsonl(log_path, record)
        log.append(record)
        if epoch in config.save_features_at:
            write_features(epoch, test_features)
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            ckpt.save(epoch, state)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{record['train_accuracy']:.3f}",
                        test=f"{test_accuracy:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    bar.close()
    return TrainResult(workdir=workdir, state=state, log=log, resumed_from=start,
                       feature_files=feature_files, model=engine.model, mean=engine.mean,
                       std=engine.std)
