"""``TrainConfig``: every hyperparameter of one training run, validated, JSON round-trip."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ncfine_jax.errors import ConfigError
from ncfine_jax.models.registry import BACKBONES, width_help
from ncfine_jax.settings import (INT32_MAX, MAX_EPOCHS, MAX_WIDTH, SEED_MAX, from_record,
                                 int_or_auto, meta, range_problem, setting, to_record)

SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
# Backends on which "auto" means bf16 compute: their matrix units run bf16 at several
# times the float32 rate. XLA:CPU has no such units, so "auto" is fp32 there.
BF16_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


# "auto" test evaluation: as often as this fraction of the training compute allows.
EVAL_BUDGET = 0.03
# Compute of evaluating one image relative to one training image: a forward pass against
# forward + backward (XLA's cost analysis of ResNet-18 at 32x32: 0.97 vs 2.91 GFLOP per
# image; locked in tests/test_gpu_ready.py).
EVAL_COST_PER_IMAGE = 1 / 3


class FieldError(ConfigError):
    """An invalid value of one named config field (front ends re-word it with their flag)."""

    def __init__(self, section: str, field: str, value: Any, why: str):
        super().__init__(f"{section}: {field}={value!r} {why}")
        self.field, self.value, self.why = field, value, why


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Units and meaning per field.

    Attributes:
      arch: backbone name from ``ncfine_jax.models.BACKBONES`` ("resnet18", "mlp", ...).
      width: base width of the backbone (None = the model's default; small = tiny test
        model).
      model_kwargs: extra backbone options (e.g. ``{"depth": 3}`` for the MLP).
      lr: peak learning rate (per optimizer step of ``batch_size`` examples; not rescaled
        with the batch size or the number of devices), > 0.
      weight_decay: coupled L2 coefficient, added to the gradient of every parameter
        (``g + weight_decay * p``) before momentum, as PyTorch ``SGD(weight_decay=...)``.
      momentum: heavy-ball momentum (PyTorch SGD form, dampening 0, no Nesterov).
      epochs: number of passes over the training set.
      batch_size: global batch size (split over devices; must divide by their number).
      schedule: "constant"; "step" (x0.1 after 3/7 and 5/7 of the epochs, i.e. epochs
        150 and 250 of 350); "cosine" (per-step cosine decay from ``lr`` to 0).
      precision: "fp32", or "bf16" compute with float32 parameters and optimizer state,
        or "auto" = bf16 on a GPU/TPU backend, fp32 on CPU (``resolved()`` turns it into
        the concrete value that run records hold).
      seed: seed of initialisation, shuffling and augmentation.
      augment: pad-4 random crop + horizontal flip on images (must be False for
        feature-vector data).
      save_features_at: epochs (1-based; 0 = before training) whose penultimate
        features are written to ``features/epoch_XXXX.npz``.
      checkpoint_every: write an orbax checkpoint every this many epochs (and always at
        the end).
      keep_checkpoints: how many most recent checkpoints orbax keeps.
      eval_batch_size: batch size of evaluation / feature extraction (no effect on
        training; must divide by the number of devices).
      eval_every: evaluate the test set (``test_accuracy`` in log.jsonl, the collapse
        check) every this many epochs, and always at the last epoch and at the
        ``save_features_at`` epochs; "auto" = as often as ``EVAL_BUDGET`` of the
        training compute allows (``eval_interval``). Other epochs log
        ``test_accuracy: null``. No effect on training.
    """

    arch: str = setting("resnet18", flag="--arch", choices=tuple(BACKBONES), group="model",
                        help="backbone")
    width: int | None = setting(None, flag="--width", type=int, int_range=(1, MAX_WIDTH),
                                group="model", help=width_help(),
                                default_help="the paper's")
    model_kwargs: dict[str, Any] = setting(default_factory=dict, since=2, before={})
    lr: float = setting(0.1, flag="--lr", grid_axis=True, group="optimisation and schedule",
                        help="peak SGD learning rate per step (paper grid: 0.1, 0.01, 0.001)")
    weight_decay: float = setting(5e-4, flag="--wd", grid_axis=True,
                                  group="optimisation and schedule", help="weight decay: "
                                  "coupled L2 coefficient added to the gradient, as PyTorch "
                                  "SGD (paper: 5e-4)")
    momentum: float = setting(0.9, since=2, before=0.9)
    epochs: int = setting(350, flag="--epochs", int_range=(1, MAX_EPOCHS),
                          group="optimisation and schedule", help="training epochs, passes "
                          "over the training set (paper: 350)")
    batch_size: int = setting(128, flag="--batch-size", int_range=(1, INT32_MAX),
                              group="optimisation and schedule", help="global batch size in "
                              "samples, split over the devices of the data axis (paper: 128)")
    schedule: str = setting("step", flag="--schedule", choices=SCHEDULES,
                            group="optimisation and schedule", help="lr schedule; step = x0.1 "
                            "at 3/7 and 5/7 of training (epochs 150, 250 of 350)")
    precision: str = setting("auto", flag="--precision", choices=PRECISIONS, group="model",
                             help="compute precision (parameters stay float32); auto = bf16 "
                             "on a GPU/TPU, fp32 on CPU, recorded resolved")
    seed: int = setting(0, flag="--seed", int_range=(0, SEED_MAX),
                        group="optimisation and schedule", help="seed of initialisation, "
                        "shuffling, augmentation and random label transforms")
    augment: bool = setting(True, flag="--augment", group="optimisation and schedule",
                            help="pad-4 random crop + horizontal flip of the training images "
                            "(paper: on; no effect on feature-vector data)", since=2,
                            before=True)
    save_features_at: tuple[int, ...] = setting((), flag="--save-features-at", type=int,
                                                metavar="EPOCH", nargs="+", help="epochs "
                                                "(1-based) at which to save the features")
    checkpoint_every: int = setting(10, flag="--checkpoint-every", identifies=False,
                                    int_range=(1, MAX_EPOCHS), metavar="N",
                                    help="checkpoint every N epochs (and at the end)")
    keep_checkpoints: int = setting(2, identifies=False, int_range=(1, INT32_MAX), since=2,
                                    before=2)
    eval_batch_size: int = setting(1000, int_range=(1, INT32_MAX), since=2, before=1000)
    eval_every: int | str = setting("auto", flag="--eval-every", type=int_or_auto,
                                    identifies=False, int_range=(1, MAX_EPOCHS),
                                    metavar="N|auto", help="evaluate the test set every N "
                                    "epochs (and at the last and the feature epochs); auto = "
                                    "as often as 3%% of the training compute allows (every 3 "
                                    "epochs on full CIFAR-10)", since=2, before=1)

    def __post_init__(self) -> None:
        # Normalise containers so that equality and JSON round-trips are exact.
        object.__setattr__(self, "save_features_at",
                           tuple(sorted({int(e) for e in self.save_features_at})))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))

    def validate(self) -> "TrainConfig":
        """Raise ``ConfigError`` (one line naming the field) on an invalid value."""
        def bad(field: str, why: str) -> FieldError:
            return FieldError("train config", field, getattr(self, field), why)

        if self.arch not in BACKBONES:
            raise bad("arch", f"is not a known backbone ({', '.join(sorted(BACKBONES))})")
        for f in dataclasses.fields(self):
            problem = range_problem(getattr(self, f.name), meta(f).int_range)
            if problem:
                raise bad(f.name, problem)
        for name, positive in (("lr", True), ("weight_decay", False)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or v < 0 or (positive and v == 0):
                raise bad(name, "must be positive and finite" if positive
                          else "must be finite and >= 0")
        if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if isinstance(self.eval_every, str) and self.eval_every != "auto":
            raise bad("eval_every", "must be 'auto' or an integer >= 1")
        if not isinstance(self.augment, bool):
            raise bad("augment", "must be True or False")
        if any(e < 0 or e > self.epochs for e in self.save_features_at):
            raise bad("save_features_at", f"must hold epochs in 0..{self.epochs}")
        if {"width", "dtype", "num_classes"} & set(self.model_kwargs):
            raise bad("model_kwargs", "must not set width/dtype/num_classes "
                      "(use the width and precision fields)")
        return self

    def resolved(self, backend: str | None = None) -> "TrainConfig":
        """This config with precision "auto" replaced by ``resolve_precision``'s value."""
        return dataclasses.replace(self, precision=resolve_precision(self.precision, backend))

    @property
    def compute_dtype(self) -> Any:
        """``jnp.bfloat16`` for (resolved) precision "bf16", else ``jnp.float32``."""
        import jax.numpy as jnp  # local: keeps this module importable without jax set up

        return jnp.bfloat16 if resolve_precision(self.precision) == "bf16" else jnp.float32

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        return to_record(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ConfigError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"train config: unknown field(s) {', '.join(unknown)}")
        return from_record(cls, d)  # __post_init__ turns the lists back into tuples

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the results (all but ``BOOKKEEPING_FIELDS``)."""
        return {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING_FIELDS}


# Fields that change neither the trained weights nor the analysed results: a resumed run
# may use other values than the run that wrote the workdir.
BOOKKEEPING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                           if not meta(f).identifies)


def eval_interval(eval_every: int | str, num_test: int, trained_per_epoch: int) -> int:
    """Epochs between two test evaluations.

    Args:
      eval_every: ``TrainConfig.eval_every`` (an int is returned as it is).
      num_test: test images evaluated each time.
      trained_per_epoch: training images per epoch (steps x batch size).

    Returns:
      For "auto", the smallest N >= 1 for which evaluating every N epochs costs at most
      ``EVAL_BUDGET`` of training (full CIFAR-10, 10,000 test against 49,920 trained
      images: N = 3, 2.2%).
    """
    if eval_every != "auto":
        return int(eval_every)
    cost = EVAL_COST_PER_IMAGE * num_test / max(trained_per_epoch, 1)
    return max(1, math.ceil(cost / EVAL_BUDGET - 1e-9))


def resolve_precision(precision: str, backend: str | None = None) -> str:
    """"auto" -> "bf16" on a GPU/TPU backend, "fp32" otherwise; other values unchanged.

    Args:
      precision: one of ``PRECISIONS``.
      backend: platform name; None = ``jax.default_backend()`` (initialises the backend,
        so call it after ``jax.distributed.initialize``).
    """
    if precision != "auto":
        return precision
    if backend is None:
        import jax  # local: keeps this module importable without jax set up

        backend = jax.default_backend()
    return "bf16" if backend in BF16_BACKENDS else "fp32"
