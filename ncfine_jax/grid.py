"""Train a whole lr x weight-decay grid as one program: k models vmapped over hyperparameters.

The paper's evidence is a 3 x 3 grid (lr in {0.1, 0.01, 0.001} x wd in {5e-3, 5e-4, 5e-5},
plus a wd = 0 column). Its runs differ only in ``lr`` and ``weight_decay``, which the
engine keeps as data in ``state.opt_state.hyperparams`` (``optax.inject_hyperparams``).
So the k training states are stacked on a leading axis and one compiled epoch
``jax.vmap``s the engine's train step over them; every model sees the same batches and
augmentation (the batch and its augmentation key are not vmapped, so they are computed
once), BatchNorm statistics are per model (part of each state).

Grid point i equals a single run (``ncfine_jax.train.train``) with the same config, lr_i,
wd_i and seed, up to float summation order: same initialisation (one seed for every
point), same shuffles, same augmentation keys.

Layers:
  * ``train_grid(configs, data, workdirs)``: the training library. Each grid point gets
    its own workdir in the engine's format (config.json, log.jsonl, checkpoints/,
    features/), so every analysis works unchanged and a killed grid resumes from the
    points' checkpoints. A point whose loss becomes NaN/inf is frozen (a per-model
    "alive" mask inside the scan) and marked diverged (``diverged.json`` in its workdir);
    the others go on. ``vectorize=False`` trains the points one after the other with the
    normal engine instead.
  * ``run_grid(configs, workdir)``: the experiment layer behind ``experiments/grid.py``:
    sub-workdirs ``DIR/lr<lr>_wd<wd>/`` with the experiment header, training, per-point
    analysis (``analyze_run``), ``DIR/summary.json`` and the grid figures.
  * ``estimate_model_memory`` / ``plan_chunks``: per-model memory footprint and the split
    of the grid into chunks that fit the device.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ncfine_jax import io
from ncfine_jax.errors import ConfigError
from ncfine_jax.train import (Checkpointer, TrainConfig, TrainData, TrainingDivergedError,
                              TrainState, apply_model, batch_and_key, build_engine,
                              create_train_state, epoch_batches, features_path, lr_at_epoch,
                              make_eval_fn, replicated, save_features, train,
                              with_hyperparams)
# The engine's workdir handling, reused so that a grid point's workdir is exactly a single
# run's (same config.json, same refusal of a different run, same log truncation on resume).
from ncfine_jax.train.loop import (divergence_message, prepare_run_workdir, quiet_cpu_donation,
                                   truncate_log)

DIVERGED_FILE = "diverged.json"
GRID_FILE = "grid.json"
SUMMARY_FILE = "summary.json"
# Fields a grid's points may differ in (all injected hyperparameters of the optimizer).
HYPERPARAMETER_FIELDS = ("lr", "weight_decay", "momentum")
MODES = ("vectorize", "sequential")
# Default training path ("auto") per (backend, backbone), from benchmarks/grid_bench.py
# (README has the table). On this project's 2-core CPU, 4 vmapped models ran the MLP about
# 3x faster than 4 sequential runs (per-step dispatch dominates tiny matmuls), but
# ResNet-18 about 3x slower (XLA:CPU lowers the per-model convolution weights to grouped
# convolutions, which it runs slowly). GPU/TPU: not measured yet, so the engine's proven
# sequential path stays the default there until grid_bench.py shows vmapping wins.
VECTORIZE_BY_DEFAULT = {("cpu", "mlp")}
# Fraction of the free device (or host, on CPU) memory a chunk may plan to use.
MEMORY_FRACTION = 0.7


def point_name(lr: float, weight_decay: float) -> str:
    """Sub-workdir name of a grid point, ``lr<lr>_wd<wd>`` (``%g`` formatting).

    E.g. ``point_name(0.1, 5e-4) == "lr0.1_wd0.0005"``, ``point_name(0.001, 5e-5) ==
    "lr0.001_wd5e-05"``; the same names as the single-run default workdirs.
    """
    return f"lr{lr:g}_wd{weight_decay:g}"


def default_mode(backend: str | None = None, arch: str | None = None) -> str:
    """"vectorize" or "sequential": the default training path for ``arch`` on ``backend``
    (default: ``jax.default_backend()``); see ``VECTORIZE_BY_DEFAULT``."""
    backend = backend or jax.default_backend()
    return "vectorize" if (backend, arch) in VECTORIZE_BY_DEFAULT else "sequential"


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class GridPointResult:
    """What ``train_grid`` returns per grid point.

    Attributes:
      config: the point's TrainConfig.
      workdir: its run directory (engine layout).
      log: its log.jsonl records (epochs 1..last good epoch).
      diverged: True when its loss became NaN/inf (it stopped updating there).
      divergence: the content of its ``diverged.json`` (epoch, step, ...) or None.
      resumed_from: completed epoch it restarted from in this call (0 = fresh start).
      state: final TrainState (None for diverged points).
    """

    config: TrainConfig
    workdir: Path
    log: list[dict]
    diverged: bool
    divergence: dict | None
    resumed_from: int
    state: TrainState | None


# ----------------------------------------------------------------------------- memory


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Rough per-model device memory of grid training, in bytes (per device).

    Attributes:
      state_bytes: params + BatchNorm statistics + optimizer state of one model.
      train_bytes: training step: two copies of the state (scan carry in and out),
        gradients and updates (2 x params), plus the forward activations kept for the
        backward pass (every intermediate of the forward jaxpr at the training batch,
        split over the data devices; an overestimate, since XLA fuses elementwise ops).
      eval_bytes: evaluation: the [n_train + n_test, d] feature and logit outputs plus
        the largest intermediate of the forward at the eval batch (x 3 for in/out/temp).
      per_model_bytes: state_bytes + max(train_bytes, eval_bytes) - the state counted
        once more is the stacked state living across training and evaluation.
    """

    state_bytes: int
    train_bytes: int
    eval_bytes: int
    per_model_bytes: int


