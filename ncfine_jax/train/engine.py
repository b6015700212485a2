"""``build_engine``: model, optimizer, mesh, compiled stack functions and device data.

One engine serves every trainer: a single run is a stack of k = 1 models, a grid chunk a
stack of k models that differ only in their injected hyperparameters (lr, weight decay,
momentum live in ``state.opt_state.hyperparams`` as data, so one compiled step serves
them all). The compiled functions take stacks of any size divisible by the mesh's
"models" axis (XLA compiles once per stack size).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError
from ncfine_jax.models import get_model
from ncfine_jax.train.config import TrainConfig, eval_interval
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.layout import check_mesh_shape, default_mesh_shape
from ncfine_jax.train.preflight import preflight
from ncfine_jax.train.sharding import (make_mesh, put_replicated, replicated, shape_of_mesh,
                                       stacked, to_host)
from ncfine_jax.train.state import TrainState, create_train_state, make_optimizer, \
    with_hyperparams
from ncfine_jax.train.step import (EPOCH_MODES, feature_spread, make_epoch_runner,
                                   make_eval_fn, make_stack_eval, make_stack_step,
                                   make_train_step)

# A mean batch loss above this many times log(num_labels) (the loss of a uniform guess)
# counts as diverged even while finite: the logits have blown up.
EXPLODED_LOSS_FACTOR = 100.0


@dataclasses.dataclass
class Engine:
    """Model, compiled functions and device data of one (config, data, mesh) triple.

    Attributes:
      config: the shared configuration (its lr / weight decay / momentum are only the
        defaults of ``init_state``; each stacked model carries its own).
      model, tx: the Flax module and the optax optimizer.
      mesh: ("models", "data") mesh.
      steps_per_epoch: ``n_train // batch_size``.
      mean, std: input normalisation, float32 [c] or [d].
      train_step: the pure, unjitted single-model step.
      run_epoch: jitted ``(states, alive, run_key, epoch_index, x, y) -> (states, alive,
        metrics)`` over a stack (see ``step.make_epoch_fn``), states donated.
      evaluate: jitted ``(params [k..], batch_stats [k..], x) -> (logits [k, n, C],
        features [k, n, d])``.
      spread: jitted ``features [k, n, d] -> [k]`` (``step.feature_spread``).
      x_train, y_train, x_test: device arrays (replicated).
      input_shape: shape of one input sample.
      epoch_mode: "scan" or "loop".
      max_loss: a model whose batch loss exceeds this is frozen as diverged.
      eval_every: epochs between two test evaluations (``config.eval_every`` resolved
        by ``config.eval_interval``).
    """

    config: TrainConfig
    model: Any
    tx: Any
    mesh: Any
    steps_per_epoch: int
    mean: np.ndarray
    std: np.ndarray
    train_step: Callable
    run_epoch: Callable
    evaluate: Callable
    spread: Callable
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    input_shape: tuple[int, ...]
    epoch_mode: str
    max_loss: float
    eval_every: int

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def mesh_shape(self) -> tuple[int, int]:
        return shape_of_mesh(self.mesh)

    def init_state(self) -> TrainState:
        """Fresh replicated single-model state for ``config.seed``."""
        # One compiled program (eagerly, the initialisers dispatch ~100 one-op programs).
        state = jax.jit(lambda: create_train_state(self.config, self.model, self.input_shape,
                                                   self.tx))()
        return put_replicated(jax.tree.map(np.asarray, state), self.mesh)

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        """Stack single-model states on a leading axis split over "models"."""
        check_mesh_shape(self.mesh_shape, len(states), self.num_devices)
        return _stack_fn(stacked(self.mesh))(*states)

    def unstack(self, states: TrainState, i: int) -> TrainState:
        """Model ``i`` of a stack, replicated on the mesh (collective in multi-process)."""
        return _take_fn(replicated(self.mesh), i)(states)

    def init_stack(self, configs: Sequence[TrainConfig]) -> TrainState:
        """Fresh stack: the same initialisation (shared seed) with each config's
        injected hyperparameters."""
        base = self.init_state()
        return self.stack([hyperparams_of(base, c) for c in configs])

    def epoch(self, state: TrainState) -> tuple[TrainState, dict]:
        """One epoch of a single state (a stack of one): ``(state, metrics [steps])``."""
        epoch_index = int(to_host(state.step)) // self.steps_per_epoch
        states, _, metrics = self.run_epoch(self.stack([state]), self.alive(1), state.key,
                                            np.int32(epoch_index), self.x_train, self.y_train)
        return self.unstack(states, 0), jax.tree.map(lambda m: m[:, 0], metrics)

    def evaluates_at(self, epoch: int) -> bool:
        """Whether the test set is evaluated after (1-based) ``epoch``: every
        ``eval_every`` epochs, at the last epoch and where features are saved."""
        return (epoch % self.eval_every == 0 or epoch == self.config.epochs
                or epoch in self.config.save_features_at)

    def compile_training(self, states: TrainState, alive: jax.Array, run_key: jax.Array) -> None:
        """Compile the training program (the epoch's ``lax.scan``, or the one step of the
        "loop" mode) before the first epoch, so that epoch times, and a progress bar's
        estimate, are training alone. Lowers from the arguments; nothing is computed."""
        step_fn = getattr(self.run_epoch, "step_fn", None)
        if step_fn is None:
            self.run_epoch.lower(states, alive, run_key, np.int32(0), self.x_train,
                                 self.y_train).compile()
            return
        batches = self.run_epoch.batches_fn(run_key, np.int32(0), self.x_train.shape[0])
        step_fn.lower(states, alive, self.x_train, self.y_train, batches, jnp.int32(0),
                      run_key, jnp.int32(0)).compile()

    def compile_evaluation(self, states: TrainState, train_set: bool) -> None:
        """Compile ``evaluate`` (and ``spread``) for this stack on the test set, and on the
        training set when features will be saved, before training starts: no program is
        compiled in the middle of a run. Lowers from shapes; nothing is computed."""
        compiled = self.evaluate.lower(states.params, states.batch_stats, self.x_test).compile()
        _, features = compiled.out_info
        self.spread.lower(features).compile()
        if train_set:
            self.evaluate.lower(states.params, states.batch_stats, self.x_train).compile()

    def alive(self, k: int) -> jax.Array:
        """An all-True [k] mask placed as the runner returns it (no recompilation)."""
        return put_replicated(np.ones(k, bool), self.mesh)


@functools.lru_cache(maxsize=None)
def _stack_fn(sharding) -> Callable:
    return jax.jit(lambda *states: jax.tree.map(lambda *xs: jnp.stack(xs), *states),
                   out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _take_one(sharding) -> Callable:
    return jax.jit(lambda states, i: jax.tree.map(
        lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), states),
        out_shardings=sharding)


def _take_fn(sharding, i: int) -> Callable:
    return lambda states: _take_one(sharding)(states, np.int32(i))


def hyperparams_of(state: TrainState, config: TrainConfig) -> TrainState:
    """``state`` with ``config``'s lr, weight decay and momentum injected."""
    return with_hyperparams(state, lr=config.lr, weight_decay=config.weight_decay,
                            momentum=config.momentum)


