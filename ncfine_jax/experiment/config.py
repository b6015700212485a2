"""``ExperimentConfig``: one run's whole configuration, validated once; the flags, defined once.

An experiment is a ``TrainConfig`` (what the engine trains) plus the data, the label
transform and the analysis. ``experiment.json`` stores it flat (``to_dict``), and a
workdir holding a run is identified by ``identity()``: every field except the
bookkeeping and analysis ones (``NON_IDENTITY_FIELDS``), which a finished run may be
resumed or re-analysed with. Every script's flags come from one table (``FLAGS``), so
the single-run scripts, ``experiments/grid.py`` and the paper runner accept the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from ncfine_jax.errors import ConfigError
from ncfine_jax.train.config import BOOKKEEPING_FIELDS, FieldError, TrainConfig

LABEL_KINDS = ("original", "coarse", "fine", "random_coarse", "cifar100_superclass")
COARSE_KINDS = ("coarse", "random_coarse")
CLP_REDUCTIONS = ("tsne", "pca", "none")
PAPER_SAVE_EPOCHS = (20, 120, 240, 350)
ON_OFF = ("on", "off")  # the values of a boolean flag, True first

INT32_MAX = 2**31 - 1  # counts, sizes and epochs reach int32 arrays and step counters
SEED_MAX = 2**32 - 1  # seeds are 32-bit (jax.random.key, numpy's SeedSequence words)
MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536  # channels / hidden units; wider nets do not fit any accelerator
# Allowed range of each integer field (TrainConfig.validate checks the lower bounds of
# its fields first; validate() words either failure with the whole range).
INT_RANGES = {
    "epochs": (1, MAX_EPOCHS), "batch_size": (1, INT32_MAX), "width": (1, MAX_WIDTH),
    "seed": (0, SEED_MAX), "checkpoint_every": (1, MAX_EPOCHS),
    "num_coarse": (1, INT32_MAX), "clp_max_tsne_points": (1, INT32_MAX),
}


@dataclass(frozen=True)
class DataConfig:
    """Which samples a run sees.

    Attributes:
      name: dataset name (``cifar10``, ``cifar100``, ``digits``, ``gaussian_mixture``,
        ``tfds:<name>``) or a path (official CIFAR archive, class-folder set).
      subset: (n_train, n_test) numbers of samples of a class-stratified subset, or None
        for every sample.
    """

    name: str = "cifar10"
    subset: tuple[int, int] | None = None


@dataclass(frozen=True)
class LabelConfig:
    """The labels the network is trained on.

    Attributes:
      kind: "original" | "coarse" (y mod C~) | "fine" (each class split in two) |
        "random_coarse" (classes shuffled by the seed, then coarsened) |
        "cifar100_superclass" (the 20 official superclasses).
      num_coarse: number of coarse labels C~ (coarse kinds only; must divide the classes).
    """

    kind: str = "coarse"
    num_coarse: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """How the saved features are analysed (does not identify the trained run).

    Attributes:
      clp_reduce: reduction before KMeans in Cluster-and-Linear-Probe: "tsne" (paper),
        "pca" or "none".
      clp_max_tsne_points: per-label t-SNE on at most this many points (the rest joined
        by 10-NN), or None for all points.
    """

    clp_reduce: str = "tsne"
    clp_max_tsne_points: int | None = None


# experiment.json fields that a finished run may be resumed or re-analysed with.
NON_IDENTITY_FIELDS = BOOKKEEPING_FIELDS + tuple(f.name for f in dataclasses.fields(AnalysisConfig))


# Fields added to experiment.json after runs were written without them, with the value
# such a run had: old records are read as if they held it.
_ADDED_FIELDS = {"augment": True, "eval_every": 1}


def migrate(record: dict) -> dict:
    """A flat experiment record in today's form (fields added later take the value the
    run that wrote the record used)."""
    return {**_ADDED_FIELDS, **record}


def identity(record: dict) -> dict:
    """The identifying part of a flat experiment record (``ExperimentConfig.to_dict``)."""
    return {k: v for k, v in migrate(record).items() if k not in NON_IDENTITY_FIELDS}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment run: training, data, labels and analysis.

    Attributes:
      experiment: name of the experiment (the script), e.g. "coarse_cifar10".
      train: the engine's configuration (units in ``TrainConfig``'s docstring).
      data, labels, analysis: see their classes.
    """

    experiment: str
    train: TrainConfig
    data: DataConfig = DataConfig()
    labels: LabelConfig = LabelConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    # The fields every layer reads, without spelling out the part they live in.
    lr = property(lambda self: self.train.lr)
    weight_decay = property(lambda self: self.train.weight_decay)
    seed = property(lambda self: self.train.seed)
    epochs = property(lambda self: self.train.epochs)
    arch = property(lambda self: self.train.arch)

    def replace(self, **train_fields: Any) -> "ExperimentConfig":
        """Copy with other ``TrainConfig`` fields (e.g. a grid point's lr)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **train_fields))

    def validate(self) -> "ExperimentConfig":
        """Check every field; a bad one is one ConfigError line naming its flag."""
        try:
            self.train.validate()
        except FieldError as e:
            # TrainConfig decides; a flag's message states its whole allowed range.
            why = (f"must be an integer in {INT_RANGES[e.field][0]}..{INT_RANGES[e.field][1]}"
                   if e.field in INT_RANGES else e.why)
            raise ConfigError(f"{flag_of(e.field)} {_show(e.value)}: {why}") from None
        for name in ("epochs", "batch_size", "width", "seed", "checkpoint_every"):
            check_int_range(flag_of(name), getattr(self.train, name), *INT_RANGES[name])
        if self.train.eval_every != "auto":
            check_int_range("--eval-every", self.train.eval_every, 1, MAX_EPOCHS)
        if self.labels.kind not in LABEL_KINDS:
            raise ConfigError(f"label kind {self.labels.kind!r}: must be one of "
                              f"{', '.join(LABEL_KINDS)}")
        c = self.labels.num_coarse
        if self.labels.kind in COARSE_KINDS:
            check_int_range("--num-coarse", c, *INT_RANGES["num_coarse"])
        elif c is not None:
            raise ConfigError(f"--num-coarse {c}: not used by {self.experiment} "
                              f"(labels: {self.labels.kind})")
        subset = self.data.subset
        if subset is not None and (len(subset) != 2 or min(subset) <= 0):
            raise ConfigError(f"--subset {subset}: expected one or two positive integers")
        if subset is not None and max(subset) > INT32_MAX:
            raise ConfigError(f"--subset {subset[0]},{subset[1]}: sizes must be at most "
                              f"{INT32_MAX}")
        if self.analysis.clp_reduce not in CLP_REDUCTIONS:
            raise ConfigError(f"--clp-reduce {self.analysis.clp_reduce!r}: must be one of "
                              f"{', '.join(CLP_REDUCTIONS)}")
        from ncfine_jax.analysis.clp import MIN_TSNE_POINTS

        points = self.analysis.clp_max_tsne_points
        check_int_range("--clp-max-tsne-points", points, MIN_TSNE_POINTS, INT32_MAX)
        return self

    def to_dict(self) -> dict:
        """The flat experiment.json record."""
        t = self.train
        return {
            "experiment": self.experiment, "label_kind": self.labels.kind,
            "data": self.data.name, "arch": t.arch, "width": t.width, "lr": t.lr,
            "weight_decay": t.weight_decay, "epochs": t.epochs, "batch_size": t.batch_size,
            "schedule": t.schedule, "precision": t.precision, "seed": t.seed,
            "augment": t.augment, "num_coarse": self.labels.num_coarse,
            "subset": list(self.data.subset) if self.data.subset else None,
            "save_features_at": list(t.save_features_at),
            "checkpoint_every": t.checkpoint_every, "eval_every": t.eval_every,
            "clp_reduce": self.analysis.clp_reduce,
            "clp_max_tsne_points": self.analysis.clp_max_tsne_points,
        }

    @classmethod
    def from_dict(cls, record: dict) -> "ExperimentConfig":
        """Inverse of ``to_dict`` (engine fields not in the record take their defaults)."""
        r = migrate(record)
        train = TrainConfig(
            arch=r["arch"], width=r["width"], lr=r["lr"], weight_decay=r["weight_decay"],
            epochs=r["epochs"], batch_size=r["batch_size"], schedule=r["schedule"],
            precision=r["precision"], seed=r["seed"], augment=r["augment"],
            save_features_at=tuple(r["save_features_at"]),
            checkpoint_every=r["checkpoint_every"], eval_every=r["eval_every"])
        return cls(r["experiment"], train,
                   DataConfig(r["data"], tuple(r["subset"]) if r.get("subset") else None),
                   LabelConfig(r["label_kind"], r.get("num_coarse")),
                   AnalysisConfig(r.get("clp_reduce", "tsne"), r.get("clp_max_tsne_points")))

    def identity(self) -> dict:
        """What identifies the trained run (``to_dict`` without NON_IDENTITY_FIELDS)."""
        return identity(self.to_dict())


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def eval_every_arg(text: str) -> int | str:
    """argparse type of --eval-every: "auto" or an integer >= 1."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'auto' or an integer >= 1")
    return value


