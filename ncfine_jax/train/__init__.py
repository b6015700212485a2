"""Training engine: one trainer for a stack of k >= 1 models (a single run is k = 1).

Entry points: ``train(TrainConfig(...), TrainData(...), workdir) -> TrainResult`` (one
run) and ``train_grid(configs, data, workdirs)`` (runs that differ only in lr / weight
decay / momentum, vmapped in chunks or one after the other). Both drive
``loop.train_stack``. Building blocks: ``make_optimizer``, ``create_train_state``,
``make_train_step``, ``make_stack_step``, ``make_epoch_fn``, ``make_eval_fn``,
``build_engine``.

Modules: config (TrainConfig), data (TrainData), state (TrainState, optimizer),
schedules, augment, sharding (the ("models", "data") mesh), step (pure steps, epoch
drivers, evaluation), engine (compiled functions + device data), checkpoint (orbax),
features (features/epoch_XXXX.npz), loop (train_stack, train), grid (train_grid,
memory-based chunking).
"""

from ncfine_jax.train.augment import normalize, random_crop_flip
from ncfine_jax.train.checkpoint import Checkpointer
from ncfine_jax.train.config import TrainConfig
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.engine import Engine, build_engine, hyperparams_of
from ncfine_jax.train.features import features_path, save_features
from ncfine_jax.train.grid import (MODES, MemoryEstimate, ModeTiming, available_memory,
                                   choose_mode, estimate_model_memory, faster_mode,
                                   plan_chunks, time_modes, train_grid)
from ncfine_jax.train.loop import (PointResult, TrainResult, git_commit, read_divergence,
                                   train, train_stack)
from ncfine_jax.train.schedules import lr_at_epoch, make_schedule, step_milestone_epochs
from ncfine_jax.train.sharding import (DATA_AXIS, MODELS_AXIS, batch_sharding,
                                       default_mesh_shape, make_mesh, parse_mesh,
                                       replicated, stacked)
from ncfine_jax.train.state import (TrainingDivergedError, TrainState, create_train_state,
                                    current_lr, make_optimizer, with_hyperparams)
from ncfine_jax.train.step import (apply_model, batch_and_key, epoch_batches, make_epoch_fn,
                                   make_epoch_runner, make_eval_fn, make_stack_step,
                                   make_train_step, run_keys)

__all__ = [
    "Checkpointer", "DATA_AXIS", "Engine", "MODELS_AXIS", "MODES", "MemoryEstimate",
    "PointResult", "TrainConfig", "TrainData", "TrainResult", "TrainState",
    "TrainingDivergedError", "apply_model", "available_memory",
    "batch_and_key", "batch_sharding", "build_engine", "create_train_state", "current_lr",
    "default_mesh_shape", "choose_mode", "faster_mode", "time_modes", "ModeTiming", "epoch_batches", "estimate_model_memory",
    "features_path", "git_commit", "hyperparams_of", "lr_at_epoch", "make_epoch_fn",
    "make_epoch_runner", "make_eval_fn", "make_mesh", "make_optimizer", "make_schedule",
    "make_stack_step", "make_train_step", "normalize", "parse_mesh", "plan_chunks",
    "random_crop_flip", "read_divergence", "replicated", "run_keys", "save_features",
    "stacked", "step_milestone_epochs", "train", "train_grid", "train_stack",
    "with_hyperparams",
]
