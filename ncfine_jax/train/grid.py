"""Train a grid of runs that differ only in lr / weight decay / momentum: ``train_grid``.

The grid is the trainer's stack (``loop.train_stack``) in chunks: ``vectorize=True`` trains
each chunk of k models as one stack (vmapped, one compiled program, every model on the
same batches and augmentation keys, split over the mesh's "models" axis), ``False`` trains
the points one after the other as stacks of one, i.e. exactly as single runs (bit for bit:
the same compiled functions). Chunks are sized from XLA's own memory analysis of the
compiled step and evaluation (``estimate_model_memory``) or by an explicit ``chunk_size``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from ncfine_jax.train.progress import tqdm

from ncfine_jax.errors import ConfigError
from ncfine_jax.train.config import TrainConfig
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.engine import Engine, build_engine, hyperparams_of, quiet_cpu_donation
from ncfine_jax.train.loop import PointResult, check_stack_configs, train_stack
from ncfine_jax.train.resume import check_engine_workdir
from ncfine_jax.distributed import barrier, gather, is_writer
from ncfine_jax.train.layout import MODES, default_mesh_shape
from ncfine_jax.train.state import create_train_state
from ncfine_jax.train.step import make_stack_step

# Steps of the epoch ``time_modes`` times per mode (after one such epoch that compiles).
TIMED_STEPS = 5
# Fraction of the free device (or host, on CPU) memory a chunk may plan to use.
MEMORY_FRACTION = 0.7


@dataclasses.dataclass(frozen=True)
class ModeTiming:
    """A few training steps of one grid mode, timed on the devices at hand.

    Attributes:
      mode: "vectorize" (a stack of ``models`` vmapped) or "sequential" (a stack of one).
      models: models trained by each timed step.
      compile_s: seconds of the first step (compilation and warm-up), excluded below.
      step_s: mean seconds of one later step.
      batch_size: samples per model per step.
    """

    mode: str
    models: int
    compile_s: float
    step_s: float
    batch_size: int

    @property
    def images_per_s_per_model(self) -> float:
        """Training throughput each model of the grid gets, in samples per second."""
        return self.models * self.batch_size / self.step_s


def time_modes(configs: Sequence[TrainConfig], data: TrainData, chunk: int,
               devices: Sequence[jax.Device] | None = None,
               steps: int = TIMED_STEPS) -> list[ModeTiming]:
    """Time the engine's own training epoch, cut to ``steps`` steps, for a vectorized
    chunk of ``chunk`` models and for one model alone (the sequential mode).

    Each mode is compiled, then runs the epoch twice on the first ``steps`` batches of the
    training set: compilation and the first call (warm-up) are timed apart, the second
    call is the measurement; both block on their results.
    """
    import time

    n = min(len(data.x_train), steps * configs[0].batch_size)
    cut = dataclasses.replace(data, x_train=data.x_train[:n], train_labels=data.train_labels[:n],
                              train_classes=data.train_classes[:n])
    timings = []
    for mode, size in (("vectorize", chunk), ("sequential", 1)):
        engine = build_engine(configs[0], cut, devices, num_models=size)
        base = engine.init_state()
        states = engine.stack([hyperparams_of(base, c) for c in configs[:size]])
        seconds = []
        with quiet_cpu_donation():
            # Compiled first, and together into the first step (the processes' compile times
            # differ; the wait is not timed).
            t0 = time.perf_counter()
            engine.compile_training(states, engine.alive(size), base.key)
            compile_s = time.perf_counter() - t0
            barrier("timing compiled")
            for epoch in range(2):
                t0 = time.perf_counter()
                states, _, metrics = engine.run_epoch(states, engine.alive(size), base.key,
                                                      np.int32(epoch), engine.x_train,
                                                      engine.y_train)
                jax.block_until_ready(metrics)
                seconds.append(time.perf_counter() - t0)
        timings.append(ModeTiming(mode, size, compile_s + seconds[0],
                                  seconds[1] / engine.steps_per_epoch,
                                  configs[0].batch_size))
    return timings


def faster_mode(timings: Sequence[ModeTiming]) -> str:
    """The mode giving each model the most samples per second (ties: sequential, which
    trains every point exactly as a single run)."""
    best = max(timings, key=lambda t: (t.images_per_s_per_model, t.mode == "sequential"))
    return best.mode


def choose_mode(configs: Sequence[TrainConfig], data: TrainData,
                devices: Sequence[jax.Device] | None = None, *, chunk_size: int | None = None,
                mesh_shape: tuple[int, int] | None = None,
                memory_fraction: float = MEMORY_FRACTION, report: bool = True) -> str:
    """The grid mode of "auto": "vectorize" when a chunk size or a models axis > 1 asks
    for stacking, "sequential" for one point, else the faster on these devices
    (``time_modes`` on the first vectorized chunk; the timings are printed with
    ``report``). Every process of a multi-process run gets process 0's choice."""
    if chunk_size is not None or (mesh_shape is not None and mesh_shape[0] > 1):
        return "vectorize"
    if len(configs) == 1:
        return "sequential"
    devices = list(jax.devices() if devices is None else devices)
    configs = [c.resolved() for c in configs]
    chunk = _chunk_sizes(configs, data, devices, None, memory_fraction, 1)[0]
    timings = time_modes(configs, data, chunk, devices)
    mode = _same_on_every_process(faster_mode(timings))
    if report and is_writer():
        tqdm.write("grid mode auto (timed): " + "; ".join(
            f"{t.mode} x{t.models} {t.images_per_s_per_model:,.0f} img/s per model "
            f"(first step {t.compile_s:.1f} s)" for t in timings) + f" -> {mode}")
    return mode