def check_int_range(flag: str, value: Any, lo: int, hi: int) -> None:
    """ConfigError ``"<flag> <value>: must be an integer in lo..hi"`` unless ``value`` is
    None or an int in ``[lo, hi]``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{flag} {_show(value)}: must be an integer in {lo}..{hi}")


def check_nonempty(flag: str, text: str | None) -> None:
    """ConfigError for a path flag given as an empty string (it would mean the current
    folder, silently)."""
    if text is not None and not str(text).strip():
        raise ConfigError(f"{flag} {text!r}: must not be empty (name a folder)")


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class Flag:
    """One command-line flag of an experiment setting.

    Attributes:
      flag: e.g. "--lr".
      field: the config field, "<part>.<name>" with part in train, data, labels, analysis.
      type: argparse type.
      help: meaning and unit.
      choices, metavar, nargs: argparse options.
    """

    flag: str
    field: str
    type: Callable[[str], Any] = str
    help: str = ""
    choices: tuple | None = None
    metavar: str | None = None
    nargs: str | None = None


FLAGS = (
    Flag("--lr", "train.lr", float, "peak SGD learning rate per step (paper grid: 0.1, 0.01, "
         "0.001)"),
    Flag("--wd", "train.weight_decay", float, "weight decay: coupled L2 coefficient added to "
         "the gradient, as PyTorch SGD (paper: 5e-4)"),
    Flag("--epochs", "train.epochs", int, "training epochs, passes over the training set "
         "(paper: 350)"),
    Flag("--batch-size", "train.batch_size", int, "global batch size in samples, split over "
         "the devices of the data axis (paper: 128)"),
    Flag("--arch", "train.arch", str, "backbone: resnet18, densenet121, vgg11/13/16/19, mlp"),
    Flag("--width", "train.width", int, "base width in channels (hidden units for the mlp); "
         "smaller = tiny model (default: the paper's)"),
    Flag("--seed", "train.seed", int, "seed of initialisation, shuffling, augmentation and "
         "random label transforms"),
    Flag("--augment", "train.augment", str, "pad-4 random crop + horizontal flip of the "
         "training images (paper: on; no effect on feature-vector data)",
         choices=ON_OFF),
    Flag("--precision", "train.precision", str, "compute precision (parameters stay float32); "
         "auto = bf16 on a GPU/TPU, fp32 on CPU, recorded resolved", choices=("auto", "fp32", "bf16")),
    Flag("--schedule", "train.schedule", str, "lr schedule; step = x0.1 at 3/7 and 5/7 of "
         "training (epochs 150, 250 of 350)", choices=("constant", "step", "cosine")),
    Flag("--save-features-at", "train.save_features_at", int, "epochs (1-based) at which to "
         "save the features", metavar="EPOCH", nargs="+"),
    Flag("--checkpoint-every", "train.checkpoint_every", int, "checkpoint every N epochs "
         "(and at the end)"),
    Flag("--eval-every", "train.eval_every", eval_every_arg, "evaluate the test set every N "
         "epochs (and at the last and the feature epochs); auto = as often as 3%% of the "
         "training compute allows (every 3 epochs on full CIFAR-10)", metavar="N|auto"),
    Flag("--data", "data.name", str, "dataset name (cifar10, cifar100, digits, "
         "gaussian_mixture, tfds:<name>) or a path"),
    Flag("--subset", "data.subset", str, "class-stratified subset sizes in samples, for quick "
         "runs (N_TEST defaults to N_TRAIN/5)", metavar="N_TRAIN[,N_TEST]"),
    Flag("--num-coarse", "labels.num_coarse", int, "number of coarse labels C~ (coarse "
         "experiments)"),
    Flag("--clp-reduce", "analysis.clp_reduce", str, "reduction before KMeans in "
         "Cluster-and-Linear-Probe", choices=CLP_REDUCTIONS),
    Flag("--clp-max-tsne-points", "analysis.clp_max_tsne_points", int, "per-label t-SNE on at "
         "most N points, the rest joined by 10-NN (default: all, as the paper)", metavar="N"),
)
_FLAG_OF = {f.field.split(".", 1)[1]: f.flag for f in FLAGS}


def flag_of(field: str) -> str:
    """The flag of a config field name (e.g. "weight_decay" -> "--wd")."""
    return _FLAG_OF.get(field, field)


def _get(config: ExperimentConfig, path: str) -> Any:
    part, name = path.split(".")
    return getattr(getattr(config, part), name)


def add_config_flags(parser, defaults: ExperimentConfig, several: tuple[str, ...] = ()) -> None:
    """Add every ``FLAGS`` entry with ``defaults``' values; flags in ``several`` take one or
    more values (a grid's --lr / --wd)."""
    for f in FLAGS:
        default = _get(defaults, f.field)
        if f.field == "train.save_features_at":
            default = None  # derived from --epochs unless given (see config_from_args)
            help_text = (f"{f.help} (default: {' '.join(map(str, _get(defaults, f.field)))} "
                         "clipped to --epochs, plus the last epoch)")
        elif f.field == "data.subset":
            default, help_text = None, f.help
        elif f.choices == ON_OFF:
            default = ON_OFF[0] if default else ON_OFF[1]
            help_text = f"{f.help} (default: {default})"
        else:
            help_text = f"{f.help} (default: {default})"
        nargs = "+" if f.flag in several else f.nargs
        parser.add_argument(f.flag, type=f.type, default=default, help=help_text,
                            choices=f.choices, metavar=f.metavar, nargs=nargs)


def parse_subset(text: str | None) -> tuple[int, int] | None:
    """``"N_TRAIN[,N_TEST]"`` -> (n_train, n_test); N_TEST defaults to max(1, N_TRAIN // 5)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ConfigError(f"--subset {text!r}: expected N_TRAIN or N_TRAIN,N_TEST (integers)") from None
    if len(parts) == 1:
        parts.append(max(1, parts[0] // 5))
    if len(parts) != 2 or min(parts) <= 0:
        raise ConfigError(f"--subset {text!r}: expected one or two positive integers")
    return parts[0], parts[1]


def config_from_args(defaults: ExperimentConfig, args) -> ExperimentConfig:
    """The validated config of parsed flags (``add_config_flags``) over ``defaults``."""
    values = {f.field: getattr(args, f.flag[2:].replace("-", "_")) for f in FLAGS}
    epochs = values["train.epochs"]
    save_at = values["train.save_features_at"]
    if save_at is None:
        default_at = defaults.train.save_features_at
        save_at = sorted({e for e in default_at if e <= epochs} | {epochs}) \
            if isinstance(epochs, int) and epochs > 0 else ()
    else:
        bad = sorted({e for e in save_at if e < 1 or e > epochs})
        if bad:
            raise ConfigError(f"--save-features-at {' '.join(map(str, bad))}: outside "
                              f"1..--epochs ({epochs})")
    for flag, value in (("--lr", values["train.lr"]), ("--wd", values["train.weight_decay"])):
        if not math.isfinite(value):
            raise ConfigError(f"{flag} {value}: must be a finite number")
    for field in ("train.lr", "train.weight_decay"):
        values[field] += 0.0  # -0.0 is 0.0: one workdir name ("wd0"), one grid point
    values["train.save_features_at"] = tuple(save_at)
    for f in FLAGS:
        if f.choices == ON_OFF:
            values[f.field] = values[f.field] == ON_OFF[0]
    values["data.subset"] = parse_subset(values["data.subset"])
    parts: dict[str, dict] = {"train": {}, "data": {}, "labels": {}, "analysis": {}}
    for path, value in values.items():
        part, name = path.split(".")
        parts[part][name] = value
    config = ExperimentConfig(
        defaults.experiment, dataclasses.replace(defaults.train, **parts["train"]),
        dataclasses.replace(defaults.data, **parts["data"]),
        dataclasses.replace(defaults.labels, **parts["labels"]),
        dataclasses.replace(defaults.analysis, **parts["analysis"]))
    return config.validate()
