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

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "augment": ["normalize", "random_crop_flip"],
    "checkpoint": ["Checkpointer"],
    "config": ["TrainConfig"],
    "data": ["TrainData"],
    "engine": ["Engine", "build_engine", "hyperparams_of"],
    "features": ["features_path", "save_features"],
    "layout": ["MODES", "check_mesh_shape", "default_mesh_shape", "parse_mesh"],
    "grid": [
        "MemoryEstimate", "ModeTiming", "available_memory", "choose_mode",
        "estimate_model_memory", "faster_mode", "plan_chunks", "time_modes", "train_grid",
    ],
    "loop": [
        "PointResult", "TrainResult", "git_commit", "read_divergence", "train",
        "train_stack",
    ],
    "schedules": ["lr_at_epoch", "make_schedule", "step_milestone_epochs"],
    "sharding": [
        "DATA_AXIS", "MODELS_AXIS", "batch_sharding", "make_mesh", "replicated", "stacked",
    ],
    "state": [
        "TrainingDivergedError", "TrainState", "create_train_state", "current_lr",
        "make_optimizer", "with_hyperparams",
    ],
    "step": [
        "apply_model", "batch_and_key", "epoch_batches", "make_epoch_fn",
        "make_epoch_runner", "make_eval_fn", "make_stack_step", "make_train_step",
        "run_keys",
    ],
})
