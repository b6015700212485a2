"""``TrainConfig``: every hyperparameter of one training run, validated, JSON round-trip."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ncfine_jax.errors import ConfigError

SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
# Backends on which "auto" means bf16 compute: their matrix units run bf16 at several
# times the float32 rate. XLA:CPU has no such units, so "auto" is fp32 there.
BF16_BACKENDS = ("gpu", "cuda", "rocm", "tpu")

# Fields that change neither the trained weights nor the analysed results: a resumed run
# may use other values than the run that wrote the workdir.
BOOKKEEPING_FIELDS = ("checkpoint_every", "keep_checkpoints", "eval_every")

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
      arch: backbone name from ``ncfine_jax.models.MODELS`` ("resnet18", "mlp", ...).
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

    arch: str = "resnet18"
    width: int | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    epochs: int = 350
    batch_size: int = 128
    schedule: str = "step"
    precision: str = "auto"
    seed: int = 0
    augment: bool = True
    save_features_at: tuple[int, ...] = ()
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    eval_batch_size: int = 1000
    eval_every: int | str = "auto"

    def __post_init__(self) -> None:
        # Normalise containers so that equality and JSON round-trips are exact.
        object.__setattr__(self, "save_features_at",
                           tuple(sorted({int(e) for e in self.save_features_at})))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))

    def validate(self) -> "TrainConfig":
        """Raise ``ConfigError`` (one line naming the field) on an invalid value."""
        def bad(field: str, why: str) -> FieldError:
            return FieldError("train config", field, getattr(self, field), why)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        from ncfine_jax.models import MODELS  # local: models import is heavier

        if self.arch not in MODELS:
            raise bad("arch", f"is not a known backbone ({', '.join(sorted(MODELS))})")
        if self.width is not None and (not is_int(self.width) or self.width < 1):
            raise bad("width", "must be None or an integer >= 1")
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints",
                     "eval_batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
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
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if self.eval_every != "auto" and (not is_int(self.eval_every) or self.eval_every < 1):
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
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["save_features_at"] = list(self.save_features_at)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ConfigError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"train config: unknown field(s) {', '.join(unknown)}")
        d = dict(d)
        if "save_features_at" in d:
            d["save_features_at"] = tuple(d["save_features_at"])
        return cls(**d)

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the results (all but ``BOOKKEEPING_FIELDS``)."""
        return {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING_FIELDS}


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
