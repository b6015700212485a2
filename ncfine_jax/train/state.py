"""Training state and optimizer.

The optimizer is PyTorch's ``SGD(lr, momentum, weight_decay)`` (the paper's code is
PyTorch): **coupled** L2 weight decay ``g <- g + wd * p`` on every parameter (BatchNorm
scales/biases and biases included, as ``model.parameters()`` in PyTorch), then heavy-ball
momentum ``m <- mu m + g`` (dampening 0, first step ``m = g``), then ``p <- p - lr_t m``.
``lr_t = lr * factor(t)`` with the schedule factor of ``schedules.make_schedule``.

``lr``, ``weight_decay`` and ``momentum`` are injected hyperparameters
(``optax.inject_hyperparams``): they are float32 scalars inside
``state.opt_state.hyperparams``, not compile-time constants, so one compiled step serves
any values and states with different values can be stacked and vmapped (a grid).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncfine_jax.errors import NcfineError
from ncfine_jax.train.config import TrainConfig
from ncfine_jax.train.schedules import make_schedule


class TrainingDivergedError(NcfineError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; checkpointed as a whole).

    Attributes:
      params: model parameters (float32).
      batch_stats: BatchNorm running statistics (empty dict for models without BN).
      opt_state: optax state; ``opt_state.hyperparams`` holds ``learning_rate``,
        ``weight_decay``, ``momentum`` (injected) and ``lr_factor`` (the schedule factor
        used by the last update).
      step: int32 scalar, optimizer steps done.
      key: uint32 [2] raw PRNG key of the run (shuffling and augmentation derive from it
        by ``fold_in``; it never changes).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def _sgd(learning_rate, weight_decay, momentum, lr_factor) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=False),
        optax.scale(-learning_rate * lr_factor),
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with coupled weight decay and momentum; see the module docstring.

    Args:
      config: lr, weight_decay, momentum, schedule and epochs are read.
      steps_per_epoch: optimizer steps per epoch (sets the schedule boundaries).
    """
    factor = make_schedule(config.schedule, config.epochs, steps_per_epoch)
    # The schedule is a callable hyperparameter: inject_hyperparams evaluates it at its own
    # step count and stores the value in opt_state.hyperparams["lr_factor"].
    return optax.inject_hyperparams(_sgd, hyperparam_dtype=jnp.float32)(
        learning_rate=float(config.lr), weight_decay=float(config.weight_decay),
        momentum=float(config.momentum), lr_factor=factor)


def init_variables(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...],
                   dtype=jnp.float32) -> tuple[Any, Any]:
    """Initialise (params, batch_stats) from a [1, *input_shape] dummy input."""
    variables = model.init(key, jnp.zeros((1, *input_shape), dtype), train=False)
    variables = flax.core.unfreeze(variables) if isinstance(variables, flax.core.FrozenDict) \
        else dict(variables)
    return variables["params"], variables.get("batch_stats", {})


def create_train_state(config: TrainConfig, model: nn.Module, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
    """Fresh state for ``config.seed``: PyTorch-style initialised params, step 0.

    Args:
      config: seed is read.
      model: the backbone.
      input_shape: shape of one input sample, e.g. (32, 32, 3) or (d,).
      tx: the optimizer from ``make_optimizer``.
    """
    root = jax.random.PRNGKey(config.seed)
    init_key, run_key = jax.random.split(root)
    params, batch_stats = init_variables(model, init_key, input_shape)
    state = TrainState(params=params, batch_stats=batch_stats, opt_state=tx.init(params),
                       step=jnp.zeros((), jnp.int32), key=run_key)
    # The values baked into ``tx`` are only defaults: the state carries config's own.
    return with_hyperparams(state, lr=config.lr, weight_decay=config.weight_decay,
                            momentum=config.momentum)


def with_hyperparams(state: TrainState, *, lr: float | None = None,
                     weight_decay: float | None = None,
                     momentum: float | None = None) -> TrainState:
    """Copy of ``state`` whose optimizer uses other hyperparameters from now on.

    The optimizer reads ``learning_rate``, ``weight_decay`` and ``momentum`` from
    ``state.opt_state.hyperparams`` at every step, so this is all a grid trainer needs to
    give each of a stack of states its own values (one compiled step for all).
    """
    hp = dict(state.opt_state.hyperparams)
    for name, value in (("learning_rate", lr), ("weight_decay", weight_decay),
                        ("momentum", momentum)):
        if value is not None:
            # Host scalars: they join device arrays of any mesh (or process) when stacked.
            hp[name] = np.asarray(value, np.float32)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


def current_lr(state: TrainState) -> jax.Array:
    """Learning rate used by the last update (lr * schedule factor)."""
    hp = state.opt_state.hyperparams
    return hp["learning_rate"] * hp["lr_factor"]