def _same_on_every_process(mode: str) -> str:
    """Process 0's choice on every process (their own timings may disagree)."""
    return MODES[gather(MODES.index(mode), "grid mode")[0]]


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Per-model device memory of stacked training, in bytes per device.

    Attributes:
      state_bytes: params + BatchNorm statistics + optimizer state of one model.
      train_bytes: XLA's memory analysis of the compiled step of a one-model stack:
        arguments (state and batch) + outputs (new state, metrics) + temporaries
        (activations kept for the backward pass, gradients).
      eval_bytes: temporaries of the compiled evaluation of one eval batch plus the
        [n_train + n_test, d + C] float32 features and logits it returns.
      per_model_bytes: state_bytes + max(train_bytes, eval_bytes): the stacked state
        lives across training and evaluation.
    """

    state_bytes: int
    train_bytes: int
    eval_bytes: int
    per_model_bytes: int


def _tree_bytes(tree: Any) -> int:
    return int(sum(np.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def estimate_model_memory(engine: Engine, num_train: int, num_test: int) -> MemoryEstimate:
    """One model's footprint in stacked training, from XLA's ``memory_analysis()`` of the
    compiled step and evaluation (compiles both once for a one-model stack).

    Args:
      engine: ``build_engine`` result.
      num_train, num_test: samples whose features one evaluation returns.
    """
    config = engine.config
    state = jax.eval_shape(lambda: create_train_state(config, engine.model, engine.input_shape,
                                                      engine.tx))
    one = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1, *s.shape), s.dtype), state)
    batch = {"inputs": jax.ShapeDtypeStruct((config.batch_size, *engine.input_shape),
                                            engine.x_train.dtype),
             "labels": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
    rng = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    step = jax.jit(make_stack_step(engine.train_step, engine.max_loss))
    train = step.lower(one, jax.ShapeDtypeStruct((1,), bool), batch,
                       rng).compile().memory_analysis()
    train_bytes = (train.argument_size_in_bytes + train.output_size_in_bytes
                   + train.temp_size_in_bytes)
    x_chunk = jax.ShapeDtypeStruct((config.eval_batch_size, *engine.input_shape),
                                   engine.x_test.dtype)
    evaluation = engine.evaluate.lower(one.params, one.batch_stats,
                                       x_chunk).compile().memory_analysis()
    logits, features = jax.eval_shape(engine.evaluate, one.params, one.batch_stats, x_chunk)
    out_row = 4 * (int(features.shape[-1]) + int(logits.shape[-1]))
    eval_bytes = evaluation.temp_size_in_bytes + out_row * (num_train + num_test)
    state_bytes = _tree_bytes(state)
    return MemoryEstimate(state_bytes, int(train_bytes), int(eval_bytes),
                          state_bytes + int(max(train_bytes, eval_bytes)))


def available_memory(device: jax.Device | None = None) -> int | None:
    """Free bytes on ``device`` (accelerator allocator stats), or the host's available
    memory (``/proc/meminfo`` MemAvailable) for CPU devices; None when unknown."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without allocator stats raise various errors
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _smallest_over_processes(free: int | None) -> int | None:
    """The least free memory of any process (every process must plan the same chunks)."""
    values = gather(-1 if free is None else free, "free memory")
    return None if min(values) < 0 else min(values)