def _tree_bytes(tree: Any) -> int:
    return int(sum(np.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def _sub_jaxprs(eqn) -> list:
    subs = []
    for value in eqn.params.values():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(v, "eqns"):
                subs.append(v)
            elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                subs.append(v.jaxpr)
    return subs


def _jaxpr_bytes(jaxpr, reduce: Callable[[int, int], int]) -> int:
    """Sum (reduce=add) or max (reduce=max) over all equation outputs' bytes, recursing
    into sub-jaxprs (pjit, custom_jvp, ...) instead of counting the call's outputs."""
    total = 0
    for eqn in jaxpr.eqns:
        subs = _sub_jaxprs(eqn)
        if subs:
            total = reduce(total, max(_jaxpr_bytes(s, reduce) for s in subs))
            continue
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if aval is not None and hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total = reduce(total, int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize)
    return total


def estimate_model_memory(engine, num_train: int, num_test: int) -> MemoryEstimate:
    """Estimate one model's footprint in grid training from its jaxprs (no compilation).

    Args:
      engine: ``build_engine`` result (model, config, input shape, mesh are read).
      num_train, num_test: samples whose features are extracted at once.

    Returns:
      ``MemoryEstimate`` (bytes per device).
    """
    config = engine.config
    num_devices = max(1, engine.mesh.devices.size)
    state = jax.eval_shape(lambda: create_train_state(config, engine.model, engine.input_shape,
                                                      engine.tx))
    state_bytes = _tree_bytes(state)
    param_bytes = _tree_bytes(state.params)

    def forward(params, batch_stats, x, train):
        return apply_model(engine.model, params, batch_stats, x, train)

    def x_spec(batch):
        return jax.ShapeDtypeStruct((batch, *engine.input_shape), config.compute_dtype)

    train_jaxpr = jax.make_jaxpr(lambda p, s, x: forward(p, s, x, True))(
        state.params, state.batch_stats, x_spec(config.batch_size))
    activations = _jaxpr_bytes(train_jaxpr.jaxpr, lambda a, b: a + b) // num_devices
    train_bytes = 2 * state_bytes + 2 * param_bytes + activations

    eval_jaxpr = jax.make_jaxpr(lambda p, s, x: forward(p, s, x, False))(
        state.params, state.batch_stats, x_spec(config.eval_batch_size))
    peak = _jaxpr_bytes(eval_jaxpr.jaxpr, max) // num_devices
    logits, features, _ = jax.eval_shape(lambda p, s, x: forward(p, s, x, False),
                                         state.params, state.batch_stats, x_spec(1))
    out_row = 4 * (int(features.shape[-1]) + int(logits.shape[-1]))
    eval_bytes = 3 * peak + out_row * (num_train + num_test)
    return MemoryEstimate(state_bytes, train_bytes, eval_bytes,
                          state_bytes + max(train_bytes, eval_bytes))


def available_memory(device: jax.Device | None = None) -> int | None:
    """Free bytes on ``device`` (accelerator allocator stats), or the host's available
    memory (``/proc/meminfo`` MemAvailable) for CPU devices; None when unknown."""
    device = device or jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends do not implement it
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


def plan_chunks(num_points: int, per_model_bytes: int, available_bytes: int | None,
                chunk_size: int | None = None,
                memory_fraction: float = MEMORY_FRACTION) -> list[int]:
    """Split ``num_points`` models into chunks trained together.

    Args:
      num_points: models to train.
      per_model_bytes: ``MemoryEstimate.per_model_bytes``.
      available_bytes: free device memory (None = unknown: one chunk).
      chunk_size: force at most this many models per chunk (>= 1).
      memory_fraction: share of ``available_bytes`` a chunk may use.

    Returns:
      Chunk sizes summing to ``num_points``, balanced (they differ by at most one, so
      at most two shapes are compiled), each <= the size that fits.
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
    fit = min(fit, num_points)
    num_chunks = -(-num_points // fit)
    base, extra = divmod(num_points, num_chunks)
    return [base + 1] * extra + [base] * (num_chunks - extra)


# ----------------------------------------------------------------------------- compiled functions


def make_grid_step(train_step: Callable) -> Callable:
    """Build ``grid_step(states, alive, batch, rng) -> (states, alive, metrics)``.

    The engine's ``train_step`` vmapped over the k stacked states only: ``batch`` and
    ``rng`` are shared, so the augmentation runs once for all k models. A model whose loss
    is NaN/inf at this step is frozen: its state keeps the value before the step
    (``jnp.where`` on the per-model mask) and its ``alive`` entry turns False.

    Args:
      train_step: the engine's pure ``train_step(state, batch, rng)``.

    Returns:
      ``grid_step``: ``states`` a TrainState with a leading [k] axis, ``alive`` [k] bool;
      ``metrics`` ``loss``, ``accuracy``, ``lr`` of shape [k].
    """
    vstep = jax.vmap(train_step, in_axes=(0, None, None))

    def grid_step(states, alive, batch, rng):
        new_states, metrics = vstep(states, batch, rng)
        ok = alive & jnp.isfinite(metrics["loss"])

        def keep(new, old):
            return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)

        return jax.tree.map(keep, new_states, states), ok, metrics

    return grid_step


def _shared_batch_step(grid_step, states, alive, x_train, y_train, idx, run_key, step):
    return grid_step(states, alive, *batch_and_key(x_train, y_train, idx, run_key, step))


def make_grid_epoch_fn(train_step: Callable, steps_per_epoch: int, batch_size: int) -> Callable:
    """Build ``run_epoch(states, alive, run_key, epoch_index, x_train, y_train)`` (one scan).

    The same epoch as ``ncfine_jax.train.make_epoch_fn`` for k stacked states: the
    permutation comes from ``fold_in(shuffle_key, epoch_index)`` and step s's augmentation
    key is ``fold_in(aug_key, s)`` with s = epoch_index * steps_per_epoch + i, exactly the
    keys of a single run with this ``run_key`` (every grid point shares its seed). Steps
    are ``make_grid_step``'s (shared batch, NaN freezes a model).

    Args:
      train_step: the engine's pure ``train_step(state, batch, rng)``.
      steps_per_epoch: ``n // batch_size``.
      batch_size: global batch size.

    Returns:
      ``run_epoch`` where ``states`` is a TrainState with a leading [k] axis, ``alive``
      [k] bool, ``run_key`` the (shared) run key of one state, ``epoch_index`` int32
      scalar (0-based); returns ``(states, alive, metrics)`` with metrics ``loss``,
      ``accuracy``, ``lr`` of shape [steps_per_epoch, k].
    """
    grid_step = make_grid_step(train_step)

    def run_epoch(states, alive, run_key, epoch_index, x_train, y_train):
        batches = epoch_batches(run_key, epoch_index, x_train.shape[0], steps_per_epoch,
                                batch_size)
        first_step = epoch_index * steps_per_epoch

        def body(carry, inputs):
            i, idx = inputs
            states, alive, metrics = _shared_batch_step(grid_step, *carry, x_train, y_train,
                                                        idx, run_key, first_step + i)
            return (states, alive), metrics

        steps = jnp.arange(steps_per_epoch, dtype=jnp.int32)
        (states, alive), metrics = jax.lax.scan(body, (states, alive), (steps, batches))
        return states, alive, metrics

    return run_epoch


def make_grid_epoch_runner(train_step: Callable, steps_per_epoch: int, batch_size: int, *,
                           mode: str, out_sharding: Any = None) -> Callable:
    """Jitted grid epoch with the signature and results of ``make_grid_epoch_fn``.

    ``mode`` as the engine's ``make_epoch_runner``: "scan" (one jitted ``lax.scan`` per
    epoch, states donated) or "loop" (a Python loop over one jitted, donated vmapped step,
    same batches and keys; the engine's CPU default, since XLA:CPU runs convolutions
    inside loops far slower).
    """
    if mode == "scan":
        return jax.jit(make_grid_epoch_fn(train_step, steps_per_epoch, batch_size),
                       donate_argnums=0, out_shardings=out_sharding)
    if mode != "loop":
        raise ConfigError(f"epoch mode must be 'scan' or 'loop', got {mode!r}")
    grid_step = make_grid_step(train_step)
    batches_fn = jax.jit(lambda key, epoch, n: epoch_batches(key, epoch, n, steps_per_epoch,
                                                             batch_size),
                         static_argnums=2, out_shardings=out_sharding)
    step_fn = jax.jit(lambda states, alive, x, y, batches, i, key, step: _shared_batch_step(
        grid_step, states, alive, x, y, batches[i], key, step),
        donate_argnums=0, out_shardings=out_sharding)

    def run_epoch(states, alive, run_key, epoch_index, x_train, y_train):
        if out_sharding is not None:
            # As step_fn returns it: a host-made mask would compile the step a second time.
            alive = jax.device_put(alive, out_sharding)
        batches = batches_fn(run_key, epoch_index, x_train.shape[0])
        first_step = int(epoch_index) * steps_per_epoch
        metrics = []
        for i in range(steps_per_epoch):
            states, alive, m = step_fn(states, alive, x_train, y_train, batches,
                                       jnp.int32(i), run_key, jnp.int32(first_step + i))
            metrics.append(m)
        return states, alive, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

    return run_epoch


@dataclasses.dataclass
class GridEngine:
    """The engine of one grid: a single-run ``Engine`` plus the vmapped compiled functions."""

    engine: Any            # ncfine_jax.train.Engine (model, tx, data on device, ...)
    run_epoch: Callable    # (states, alive, run_key, epoch_index, x, y) -> (states, alive, m)
    evaluate: Callable     # jitted: (params [k..], batch_stats [k..], x) -> ([k,n,C], [k,n,d])
    init_state: TrainState  # fresh single state of the shared seed (replicated on the mesh)


def build_grid_engine(config: TrainConfig, data: TrainData,
                      devices: Sequence[jax.Device] | None = None,
                      epoch_mode: str | None = None) -> GridEngine:
    """Build the engine for ``config`` (any grid point: they share everything but the
    injected hyperparameters) and jit the vmapped epoch and evaluation.

    ``epoch_mode``: "scan", "loop" or None = the engine's default for the backend
    ("loop" on CPU), so that grid and single runs drive their epochs the same way.
    """
    engine = build_engine(config, data, devices, epoch_mode=epoch_mode)
    repl = replicated(engine.mesh)
    run_epoch = make_grid_epoch_runner(engine.train_step, engine.steps_per_epoch,
                                       config.batch_size, mode=engine.epoch_mode,
                                       out_sharding=repl)
    evaluate = jax.jit(jax.vmap(make_eval_fn(engine.model, engine.mean, engine.std,
                                             config.eval_batch_size,
                                             compute_dtype=config.compute_dtype,
                                             mesh=engine.mesh),
                                in_axes=(0, 0, None)),
                       out_shardings=repl)
    return GridEngine(engine, run_epoch, evaluate, engine.init_state())


# ----------------------------------------------------------------------------- training


def _check_grid_configs(configs: Sequence[TrainConfig], workdirs: Sequence[Path]) -> None:
    if not configs:
        raise ConfigError("grid: needs at least one grid point")
    if len(workdirs) != len(configs):
        raise ConfigError(f"grid: {len(configs)} configs but {len(workdirs)} workdirs")
    resolved = [Path(w).resolve() for w in workdirs]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("grid: two grid points share a workdir (duplicate lr/wd values?)")
    for c in configs:
        c.validate()
    ref = {k: v for k, v in configs[0].result_fields().items() if k not in HYPERPARAMETER_FIELDS}
    for c in configs[1:]:
        other = {k: v for k, v in c.result_fields().items() if k not in HYPERPARAMETER_FIELDS}
        diff = sorted(k for k in ref if ref[k] != other.get(k))
        if diff:
            raise ConfigError(f"grid: points may differ only in {', '.join(HYPERPARAMETER_FIELDS)}"
                              f"; they also differ in {', '.join(diff)}")


def read_divergence(workdir: str | Path) -> dict | None:
    """Content of ``workdir/diverged.json`` (the point diverged), or None."""
    path = Path(workdir) / DIVERGED_FILE
    return io.read_json(path) if path.exists() else None


def train_grid(configs: Sequence[TrainConfig], data: TrainData,
               workdirs: Sequence[str | Path], *, vectorize: bool | None = None,
               chunk_size: int | None = None, overwrite: bool = False,
               devices: Sequence[jax.Device] | None = None, progress: bool = True,
               memory_fraction: float = MEMORY_FRACTION) -> list[GridPointResult]:
    """Train (or resume) every grid point; each writes its own engine-format workdir.

    Args:
      configs: one TrainConfig per grid point; they may differ only in lr, weight_decay
        and momentum (same seed => same init, shuffles and augmentation for all).
      data: the shared training data.
      workdirs: one run directory per point (``workdirs[i]`` holds point i).
      vectorize: True = stack the models and vmap them (in chunks); False = one engine
        run after the other; None = ``default_mode()`` of the backend and backbone.
      chunk_size: vectorized: at most this many models at once (default: as many as the
        memory estimate says fit).
      overwrite: restart every point from scratch (deletes the engine's files and
        ``diverged.json`` in the workdirs, nothing else).
      devices: devices of the data mesh (default all).
      progress: tqdm bar over epochs per chunk (per point when sequential).
      memory_fraction: share of the free memory a chunk may plan to use.

    Returns:
      One ``GridPointResult`` per point, in the order of ``configs``.

    Raises:
      ConfigError / DataError: invalid configs or data, or a workdir holding another run
        (checked for all points before anything is trained).

    The vectorized path runs in one process (data-parallel over its local devices);
    multi-host grids are untested.
    """
    workdirs = [Path(w) for w in workdirs]
    configs = list(configs)
    _check_grid_configs(configs, workdirs)
    data.validate()
    if vectorize is None:
        vectorize = default_mode(arch=configs[0].arch) == "vectorize"
    if not vectorize:
        return _train_sequential(configs, data, workdirs, overwrite, devices, progress)
    grid = build_grid_engine(configs[0], data, devices)
    engine = grid.engine
    fingerprint = data.fingerprint()
    writer = jax.process_index() == 0
    # Validate every workdir first (read-only), then write: a bad one changes nothing.
    for cfg, wd in zip(configs, workdirs):
        if not overwrite:
            prepare_run_workdir(wd, cfg, fingerprint, engine.steps_per_epoch,
                             engine.mesh.devices.size, False, writer=False)
    for cfg, wd in zip(configs, workdirs):
        wd.mkdir(parents=True, exist_ok=True)
        # With overwrite this also deletes diverged.json (one of loop.ENGINE_FILES).
        prepare_run_workdir(wd, cfg, fingerprint, engine.steps_per_epoch,
                         engine.mesh.devices.size, overwrite, writer)

    results: list[GridPointResult | None] = [None] * len(configs)
    active = []
    for i, (cfg, wd) in enumerate(zip(configs, workdirs)):
        divergence = read_divergence(wd)
        if divergence is not None:
            results[i] = GridPointResult(cfg, wd, truncate_log(wd / "log.jsonl", 10**9, False),
                                         True, divergence, 0, None)
        else:
            active.append(i)
    free = available_memory(engine.mesh.devices.flat[0])
    try:
        per_model = estimate_model_memory(engine, len(data.x_train),
                                          len(data.x_test)).per_model_bytes
    except Exception as e:  # noqa: BLE001 - the estimate reads jaxpr internals
        # A rough estimate must not stop training; without it the grid is one chunk.
        warnings.warn(f"grid: memory estimate failed ({type(e).__name__}: {e}); training "
                      "all points in one chunk (use chunk_size / --chunk-size to split)")
        per_model, free = 1, None
    sizes = plan_chunks(len(active), per_model, free, chunk_size, memory_fraction)
    if progress and writer and active:
        mib = 2.0**20
        tqdm.write(f"grid: {len(active)} model(s) to train vmapped in chunks of {sizes} "
                   f"(estimated {per_model / mib:.1f} MiB per model; "
                   f"{'unknown' if free is None else f'{free / mib:.0f} MiB'} free)")
    start = 0
    with quiet_cpu_donation():
        for size in sizes:
            chunk = active[start:start + size]
            start += size
            for i, result in zip(chunk, _train_chunk(grid, data, [configs[i] for i in chunk],
                                                     [workdirs[i] for i in chunk], progress,
                                                     writer)):
                results[i] = result
    return results  # type: ignore[return-value]


def _train_sequential(configs, data, workdirs, overwrite, devices, progress):
    # Validate every workdir before training any point (the engine checks one at a time).
    fingerprint = data.fingerprint()
    n = len(data.x_train)
    for cfg, wd in zip(configs, workdirs):
        if not overwrite:
            prepare_run_workdir(wd, cfg, fingerprint, n // cfg.batch_size, 1, False, writer=False)
    results = []
    for cfg, wd in zip(configs, workdirs):
        if overwrite and (wd / DIVERGED_FILE).exists():
            (wd / DIVERGED_FILE).unlink()
        divergence = read_divergence(wd)
        if divergence is None:
            try:
                out = train(cfg, data, wd, overwrite=overwrite, devices=devices,
                            progress=progress)
                results.append(GridPointResult(cfg, wd, out.log, False, None,
                                               out.resumed_from, out.state))
                continue
            except TrainingDivergedError as e:
                log = truncate_log(wd / "log.jsonl", 10**9, False)
                divergence = {"epoch": (log[-1]["epoch"] if log else 0) + 1,
                              "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                              "message": " ".join(str(e).split())}
                io.atomic_write_json(wd / DIVERGED_FILE, divergence)
        log = truncate_log(wd / "log.jsonl", 10**9, False)
        results.append(GridPointResult(cfg, wd, log, True, divergence, 0, None))
    return results


def _stack(states: Sequence[TrainState]) -> TrainState:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _unstack(states: TrainState, i: int) -> TrainState:
    return jax.tree.map(lambda a: a[i], states)


def _resume_epoch(ckpts: Sequence[Checkpointer], epochs: int) -> int:
    """Latest epoch at which every point of a chunk has a checkpoint (0 = start)."""
    steps = [set(c.epochs()) for c in ckpts]
    common = set.intersection(*steps) if steps else set()
    return max([e for e in common if e <= epochs] + [0])


def _train_chunk(grid: GridEngine, data: TrainData, configs: list[TrainConfig],
                 workdirs: list[Path], progress: bool, writer: bool) -> list[GridPointResult]:
    engine = grid.engine
    config = configs[0]
    k = len(configs)
    ckpts = [Checkpointer(wd / "checkpoints", max_to_keep=cfg.keep_checkpoints)
             for cfg, wd in zip(configs, workdirs)]
    try:
        start = _resume_epoch(ckpts, config.epochs)
        templates = [with_hyperparams(grid.init_state, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      momentum=cfg.momentum) for cfg in configs]
        states = []
        for ckpt, template in zip(ckpts, templates):
            # A kill between two points' saves leaves some points one checkpoint ahead:
            # all resume from the common epoch; later checkpoints would be rewritten.
            ckpt.delete_after(start)
            states.append(ckpt.restore(start, template) if start else template)
        # Restored and fresh leaves may sit on different devices (with_hyperparams' new
        # scalars are on device 0): stack eagerly, then replicate (single process).
        stacked = jax.device_put(_stack(states), replicated(engine.mesh))
        del states
        logs = [truncate_log(wd / "log.jsonl", start, writer) for wd in workdirs]
        offsets = [log[-1]["wall_time_s"] if log else 0.0 for log in logs]
        alive = np.ones(k, bool)
        divergences: list[dict | None] = [None] * k
        test_labels = np.asarray(data.test_labels)

        def write_features(epoch: int, stacked: TrainState, test_f=None) -> None:
            _, train_f = grid.evaluate(stacked.params, stacked.batch_stats, engine.x_train)
            if test_f is None:
                _, test_f = grid.evaluate(stacked.params, stacked.batch_stats, engine.x_test)
            if not writer:
                return
            train_f, test_f = np.asarray(train_f), np.asarray(test_f)
            for j in np.flatnonzero(alive):
                save_features(features_path(workdirs[j], epoch), epoch, train_f[j],
                              data.train_labels, data.train_classes, test_f[j],
                              data.test_labels, data.test_classes)

        if start == 0 and 0 in config.save_features_at:
            write_features(0, stacked)
        run_key = grid.init_state.key
        t0 = time.perf_counter()
        names = ", ".join(wd.name for wd in workdirs)
        bar = tqdm(range(start + 1, config.epochs + 1), initial=start, total=config.epochs,
                   disable=not (progress and writer), unit="epoch",
                   desc=f"{config.arch} x{k} [{names}]"[:80])
        for epoch in bar:
            t_epoch = time.perf_counter()
            stacked, alive_dev, metrics = grid.run_epoch(
                stacked, jnp.asarray(alive), run_key, jnp.asarray(epoch - 1, jnp.int32),
                engine.x_train, engine.y_train)
            losses = np.asarray(metrics["loss"], np.float64)        # [steps, k]
            accuracies = np.asarray(metrics["accuracy"], np.float64)
            now_alive = np.asarray(alive_dev)
            for j in np.flatnonzero(alive & ~now_alive):
                bad_step = int(np.argmin(np.isfinite(losses[:, j]))) + 1
                good = ckpts[j].latest_epoch()
                divergences[j] = {
                    "epoch": epoch, "step": bad_step, "lr": configs[j].lr,
                    "weight_decay": configs[j].weight_decay, "last_good_checkpoint": good,
                    "message": divergence_message(
                        losses[bad_step - 1, j], epoch, bad_step, engine.steps_per_epoch,
                        configs[j].lr, configs[j].weight_decay, good),
                }
                if writer:
                    io.atomic_write_json(workdirs[j] / DIVERGED_FILE, divergences[j])
            alive = now_alive
            if not alive.any():
                break
            logits, test_f = grid.evaluate(stacked.params, stacked.batch_stats, engine.x_test)
            test_acc = np.mean(np.argmax(np.asarray(logits), -1) == test_labels[None], axis=1)
            now = time.perf_counter()
            for j in np.flatnonzero(alive):
                record = {
                    "epoch": epoch,
                    "loss": float(losses[:, j].mean()),
                    "train_accuracy": float(accuracies[:, j].mean()),
                    "test_accuracy": float(test_acc[j]),
                    "lr": lr_at_epoch(config.schedule, configs[j].lr, config.epochs,
                                      engine.steps_per_epoch, epoch),
                    # Wall times of the whole chunk: its k models train together.
                    "wall_time_s": round(offsets[j] + now - t0, 3),
                    "epoch_time_s": round(now - t_epoch, 3),
                }
                if writer:
                    io.append_jsonl(workdirs[j] / "log.jsonl", record)
                logs[j].append(record)
            if epoch in config.save_features_at:
                write_features(epoch, stacked, test_f)
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                for j in np.flatnonzero(alive):
                    ckpts[j].save(epoch, _unstack(stacked, j))
            bar.set_postfix(alive=f"{int(alive.sum())}/{k}",
                            loss=f"{np.nanmean(losses[:, alive].mean(0)):.3f}")
        bar.close()
        return [GridPointResult(configs[j], workdirs[j], logs[j], divergences[j] is not None,
                                divergences[j], start,
                                None if divergences[j] is not None else _unstack(stacked, j))
                for j in range(k)]
    finally:
        for ckpt in ckpts:
            ckpt.close()


# ----------------------------------------------------------------------------- experiment layer


def _grid_record(configs: Sequence[Any]) -> dict:
    """What identifies a grid in ``DIR/grid.json``: the shared experiment config (lr and
    weight_decay removed) and the points."""
    base = {k: v for k, v in configs[0].training_fields().items()
            if k not in ("lr", "weight_decay")}
    return {"experiment": base,
            "points": [{"lr": c.lr, "wd": c.weight_decay,
                        "workdir": point_name(c.lr, c.weight_decay)} for c in configs]}


def check_grid_workdir(workdir: Path, configs: Sequence[Any], overwrite: bool) -> None:
    """Read-only check that ``workdir`` may take this grid (raises ConfigError)."""
    from ncfine_jax.experiment import check_workdir

    record = workdir / GRID_FILE
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
    if record.exists():
        if io.read_json(record) != _grid_record(configs) and not overwrite:
            raise ConfigError(f"--workdir {workdir}: holds a different grid ({GRID_FILE} differs:"
                              " other experiment flags or lr/wd values); use --overwrite to "
                              "replace it or pick another workdir")
    elif workdir.exists() and any(workdir.iterdir()) and not overwrite:
        raise ConfigError(f"--workdir {workdir}: not empty and holds no {GRID_FILE}; use "
                          "--overwrite to replace it or pick another workdir")
    if not overwrite:
        for c in configs:
            check_workdir(workdir / point_name(c.lr, c.weight_decay), c, False)


def run_grid(configs: Sequence[Any], workdir: str | Path, *, mode: str = "auto",
             chunk_size: int | None = None, data_dir: str | None = None,
             ot_workdir: str | None = None, overwrite: bool = False, progress: bool = True,
             heatmap_epochs: Sequence[int] | None = None) -> dict:
    """Train (or resume) an experiment grid, analyse every point, write summary and figures.

    Args:
      configs: one ``ncfine_jax.experiment.ExperimentConfig`` per grid point (the same
        but for lr and weight_decay).
      workdir: grid directory DIR; point (lr, wd) lives in ``DIR/lr<lr>_wd<wd>/``, a
        complete single-run workdir (experiment.json, label_mapping.json, engine files,
        results.json, report.md, figures/).
      mode: "vectorize", "sequential" or "auto" (``default_mode()`` of the backbone).
      chunk_size: vectorized: at most this many models at once.
      data_dir: where dataset archives are looked for.
      ot_workdir: original-label run for the OT bars of every point's report.
      overwrite: replace a workdir holding another grid and restart every point.
      progress: tqdm bars.
      heatmap_epochs: epochs of the grid heatmap figures (default: every saved epoch).

    Returns:
      The ``summary.json`` content.

    Raises:
      ConfigError / DataError: bad input, before anything in ``workdir`` changes.
    """
    from ncfine_jax.experiment import prepare_data, train_config, write_workdir_header

    workdir = Path(workdir)
    configs = list(configs)
    if mode not in MODES + ("auto",):
        raise ConfigError(f"mode={mode!r}: must be one of {', '.join(MODES)}, auto")
    mode = default_mode(arch=configs[0].arch) if mode == "auto" and configs else mode
    if mode == "sequential" and chunk_size is not None:
        raise ConfigError("--chunk-size: only applies to the vectorized mode")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"--chunk-size {chunk_size}: must be >= 1")
    if not configs:
        raise ConfigError("grid: needs at least one (lr, wd) point")
    names = [point_name(c.lr, c.weight_decay) for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("--lr/--wd: duplicate grid points (" +
                          ", ".join(sorted({n for n in names if names.count(n) > 1})) + ")")
    if ot_workdir is not None and not (Path(ot_workdir) / "log.jsonl").exists():
        raise ConfigError(f"--ot-workdir {ot_workdir}: holds no log.jsonl of a finished run")
    check_grid_workdir(workdir, configs, overwrite)
    prepared = prepare_data(configs[0], data_dir)
    tconfigs = [train_config(c, prepared.dataset.is_image) for c in configs]
    subdirs = [workdir / n for n in names]

    # All input checked: from here on the workdir changes.
    if overwrite and workdir.exists():
        shutil.rmtree(workdir)  # --overwrite starts the whole grid afresh
    workdir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(workdir / GRID_FILE, _grid_record(configs))
    for c, sub in zip(configs, subdirs):
        write_workdir_header(sub, c, prepared.mapping, overwrite)
    t0 = time.perf_counter()
    results = train_grid(tconfigs, prepared.train_data, subdirs,
                         vectorize=(mode == "vectorize"), chunk_size=chunk_size,
                         overwrite=overwrite, progress=progress)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    class_names = list(prepared.dataset.class_names)
    for c, r in zip(configs, results):
        if not r.diverged:
            _analyze_point(r.workdir, c, ot_workdir, class_names, overwrite)
    analysis_s = time.perf_counter() - t0
    summary = write_summary(workdir, configs, mode=mode, chunk_size=chunk_size,
                            timings={"train_s": round(train_s, 2),
                                     "analysis_s": round(analysis_s, 2)})
    figures = write_grid_figures(workdir, configs, class_names, heatmap_epochs)
    summary["figures"] = [str(p.relative_to(workdir)) for p in figures]
    io.atomic_write_json(workdir / SUMMARY_FILE, summary)
    return summary


def _analyze_point(sub: Path, config, ot_workdir, class_names, overwrite: bool) -> dict:
    """``analyze_run`` on one point, reusing a results.json of the same finished run."""
    from ncfine_jax.analysis import analyze_run

    results_path = sub / "results.json"
    if results_path.exists() and not overwrite:
        old = io.read_json(results_path)
        analysis = old.get("analysis") or {}
        ot = None if ot_workdir is None else str(ot_workdir)
        if (analysis.get("epochs_trained") == config.epochs and analysis.get("ot_workdir") == ot
                and analysis.get("reduce") in (config.clp_reduce, None)
                and old.get("experiment") == config.to_dict()):
            return old
    return analyze_run(sub, ot_workdir=ot_workdir, reduce=config.clp_reduce,
                       seed=config.seed, max_tsne_points=config.clp_max_tsne_points,
                       class_names=class_names)


def _metric_at(results: dict, key: str, epoch: int | None):
    values = results.get(key) or {}
    if epoch is None:
        return None
    return values.get(str(epoch), values.get(epoch))


def write_summary(workdir: str | Path, configs: Sequence[Any], **extra) -> dict:
    """Write ``DIR/summary.json`` from the points' results.json / diverged.json.

    One record per grid point: lr, wd, workdir, diverged (bool), diverged_epoch,
    clp_accuracy, lpo_accuracy, final_train_accuracy, final_test_accuracy, and nc1, nc2
    at ``epoch`` (the last saved features epoch); None where not available.
    """
    workdir = Path(workdir)
    points = []
    for c in configs:
        sub = workdir / point_name(c.lr, c.weight_decay)
        divergence = read_divergence(sub)
        results = {}
        if divergence is None and (sub / "results.json").exists():
            results = io.read_json(sub / "results.json")
        epoch = (results.get("analysis") or {}).get("epoch")
        points.append({
            "lr": c.lr, "wd": c.weight_decay, "workdir": sub.name,
            "diverged": divergence is not None,
            "diverged_epoch": None if divergence is None else divergence.get("epoch"),
            "clp_accuracy": results.get("clp_accuracy"),
            "lpo_accuracy": results.get("lpo_accuracy"),
            "final_train_accuracy": results.get("final_train_accuracy"),
            "final_test_accuracy": results.get("final_test_accuracy"),
            "epoch": epoch,
            "nc1": _metric_at(results, "nc1", epoch),
            "nc2": _metric_at(results, "nc2", epoch),
        })
    summary = {"experiment": configs[0].experiment, "points": points, **extra}
    io.atomic_write_json(workdir / SUMMARY_FILE, summary)
    return summary


def write_grid_figures(workdir: str | Path, configs: Sequence[Any],
                       class_names: Sequence[str] | None = None,
                       heatmap_epochs: Sequence[int] | None = None) -> list[Path]:
    """Grid figures in ``DIR/figures/`` from the analysed sub-workdirs.

    ``analysis.report.grid_figures`` draws ``grid_distance_heatmaps.png`` (D per
    configuration at the last epoch every point saved; rows lr, columns wd; Figs. 24-27)
    and ``grid_clp_lpo.png`` (CLP / LPO bars per configuration, Fig. 31). In addition
    ``grid_heatmaps_epoch_XXXX.png`` shows D at each epoch of ``heatmap_epochs``
    (default: every epoch some point saved), as the paper's per-epoch panels.
    """
    from ncfine_jax.analysis import figures as figs
    from ncfine_jax.analysis.report import DISTANCE_FILE, grid_figures, load_distance_matrices
    from ncfine_jax.labels import LabelMapping

    workdir = Path(workdir)
    subs = [workdir / point_name(c.lr, c.weight_decay) for c in configs]
    diverged = [read_divergence(sub) is not None for sub in subs]
    mapping = LabelMapping.load(subs[0] / "label_mapping.json")
    # "fine" D matrices are over the 2C fine labels: the class names do not fit their ticks.
    names = None if mapping.kind == "fine" else class_names
    title = configs[0].experiment
    points = [{"lr": c.lr, "wd": c.weight_decay, "workdir": str(sub), "diverged": d}
              for c, sub, d in zip(configs, subs, diverged)]
    written = list(grid_figures(points, workdir, class_names=names, title=title))
    mats = [load_distance_matrices(sub) if not d and (sub / DISTANCE_FILE).exists() else None
            for sub, d in zip(subs, diverged)]
    saved = set().union(*[set(m[0]) for m in mats if m is not None])
    for epoch in sorted(saved if heatmap_epochs is None else set(heatmap_epochs)):
        runs = [{"lr": c.lr, "wd": c.weight_decay, "diverged": d,
                 "distance_matrix": None if m is None else m[0].get(epoch),
                 "superclass_of_class": None if m is None else m[1]}
                for c, d, m in zip(configs, diverged, mats)]
        if any(r["distance_matrix"] is not None for r in runs):
            written.append(figs.plot_grid_heatmaps(
                runs, workdir / "figures" / f"grid_heatmaps_epoch_{epoch:04d}.png", epoch=epoch,
                class_names=names, title=f"{title}: class-distance matrices D"))
    return written


# ----------------------------------------------------------------------------- command line

PAPER_LRS = (0.1, 0.01, 0.001)
PAPER_WDS = (5e-3, 5e-4, 5e-5)


def build_grid_parser(spec) -> Any:
    """``grid.py EXPERIMENT`` parser: the shared experiment flags with ``spec``'s defaults,
    ``--lr``/``--wd`` taking several values, and the grid's own flags."""
    from ncfine_jax.cli import ArgumentParser
    from ncfine_jax.experiment import EXPERIMENTS, add_experiment_flags

    parser = ArgumentParser(
        prog="grid.py", conflict_handler="resolve",
        description="Train the lr x wd grid of one experiment (one sub-workdir per point), "
                    "then write DIR/summary.json and the grid figures.")
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS),
                        help="experiment script to run the grid of (must come first)")
    add_experiment_flags(parser, spec)
    a = parser.add_argument
    a("--lr", type=float, nargs="+", default=list(PAPER_LRS),
      help="learning rates of the grid (paper: 0.1 0.01 0.001)")
    a("--wd", type=float, nargs="+", default=list(PAPER_WDS),
      help="weight decays of the grid (paper: 5e-3 5e-4 5e-5; App. A adds 0)")
    a("--workdir", required=True, help="grid directory; point (lr, wd) goes to DIR/lr<lr>_wd<wd>/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--vectorize", dest="mode", action="store_const", const="vectorize",
                      help="train the models stacked and vmapped (chunked to fit memory)")
    mode.add_argument("--sequential", dest="mode", action="store_const", const="sequential",
                      help="one normal single run per grid point, one after the other")
    parser.set_defaults(mode="auto")
    a("--chunk-size", type=int, default=None,
      help="vectorized: at most K models at once (default: as many as fit in memory)")
    a("--heatmap-epochs", type=int, nargs="+", default=None, metavar="EPOCH",
      help="epochs of the grid heatmap figures (default: every saved epoch)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """``experiments/grid.py`` (wrapped by ``cli.run_main``); returns the summary."""
    import sys

    from ncfine_jax.experiment import EXPERIMENTS, config_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXPERIMENTS:
        spec = EXPERIMENTS[argv[0]]
    elif argv and argv[0] in ("-h", "--help"):
        spec = EXPERIMENTS["coarse_cifar10"]
    else:
        got = repr(argv[0]) if argv else "nothing"
        raise ConfigError(f"EXPERIMENT: the first argument must name an experiment "
                          f"({', '.join(sorted(EXPERIMENTS))}); got {got}")
    args = build_grid_parser(spec).parse_args(argv)
    configs = []
    for lr in args.lr:
        for wd in args.wd:
            ns = type(args)(**{**vars(args), "lr": lr, "wd": wd})
            configs.append(config_from_args(spec, ns))
    summary = run_grid(configs, args.workdir, mode=args.mode, chunk_size=args.chunk_size,
                       data_dir=args.data_dir, ot_workdir=args.ot_workdir,
                       overwrite=args.overwrite, progress=not args.no_progress,
                       heatmap_epochs=args.heatmap_epochs)
    print(summary_table(summary))
    print(f"{args.workdir}: {len(configs)} grid points -> {Path(args.workdir) / SUMMARY_FILE}")
    return summary


def summary_table(summary: dict) -> str:
    """Markdown table of ``summary.json`` (one row per grid point)."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    rows = ["| lr | wd | diverged | train acc | test acc | CLP | LPO | NC1 | NC2 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in summary["points"]:
        rows.append(f"| {p['lr']:g} | {p['wd']:g} | {'yes' if p['diverged'] else 'no'} | "
                    f"{fmt(p['final_train_accuracy'])} | {fmt(p['final_test_accuracy'])} | "
                    f"{fmt(p['clp_accuracy'])} | {fmt(p['lpo_accuracy'])} | {fmt(p['nc1'])} | "
                    f"{fmt(p['nc2'])} |")
    return "\n".join(rows)


__all__ = [
    "GridEngine", "GridPointResult", "MemoryEstimate", "VECTORIZE_BY_DEFAULT",
    "available_memory", "build_grid_engine", "check_grid_workdir", "default_mode",
    "estimate_model_memory", "main", "make_grid_epoch_fn", "make_grid_epoch_runner",
    "make_grid_step", "plan_chunks", "point_name", "read_divergence", "run_grid",
    "summary_table", "train_grid", "write_grid_figures", "write_summary",
]