@contextlib.contextmanager
def quiet_cpu_donation():
    # CPU backends cannot reuse donated buffers and warn on every call; donation is for GPU.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
        yield


def build_engine(config: TrainConfig, data: TrainData,
                 devices: Sequence[jax.Device] | None = None,
                 epoch_mode: str | None = None, *, num_models: int = 1,
                 mesh_shape: tuple[int, int] | None = None) -> Engine:
    """Validate, build the model and optimizer, jit the stack functions, put the data on
    the devices.

    Args:
      config: any model of the stack (they differ only in injected hyperparameters).
      data: arrays and labels.
      devices: mesh devices (default ``jax.devices()``: every device of every process).
      epoch_mode: "scan", "loop" or None = "loop" on CPU, "scan" elsewhere.
      num_models: stack size the mesh is laid out for (``default_mesh_shape``).
      mesh_shape: (M, D) overriding the default layout.

    Raises:
      ConfigError / DataError: an invalid config, data or layout (one line).
    """
    config.validate()
    data.validate()
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape or default_mesh_shape(num_models, len(devices))
    check_mesh_shape(shape, num_models, len(devices))
    mesh = make_mesh(devices, shape)
    n = len(data.x_train)
    config = preflight(config, n, data.is_image, shape[1])
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
    max_loss = EXPLODED_LOSS_FACTOR * math.log(max(data.num_labels, 2))
    if epoch_mode is None:
        epoch_mode = "loop" if mesh.devices.flat[0].platform == "cpu" else "scan"
    if epoch_mode not in EPOCH_MODES:
        raise ConfigError(f"epoch_mode={epoch_mode!r}: must be 'scan', 'loop' or None")
    repl = replicated(mesh)
    run_epoch = make_epoch_runner(make_stack_step(train_step, max_loss), steps_per_epoch,
                                  config.batch_size, mode=epoch_mode,
                                  state_sharding=stacked(mesh), replicated_sharding=repl)
    evaluate = jax.jit(make_stack_eval(make_eval_fn(
        model, mean, std, config.eval_batch_size, compute_dtype=compute_dtype, mesh=mesh)),
        out_shardings=stacked(mesh))
    spread = jax.jit(feature_spread, out_shardings=repl)
    x_train, y_train, x_test = put_replicated(
        (data.x_train, np.asarray(data.train_labels, np.int32), data.x_test), mesh)
    eval_every = eval_interval(config.eval_every, len(data.x_test),
                               steps_per_epoch * config.batch_size)
    return Engine(config, model, tx, mesh, steps_per_epoch, mean, std, train_step, run_epoch,
                  evaluate, spread, x_train, y_train, x_test,
                  tuple(np.shape(data.x_train)[1:]), epoch_mode, max_loss, eval_every)