def plan_chunks(num_points: int, per_model_bytes: int, available_bytes: int | None,
                chunk_size: int | None = None, memory_fraction: float = MEMORY_FRACTION,
                multiple: int = 1) -> list[int]:
    """Split ``num_points`` models into chunks trained together.

    Args:
      num_points: models to train (a multiple of ``multiple``).
      per_model_bytes: ``MemoryEstimate.per_model_bytes``.
      available_bytes: free device memory (None = unknown: one chunk).
      chunk_size: force at most this many models per chunk (>= 1).
      memory_fraction: share of ``available_bytes`` a chunk may use.
      multiple: every chunk size is a multiple of this (the mesh's "models" axis).

    Returns:
      Chunk sizes summing to ``num_points``, balanced (at most two distinct sizes, so at
      most two compiled shapes), each <= the size that fits (but >= ``multiple``).
    """
    if num_points <= 0:
        return []
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size={chunk_size!r}: must be an integer >= 1")
        fit = chunk_size
    elif available_bytes is None:
        fit = num_points
    else:
        fit = max(1, int(available_bytes * memory_fraction) // max(1, per_model_bytes))
    units, fit_units = num_points // multiple, max(1, min(fit, num_points) // multiple)
    num_chunks = -(-units // fit_units)
    base, extra = divmod(units, num_chunks)
    return [(base + 1) * multiple] * extra + [base * multiple] * (num_chunks - extra)


def _chunk_sizes(configs: Sequence[TrainConfig], data: TrainData, devices: list,
                 chunk_size: int | None, memory_fraction: float, multiple: int,
                 report: bool = False) -> list[int]:
    """Chunk sizes of a vectorized grid (``plan_chunks`` on the memory estimate)."""
    per_model, free = 1, None
    if chunk_size is None and len(configs) > multiple:
        probe = build_engine(configs[0], data, devices)
        per_model = estimate_model_memory(probe, len(data.x_train),
                                          len(data.x_test)).per_model_bytes
        free = _smallest_over_processes(available_memory(devices[0]))
    sizes = plan_chunks(len(configs), per_model, free, chunk_size, memory_fraction, multiple)
    if report:
        mib = 2.0**20
        tqdm.write(f"grid: {len(configs)} model(s) to train vmapped in chunks of {sizes}"
                   + ("" if free is None else f" (estimated {per_model / mib:.1f} MiB per "
                      f"model; {free / mib:.0f} MiB free)"))
    return sizes


def train_grid(configs: Sequence[TrainConfig], data: TrainData,
               workdirs: Sequence[str | Path], *, vectorize: bool | None = None,
               chunk_size: int | None = None, overwrite: bool = False,
               devices: Sequence[jax.Device] | None = None,
               mesh_shape: tuple[int, int] | None = None, progress: bool = True,
               memory_fraction: float = MEMORY_FRACTION) -> list[PointResult]:
    """Train (or resume) every grid point; each writes its own engine-format workdir.

    Args:
      configs: one TrainConfig per grid point; they may differ only in lr, weight_decay
        and momentum (same seed => same init, shuffles and augmentation for all).
      data: the shared training data.
      workdirs: one run directory per point.
      vectorize: True = stack the models (in chunks); False = one point after the other,
        each exactly a single run; None = the faster of the two on these devices, timed
        by ``time_modes`` on the first chunk (vectorized whenever ``chunk_size`` or a
        models axis > 1 asks for it; sequential for one point). The timings are printed.
      chunk_size: vectorized: at most this many models at once (default: as many as the
        memory estimate says fit).
      overwrite: restart every point from scratch (deletes the engine's files and
        ``diverged.json`` in the workdirs, nothing else).
      devices: mesh devices (default all devices of all processes).
      mesh_shape: (M, D) layout of every chunk; default ``default_mesh_shape`` of the
        chunk size (sequential: (1, D)). M must divide every chunk.
      progress: tqdm bars.
      memory_fraction: share of the free memory a chunk may plan to use.

    Returns:
      One ``PointResult`` per point, in the order of ``configs``.

    Raises:
      ConfigError / DataError / WorkdirError: invalid configs, data, layout, or a
        workdir holding another run (checked for all points before any training).
    """
    workdirs = [Path(w) for w in workdirs]
    configs = [c.resolved() for c in configs]  # as train_stack records them
    check_stack_configs(configs, workdirs)
    data.validate()
    devices = list(jax.devices() if devices is None else devices)
    fingerprint = data.fingerprint()
    for c, w in zip(configs, workdirs):
        check_engine_workdir(w, c, fingerprint, overwrite)
    multiple = mesh_shape[0] if mesh_shape else 1
    if vectorize is None:
        vectorize = choose_mode(configs, data, devices, chunk_size=chunk_size,
                                mesh_shape=mesh_shape, memory_fraction=memory_fraction,
                                report=progress) == "vectorize"
    if not vectorize:
        if multiple != 1:
            raise ConfigError(f"mesh_shape {tuple(mesh_shape)}: the sequential mode "
                              "trains one model at a time; use a models axis of 1")
        sizes = [1] * len(configs)
    elif len(configs) % multiple:
        raise ConfigError(f"mesh_shape {tuple(mesh_shape)}: {multiple} model rows do "
                          f"not divide the {len(configs)} grid points")
    else:
        sizes = _chunk_sizes(configs, data, devices, chunk_size, memory_fraction, multiple,
                             report=progress and is_writer())
    engines: dict[tuple[int, int], Engine] = {}
    results: list[PointResult] = []
    start = 0
    for size in sizes:
        shape = mesh_shape or default_mesh_shape(size, len(devices))
        if shape not in engines:
            engines[shape] = build_engine(configs[0], data, devices, num_models=size,
                                          mesh_shape=shape)
        results += train_stack(configs[start:start + size], data, workdirs[start:start + size],
                               engine=engines[shape], overwrite=overwrite, progress=progress)
        start += size
    return results
