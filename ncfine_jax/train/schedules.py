"""Learning-rate schedules as per-step multipliers of the peak learning rate.

A schedule here maps the optimizer step count (0-based: the update of step ``s`` uses
``factor(s)``) to a factor in [0, 1]; the learning rate is ``lr * factor(s)``. Keeping the
peak ``lr`` out of the schedule lets it live in the optimizer state as data (see
``state.make_optimizer``), so states with different learning rates can be stacked and
vmapped with one compiled step.
"""

from __future__ import annotations

import math

import optax

from ncfine_jax.errors import ConfigError

# Step decay: x0.1 after 3/7 and 5/7 of training (epochs 150 and 250 of 350, as the paper).
STEP_MILESTONES = (3 / 7, 5 / 7)
STEP_DECAY = 0.1


def step_milestone_epochs(epochs: int) -> tuple[int, int]:
    """Epochs (0-based, i.e. completed epochs) after which the step schedule decays.

    ``round(epochs * 3/7)`` and ``round(epochs * 5/7)``: (150, 250) for 350 epochs, so
    epochs 1..150 (1-based) use lr, 151..250 use 0.1 lr, 251..350 use 0.01 lr, as
    PyTorch ``MultiStepLR(milestones=[150, 250])`` stepped once per epoch. At least 1:
    the first epoch always uses the full lr (PyTorch never applies a milestone 0).
    """
    return tuple(max(1, int(round(epochs * m))) for m in STEP_MILESTONES)  # type: ignore[return-value]


def make_schedule(name: str, epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """Per-step learning-rate factor.

    Args:
      name: "constant", "step" or "cosine".
      epochs: number of training epochs.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      ``factor(step) -> float`` (jit-compatible, step an int scalar, 0-based).
      "cosine" is ``0.5 (1 + cos(pi s / S))`` with S = epochs * steps_per_epoch total
      steps, decaying per step (PyTorch's ``CosineAnnealingLR`` steps per epoch; per
      step is smoother and ends at the same point).
    """
    total = epochs * steps_per_epoch
    if name == "constant":
        return optax.constant_schedule(1.0)
    if name == "step":
        b1, b2 = step_milestone_epochs(epochs)
        # piecewise_constant_schedule applies a scale from step == boundary on.
        scales: dict[int, float] = {}
        for b in (b1, b2):
            scales[b * steps_per_epoch] = scales.get(b * steps_per_epoch, 1.0) * STEP_DECAY
        return optax.piecewise_constant_schedule(1.0, scales)
    if name == "cosine":
        return optax.cosine_decay_schedule(1.0, decay_steps=max(total, 1), alpha=0.0)
    raise ConfigError(f"train config: schedule={name!r} must be one of constant, step, cosine")


def lr_at_epoch(name: str, lr: float, epochs: int, steps_per_epoch: int, epoch: int) -> float:
    """Learning rate of the first step of ``epoch`` (1-based), as logged in log.jsonl.

    Computed in float64 on the host (the device applies the same factor in float32).
    """
    step = (epoch - 1) * steps_per_epoch
    if name == "constant":
        factor = 1.0
    elif name == "step":
        factor = STEP_DECAY ** sum(step >= b * steps_per_epoch
                                   for b in step_milestone_epochs(epochs))
    elif name == "cosine":
        total = max(epochs * steps_per_epoch, 1)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    else:
        raise ConfigError(f"train config: schedule={name!r} must be one of constant, step, cosine")
    return float(lr) * factor
