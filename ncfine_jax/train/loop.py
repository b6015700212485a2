"""The training loop: a stack of k >= 1 models trained together, each with its own workdir.

``train(config, data, workdir)`` is the k = 1 call; the grid (``train.grid.train_grid``)
calls the same :func:`train_stack` with k models. Per model the loop restores, logs,
saves features and checkpoints, and records divergence; the models share batches and
augmentation keys.

Workdir of each model (engine files):
  config.json      {"config": TrainConfig.to_dict(), "data": TrainData.fingerprint(),
                    "git_commit", "steps_per_epoch", "num_devices", "mesh", "jax_version",
                    "created_utc"}
  log.jsonl        one record per epoch: epoch (1-based), loss, train_accuracy,
                   test_accuracy (null between evaluations: ``Engine.evaluates_at``), lr,
                   wall_time_s, epoch_time_s
  checkpoints/     orbax, one step per checkpointed epoch
  features/epoch_XXXX.npz  (see features.save_features)
  diverged.json    written when the model diverged (see ``divergence_record``)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ncfine_jax import console, runlog
from ncfine_jax import workdir as wdir
from ncfine_jax.errors import ConfigError
from ncfine_jax.io import append_jsonl, atomic_write_json
from ncfine_jax.settings import RECORD_VERSION
from ncfine_jax.tensorboard import EventWriter
from ncfine_jax.train.checkpoint import Checkpointer
from ncfine_jax.train.config import TrainConfig
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.engine import (Engine, build_engine, hyperparams_of,
                                     quiet_cpu_donation)
from ncfine_jax.train.features import features_path, save_features
from ncfine_jax.train.preflight import preflight
from ncfine_jax.train.progress import tqdm
from ncfine_jax.train.resume import check_engine_workdir, restore_newest
from ncfine_jax.train.schedules import lr_at_epoch
from ncfine_jax.distributed import barrier, is_writer
from ncfine_jax.train.sharding import put_replicated, to_host
from ncfine_jax.train.state import TrainingDivergedError, TrainState

# Fields a stack's models may differ in (the optimizer's injected hyperparameters).
HYPERPARAMETER_FIELDS = ("lr", "weight_decay", "momentum")
# Relative feature spread (``step.feature_spread``) at or below which the test features
# count as collapsed to a constant.
COLLAPSED_SPREAD = 1e-6


@dataclasses.dataclass
class PointResult:
    """What ``train_stack`` returns per model.

    Attributes:
      config: the model's TrainConfig.
      workdir: its run directory.
      log: its log.jsonl records (epochs 1..last good epoch).
      diverged: True when it diverged (it stopped updating there).
      divergence: the content of its ``diverged.json`` or None.
      resumed_from: completed epoch it restarted from in this call (0 = fresh start).
      state: final TrainState, replicated (None for diverged models).
    """

    config: TrainConfig
    workdir: Path
    log: list[dict]
    diverged: bool
    divergence: dict | None
    resumed_from: int
    state: TrainState | None


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


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout holding this package, or "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def check_stack_configs(configs: Sequence[TrainConfig], workdirs: Sequence[Path]) -> None:
    """ConfigError unless the configs may train as one stack in distinct workdirs."""
    if not configs:
        raise ConfigError("grid: needs at least one grid point")
    if len(workdirs) != len(configs):
        raise ConfigError(f"grid: {len(configs)} configs but {len(workdirs)} workdirs")
    resolved = [Path(w).resolve() for w in workdirs]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("grid: two grid points share a workdir (duplicate lr/wd values?)")
    for c in configs:
        c.validate()

    def shared(c):
        return {k: v for k, v in c.result_fields().items() if k not in HYPERPARAMETER_FIELDS}

    ref = shared(configs[0])
    for c in configs[1:]:
        diff = wdir.differences(ref, shared(c))
        if diff:
            raise ConfigError(f"grid: points may differ only in {', '.join(HYPERPARAMETER_FIELDS)}"
                              f"; they also differ in {', '.join(diff)}")


def write_engine_record(workdir: Path, config: TrainConfig, fingerprint: dict,
                        engine: Engine) -> None:
    atomic_write_json(wdir.RunDir(workdir).config, {
        "record_version": RECORD_VERSION, "config": config.to_dict(), "data": fingerprint,
        "git_commit": git_commit(),
        "steps_per_epoch": engine.steps_per_epoch, "num_devices": engine.num_devices,
        "mesh": list(engine.mesh_shape), "jax_version": jax.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })


def read_divergence(workdir: str | Path) -> dict | None:
    """Content of ``workdir/diverged.json`` (the model diverged), or None."""
    path = wdir.RunDir(workdir).diverged
    return wdir.read_json_file(path, "divergence record", {"epoch": int, "reason": str},
                               remedy="; rerun with --overwrite to start afresh"
                               ) if path.exists() else None


def divergence_record(reason: str, epoch: int, config: TrainConfig, steps_per_epoch: int,
                      last_good: int | None, checkpoint_dir: Path, *, step: int | None = None,
                      loss: float | None = None, max_loss: float | None = None) -> dict:
    """The one divergence record (``diverged.json``) of single runs and grid points.

    Args:
      reason: "nonfinite" (loss NaN/inf), "exploded" (finite loss above ``max_loss``) or
        "collapsed" (the test features became one constant vector).
      epoch: 1-based epoch in which it happened; step: 1-based step of that epoch.
      last_good: latest checkpointed epoch before it (None: none).
    """
    where = (f"in epoch {epoch}" + (f" (first at step {step} of {steps_per_epoch}; "
                                    if step else " (") +
             f"lr={config.lr}, weight_decay={config.weight_decay})")
    if reason == "collapsed":
        what = "training degenerated: the features collapsed to a constant"
    elif reason == "exploded":
        what = f"training diverged: loss is {loss:.4g} (above {max_loss:.4g})"
    else:
        what = f"training diverged: loss is {loss}"
    message = (f"{what} {where}; last good checkpoint: epoch {last_good or 'none'} in "
               f"{checkpoint_dir}")
    return {"epoch": epoch, "step": step, "reason": reason, "loss": loss,
            "lr": config.lr, "weight_decay": config.weight_decay,
            "last_good_checkpoint": last_good, "message": message}


def train_stack(configs: Sequence[TrainConfig], data: TrainData,
                workdirs: Sequence[str | Path], *, engine: Engine | None = None,
                overwrite: bool = False, devices: Sequence[jax.Device] | None = None,
                mesh_shape: tuple[int, int] | None = None, epoch_mode: str | None = None,
                progress: bool = True, on_epoch_end: Callable | None = None
                ) -> list[PointResult]:
    """Train (or resume) k models together; model i writes ``workdirs[i]``.

    Args:
      configs: one TrainConfig per model; they may differ only in lr, weight_decay and
        momentum (one seed: the same initialisation, shuffles and augmentation).
      data: the shared training data.
      workdirs: one run directory per model.
      engine: a ``build_engine`` result for these configs (built when None).
      overwrite: delete the engine's files in the workdirs (``workdir.ENGINE_FILES``,
        nothing else) and start afresh.
      devices, mesh_shape, epoch_mode: passed to ``build_engine``.
      progress: tqdm bar over epochs.
      on_epoch_end: ``on_epoch_end(epoch, records)`` after an epoch's logs, features and
        checkpoints are written; ``records[i]`` is model i's log record (None when
        it is no longer training).

    Returns:
      One ``PointResult`` per model, in order. A model whose loss became NaN/inf or
      exploded, or whose features collapsed to a constant, is frozen from the step
      before, recorded in its ``diverged.json`` and reported diverged; the others go on.
      Models already recorded diverged are not trained again.

    Raises:
      ConfigError / DataError / WorkdirError: bad input or an unusable workdir, all
        checked before anything is written.
    """
    workdirs = [Path(w) for w in workdirs]
    configs = [c.resolved() for c in configs]  # config.json holds the precision that runs
    check_stack_configs(configs, workdirs)
    engine = engine or build_engine(configs[0], data, devices, epoch_mode,
                                    num_models=len(configs), mesh_shape=mesh_shape)
    # As they train (no augmentation of feature vectors): what config.json records.
    configs = [preflight(c, len(data.x_train), data.is_image, engine.mesh_shape[1])
               for c in configs]
    fingerprint = data.fingerprint()
    writer = is_writer()
    resuming = [check_engine_workdir(w, c, fingerprint, overwrite)
                for c, w in zip(configs, workdirs)]
    with contextlib.ExitStack() as held:
        if writer:  # each workdir locked, and what is written in it recorded in its manifest
            for w in workdirs:
                held.enter_context(wdir.lock(w, "workdir"))
        return _train_checked(configs, data, workdirs, engine, fingerprint, resuming,
                              overwrite, writer, progress, on_epoch_end)


def _train_checked(configs, data, workdirs, engine, fingerprint, resuming, overwrite,
                   writer, progress, on_epoch_end) -> list[PointResult]:
    if writer:
        for c, w, resume in zip(configs, workdirs, resuming):
            wdir.make_dirs(w, "workdir")
            if overwrite:
                wdir.reset(w, wdir.ENGINE_FILES)
                if wdir.RunDir(w).log.exists():  # not in the manifest, so not reset: afresh too
                    runlog.write_log(wdir.RunDir(w).log, [])
            if not resume:
                write_engine_record(w, c, fingerprint, engine)
    barrier("engine workdirs ready")  # the other processes read what process 0 wrote
    results: list[PointResult | None] = [None] * len(configs)
    active = []
    for i, (c, w) in enumerate(zip(configs, workdirs)):
        divergence = read_divergence(w)
        if divergence is not None:
            results[i] = PointResult(c, w, wdir.read_log(wdir.RunDir(w).log, writer), True,
                                     divergence, 0, None)
        else:
            active.append(i)
    if active and len(active) % engine.mesh_shape[0]:
        # Models recorded diverged left a stack the mesh's model rows do not divide.
        engine = build_engine(configs[0], data, list(engine.mesh.devices.flat),
                              engine.epoch_mode, num_models=len(active))
    if active:
        with quiet_cpu_donation():
            trained = _train_active(engine, data, [configs[i] for i in active],
                                    [workdirs[i] for i in active], progress and writer,
                                    on_epoch_end, writer)
        for i, r in zip(active, trained):
            results[i] = r
    return results  # type: ignore[return-value]


class _StackRun:
    """The per-model bookkeeping of one stack in training: which models are alive, their
    divergence records, logs, feature files and checkpoints (``writer``: this process
    writes the files)."""

    def __init__(self, engine: Engine, data: TrainData, configs: list[TrainConfig],
                 workdirs: list[Path], writer: bool):
        self.engine, self.data, self.configs, self.workdirs = engine, data, configs, workdirs
        self.config, self.k, self.writer = configs[0], len(configs), writer
        # Several processes save synchronously: orbax's background commits there end in a
        # failed shutdown barrier of jax.distributed (seen with gloo on CPU).
        self.ckpts = [Checkpointer(wdir.RunDir(w).checkpoints, max_to_keep=c.keep_checkpoints,
                                   asynchronous=jax.process_count() == 1)
                      for c, w in zip(configs, workdirs)]
        self.alive = np.ones(self.k, bool)
        self.divergences: list[dict | None] = [None] * self.k
        self.test_labels = np.asarray(data.test_labels)
        self.events: list[EventWriter] = []

    def restore(self) -> tuple[TrainState, int, jax.Array]:
        """(stacked state, completed epoch to start from, the run's key); the logs cut to
        that epoch."""
        base = self.engine.init_state()
        templates = [hyperparams_of(base, c) for c in self.configs]
        start, states = restore_newest(self.ckpts, [put_replicated(t, self.engine.mesh)
                                                    for t in templates], self.config.epochs)
        # Every log is checked against ``start`` before any is cut or a checkpoint deleted.
        logs = [runlog.check_resume(wdir.RunDir(w).log, start, self.config.epochs,
                                    self.writer) for w in self.workdirs]
        for ckpt in self.ckpts:
            # Models killed between two of a stack's saves may be one checkpoint ahead, and
            # an unreadable newer checkpoint is replaced: all resume from ``start``.
            ckpt.delete_after(start)
            if self.writer:
                ckpt.discard_unfinished()
        stack = self.engine.stack(states)
        self.logs = []
        for w, (kept, cut) in zip(self.workdirs, logs):
            if cut and self.writer:
                runlog.write_log(wdir.RunDir(w).log, kept)
            self.logs.append(kept)
        self.offsets = [log[-1]["wall_time_s"] if log else 0.0 for log in self.logs]
        # Live curves; the epochs after ``start`` are trained again, so their old events go.
        self.events = [EventWriter(wdir.RunDir(w).tensorboard, purge_step=start + 1)
                       for w in self.workdirs]
        return stack, start, base.key

    def progress_bar(self, start: int, progress: bool):
        """A tqdm bar over the epochs (``progress``), else an iterator over them (the
        console then gets one line per epoch)."""
        epochs = range(start + 1, self.config.epochs + 1)
        if not progress:
            return tqdm(epochs, disable=True)
        desc = self.config.arch
        if self.k > 1:  # the points' names, or the first and last when they would not fit
            names = ", ".join(w.name for w in self.workdirs)
            if len(names) > 50:
                names = f"{self.workdirs[0].name} ... {self.workdirs[-1].name}"
            desc += f" x{self.k} [{names}]"
        return tqdm(epochs, initial=start, total=self.config.epochs, unit="epoch",
                    desc=desc, dynamic_ncols=True)

    def report(self, bar, epoch: int, records: list[dict | None], progress: bool) -> None:
        """The epoch's numbers: on the bar, else as one console line; and into the live
        curves. Means over the stack's alive models when it holds several."""
        alive = [r for r in records if r is not None]
        if not alive:
            return
        images = self.engine.steps_per_epoch * self.config.batch_size
        seconds = alive[0]["epoch_time_s"]
        tested = [r["test_accuracy"] for r in alive if r["test_accuracy"] is not None]
        numbers = {"loss": f"{np.mean([r['loss'] for r in alive]):.3f}",
                   "acc": f"{np.mean([r['train_accuracy'] for r in alive]):.3f}"}
        if tested:
            numbers["test"] = f"{np.mean(tested):.3f}"
        numbers["lr"] = f"{alive[0]['lr']:.3g}" if self.k == 1 else "per point"
        numbers["img/s"] = f"{images * len(alive) / max(seconds, 1e-9):,.0f}"
        if self.k > 1:
            numbers["alive"] = f"{int(self.alive.sum())}/{self.k}"
        if progress:
            bar.set_postfix(numbers, refresh=False)
        else:
            console.say(f"  epoch {epoch}/{self.config.epochs}  "
                        + "  ".join(f"{k} {v}" for k, v in numbers.items())
                        + f"  ({seconds:.1f} s)")
        for j, record in enumerate(records):
            if record is not None:
                self.events[j].scalars(epoch, {
                    "train/loss": record["loss"], "train/accuracy": record["train_accuracy"],
                    "test/accuracy": record["test_accuracy"], "train/lr": record["lr"],
                    "train/images_per_s": images / max(record["epoch_time_s"], 1e-9)})

    def diverge(self, j: int, record: dict) -> None:
        self.divergences[j] = record
        self.alive[j] = False
        if self.writer:
            atomic_write_json(wdir.RunDir(self.workdirs[j]).diverged, record)

    def check_losses(self, epoch: int, metrics: dict, alive_dev: jax.Array
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Per-step losses and accuracies [steps, k] of the epoch; models the step froze
        for a NaN/inf or exploded loss recorded diverged."""
        losses = to_host(metrics["loss"]).astype(np.float64)
        accuracies = to_host(metrics["accuracy"]).astype(np.float64)
        now_alive = to_host(alive_dev).astype(bool)
        max_loss = self.engine.max_loss
        for j in np.flatnonzero(self.alive & ~now_alive):
            bad = ~(np.isfinite(losses[:, j]) & (losses[:, j] <= max_loss))
            step = int(np.argmax(bad)) + 1
            loss = float(losses[step - 1, j])
            self.diverge(j, divergence_record(
                "nonfinite" if not math.isfinite(loss) else "exploded", epoch,
                self.configs[j], self.engine.steps_per_epoch, self.ckpts[j].latest_epoch(),
                self.ckpts[j].directory, step=step, loss=loss, max_loss=max_loss))
        return losses, accuracies

    def evaluate(self, epoch: int, stack: TrainState):
        """(test logits, test features) of the stack at an evaluated epoch, else (None,
        None); models whose test features collapsed to a constant recorded diverged."""
        engine = self.engine
        if not (self.alive.any() and engine.evaluates_at(epoch)):
            return None, None
        logits, test_f = engine.evaluate(stack.params, stack.batch_stats, engine.x_test)
        spread = to_host(engine.spread(test_f))
        for j in np.flatnonzero(self.alive & (spread <= COLLAPSED_SPREAD)):
            self.diverge(j, divergence_record("collapsed", epoch, self.configs[j],
                                              engine.steps_per_epoch,
                                              self.ckpts[j].latest_epoch(),
                                              self.ckpts[j].directory))
        return logits, test_f

    def log_epoch(self, epoch: int, losses: np.ndarray, accuracies: np.ndarray, logits,
                  started: float, epoch_started: float) -> list[dict | None]:
        """The epoch's log.jsonl record of every alive model (None for the others),
        appended to its log."""
        test_acc = (None if logits is None else
                    np.mean(np.argmax(to_host(logits), -1) == self.test_labels[None], axis=1))
        now = time.perf_counter()
        records: list[dict | None] = [None] * self.k
        for j in np.flatnonzero(self.alive):
            records[j] = {
                "epoch": epoch,
                "loss": float(losses[:, j].mean()),
                "train_accuracy": float(accuracies[:, j].mean()),
                "test_accuracy": None if test_acc is None else float(test_acc[j]),
                "lr": lr_at_epoch(self.config.schedule, self.configs[j].lr,
                                  self.config.epochs, self.engine.steps_per_epoch, epoch),
                # Wall times of the whole stack: its k models train together.
                "wall_time_s": round(self.offsets[j] + now - started, 3),
                "epoch_time_s": round(now - epoch_started, 3),
            }
            if self.writer:
                append_jsonl(wdir.RunDir(self.workdirs[j]).log, records[j])
            self.logs[j].append(records[j])
        return records

    def write_features(self, epoch: int, stack: TrainState, test_features=None) -> None:
        """``features/epoch_XXXX.npz`` of every alive model (``test_features``: already
        evaluated this epoch)."""
        engine, data = self.engine, self.data
        _, train_f = engine.evaluate(stack.params, stack.batch_stats, engine.x_train)
        if test_features is None:
            _, test_features = engine.evaluate(stack.params, stack.batch_stats, engine.x_test)
        train_f, test_f = to_host(train_f), to_host(test_features)
        kernel, bias = _classifier(stack.params)
        if not self.writer:
            return
        for j in np.flatnonzero(self.alive):
            save_features(features_path(self.workdirs[j], epoch), epoch, train_f[j],
                          data.train_labels, data.train_classes, test_f[j],
                          data.test_labels, data.test_classes,
                          classifier_kernel=None if kernel is None else kernel[j],
                          classifier_bias=None if bias is None else bias[j])

    def wait_for_checkpoints(self) -> None:
        for ckpt in self.ckpts:
            ckpt.wait()

    def checkpoint(self, epoch: int, stack: TrainState) -> None:
        if epoch % self.config.checkpoint_every == 0 or epoch == self.config.epochs:
            for j in np.flatnonzero(self.alive):  # the same on every process
                self.ckpts[j].save(epoch, self.engine.unstack(stack, j))

    def results(self, stack: TrainState, start: int) -> list[PointResult]:
        return [PointResult(self.configs[j], self.workdirs[j], self.logs[j],
                            self.divergences[j] is not None, self.divergences[j], start,
                            None if self.divergences[j] is not None
                            else self.engine.unstack(stack, j))
                for j in range(self.k)]

    def close(self) -> None:
        for ckpt in self.ckpts:
            ckpt.close()
        for events in self.events:
            events.close()


def _classifier(stack_params) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(kernel, bias) of the stacked classifier head on the host, or (None, None)."""
    head = stack_params.get("classifier") if isinstance(stack_params, dict) else None
    if head is None:
        return None, None
    return to_host(head["kernel"]), to_host(head["bias"])


def _train_active(engine: Engine, data: TrainData, configs: list[TrainConfig],
                  workdirs: list[Path], progress: bool, on_epoch_end, writer: bool
                  ) -> list[PointResult]:
    run = _StackRun(engine, data, configs, workdirs, writer)
    try:
        stack, start, run_key = run.restore()
        config = run.config
        if start < config.epochs:
            with console.phase("compiling the training step and evaluation"):
                engine.compile_training(stack, put_replicated(run.alive, engine.mesh), run_key)
                engine.compile_evaluation(stack, train_set=any(
                    e > start for e in config.save_features_at))
            # Together into the first step: the processes' compile times differ.
            barrier("compiled")
        if start == 0 and 0 in config.save_features_at:
            run.write_features(0, stack)
        started = time.perf_counter()
        bar = run.progress_bar(start, progress)
        for epoch in bar:
            epoch_started = time.perf_counter()
            stack, alive_dev, metrics = engine.run_epoch(
                stack, put_replicated(run.alive, engine.mesh), run_key, np.int32(epoch - 1),
                engine.x_train, engine.y_train)
            # The checkpoint of an earlier epoch was written while this one trained; it is
            # committed before this epoch is logged (a logged epoch E means the checkpoint
            # before E is complete).
            run.wait_for_checkpoints()
            losses, accuracies = run.check_losses(epoch, metrics, alive_dev)
            logits, test_features = run.evaluate(epoch, stack)
            if not run.alive.any():
                break
            records = run.log_epoch(epoch, losses, accuracies, logits, started, epoch_started)
            if epoch in config.save_features_at:
                run.write_features(epoch, stack, test_features)
            run.checkpoint(epoch, stack)
            run.report(bar, epoch, records, progress)
            if on_epoch_end is not None:
                on_epoch_end(epoch, records)
        bar.close()
        return run.results(stack, start)
    finally:
        run.close()


def train(config: TrainConfig, data: TrainData, workdir: str | Path, *,
          overwrite: bool = False, devices: Sequence[jax.Device] | None = None,
          mesh_shape: tuple[int, int] | None = None, epoch_mode: str | None = None,
          progress: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume) one run and write its workdir: the k = 1 ``train_stack``.

    Calling again with the same config, data and workdir resumes from the latest intact
    checkpoint (a finished run returns at once); the resumed run ends bit-identical on
    CPU to an uninterrupted one.

    Args:
      config: the run's hyperparameters.
      data: arrays and labels.
      workdir: run directory (created).
      overwrite: delete this engine's files in ``workdir`` (config.json, log.jsonl,
        checkpoints/, features/, diverged.json; nothing else) and start afresh. Without
        it a workdir whose config.json differs (in any field but checkpoint_every /
        keep_checkpoints) or was made on other data raises ``ConfigError``.
      devices: devices of the mesh (default ``jax.devices()``).
      mesh_shape: (1, D) layout; default all devices on the "data" axis.
      epoch_mode: "scan", "loop" or None (auto: loop on CPU); see ``build_engine``.
        Both give the same batches and keys; resuming bit-identically needs the same
        mode and platform.
      progress: show a tqdm bar over epochs.
      on_epoch_end: called as ``on_epoch_end(epoch, record)`` after the epoch's log
        record, features and checkpoint are written.

    Returns:
      ``TrainResult``.

    Raises:
      ConfigError / DataError / WorkdirError: invalid config or data, or an unusable
        workdir.
      TrainingDivergedError: the loss became NaN/inf or exploded, or the features
        collapsed to a constant (see ``diverged.json``). Nothing of that epoch is
        written; the checkpoints of earlier epochs stay.
    """
    workdir = Path(workdir)
    engine = build_engine(config, data, devices, epoch_mode, mesh_shape=mesh_shape)
    callback = None if on_epoch_end is None else (
        lambda epoch, records: on_epoch_end(epoch, records[0]))
    [point] = train_stack([config], data, [workdir], engine=engine, overwrite=overwrite,
                          progress=progress, on_epoch_end=callback)
    if point.diverged:
        raise TrainingDivergedError(point.divergence["message"])
    return TrainResult(workdir=workdir, state=point.state, log=point.log,
                       resumed_from=point.resumed_from,
                       feature_files=[features_path(workdir, e) for e in config.save_features_at],
                       model=engine.model, mean=engine.mean, std=engine.std)
