"""Training engine: pure jitted data-parallel SGD with on-device data and orbax resume.

Entry point: ``train(TrainConfig(...), TrainData(...), workdir) -> TrainResult``.
Building blocks for other trainers (e.g. a vmapped grid): ``make_optimizer``,
``create_train_state``, ``make_train_step``, ``make_epoch_fn``, ``make_eval_fn``,
``build_engine``.
"""

from ncfine_jax.train.augment import normalize, random_crop_flip
from ncfine_jax.train.checkpoint import Checkpointer
from ncfine_jax.train.config import TrainConfig
from ncfine_jax.train.data import TrainData
from ncfine_jax.train.features import features_path, save_features
from ncfine_jax.train.loop import Engine, TrainResult, build_engine, git_commit, train
from ncfine_jax.train.schedules import lr_at_epoch, make_schedule, step_milestone_epochs
from ncfine_jax.train.sharding import DATA_AXIS, batch_sharding, make_mesh, replicated
from ncfine_jax.train.state import (TrainingDivergedError, TrainState, create_train_state,
                                    current_lr, make_optimizer, with_hyperparams)
from ncfine_jax.train.step import (apply_model, batch_and_key, epoch_batches, make_epoch_fn,
                                   make_epoch_runner, make_eval_fn, make_train_step, run_keys)

__all__ = [
    "apply_model", "batch_and_key", "Checkpointer", "DATA_AXIS", "Engine", "TrainConfig", "TrainData", "TrainResult",
    "TrainState", "TrainingDivergedError", "batch_sharding", "build_engine",
    "create_train_state", "current_lr", "epoch_batches", "features_path", "git_commit", "lr_at_epoch",
    "make_epoch_fn", "make_epoch_runner", "make_eval_fn", "make_mesh", "make_optimizer",
    "make_schedule",
    "make_train_step", "normalize", "random_crop_flip", "replicated", "run_keys",
    "save_features", "step_milestone_epochs", "train", "with_hyperparams",
]
