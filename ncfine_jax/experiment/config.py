"""``ExperimentConfig``: one run's whole configuration, validated once; the flags, defined once.

An experiment is a ``TrainConfig`` (what the engine trains) plus the data, the label
transform and the analysis. Each setting is declared once, as a field with its flag,
help, range and role (``ncfine_jax.settings.setting``); from these declarations come the
flags (``FLAGS``: the single-run scripts, ``experiments/grid.py`` and the paper runner
accept the same), the flat, versioned ``experiment.json`` record (``to_dict``: every
field; ``migrate`` reads older versions through ``settings.migrate_record``) and the one
identity rule (``identity()``: every field except the bookkeeping and analysis ones,
``NON_IDENTITY_FIELDS``, which a finished run may be resumed or re-analysed with).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ncfine_jax.analysis.options import MIN_TSNE_POINTS, REDUCTIONS
from ncfine_jax.cli import flag_groups
from ncfine_jax.errors import ConfigError
from ncfine_jax.labels import COARSE_KINDS, KINDS
from ncfine_jax.settings import (INT32_MAX, RECORD_VERSION, from_record, meta,
                                 migrate_record, record_key, setting, to_record)
from ncfine_jax.train.config import FieldError, TrainConfig

CLP_REDUCTIONS = REDUCTIONS
PAPER_SAVE_EPOCHS = (20, 120, 240, 350)
ON_OFF = ("on", "off")  # the values of a boolean flag, True first


@dataclass(frozen=True)
class DataConfig:
    """Which samples a run sees.

    Attributes:
      name: dataset name (``cifar10``, ``cifar100``, ``digits``, ``gaussian_mixture``,
        ``tfds:<name>``) or a path (official CIFAR archive, class-folder set).
      subset: (n_train, n_test) numbers of samples of a class-stratified subset, or None
        for every sample.
    """

    name: str = setting("cifar10", flag="--data", key="data", group="data and labels",
                        metavar="NAME|PATH", help="dataset: cifar10, cifar100, digits, "
                        "gaussian_mixture, tfds:NAME, or a path to an official CIFAR archive "
                        "or a class-folder set (train/CLASS/*.png, test/CLASS/*.png)")
    subset: tuple[int, int] | None = setting(None, flag="--subset", type=str,
                                             metavar="N_TRAIN[,N_TEST]", group="data and labels",
                                             default_help="every sample",
                                             help="class-stratified subset sizes in samples, "
                                             "for quick runs (N_TEST defaults to N_TRAIN/5)")

    def __post_init__(self) -> None:
        if self.subset is not None:  # a JSON list read back: the tuple it was
            object.__setattr__(self, "subset", tuple(self.subset))


@dataclass(frozen=True)
class LabelConfig:
    """The labels the network is trained on.

    Attributes:
      kind: "original" | "coarse" (y mod C~) | "fine" (each class split in two) |
        "random_coarse" (classes shuffled by the seed, then coarsened) |
        "cifar100_superclass" (the 20 official superclasses).
      num_coarse: number of coarse labels C~ (coarse kinds only; must divide the classes).
    """

    kind: str = setting("coarse", key="label_kind")
    num_coarse: int | None = setting(None, flag="--num-coarse", type=int, metavar="C",
                                     int_range=(1, INT32_MAX), group="data and labels",
                                     help="number of coarse labels C~: class y gets label "
                                     "y mod C~ (coarse experiments)")


@dataclass(frozen=True)
class AnalysisConfig:
    """How the saved features are analysed (does not identify the trained run).

    Attributes:
      clp_reduce: reduction before KMeans in Cluster-and-Linear-Probe: "tsne" (paper),
        "pca" or "none".
      clp_max_tsne_points: per-label t-SNE on at most this many points (the rest joined
        by 10-NN), or None for all points.
      permutations: draws of the fine-structure test's permutation nulls.
    """

    clp_reduce: str = setting("tsne", flag="--clp-reduce", identifies=False,
                              choices=CLP_REDUCTIONS, group="analysis", help="reduction "
                              "before KMeans in Cluster-and-Linear-Probe")
    clp_max_tsne_points: int | None = setting(None, flag="--clp-max-tsne-points", type=int,
                                              identifies=False, metavar="N", group="analysis",
                                              default_help="every point, as the paper",
                                              help="per-label t-SNE on at most N points, the "
                                              "rest joined by their 10 nearest neighbours")
    permutations: int = setting(500, flag="--permutations", identifies=False, metavar="N",
                                int_range=(1, INT32_MAX), group="analysis",
                                help="permutation-null draws of the fine-structure test (the "
                                "smallest p-value is 1 / (N + 1))", since=3, before=500)


# The parts of an ExperimentConfig that hold settings, in the order of --help.
PARTS = {"train": TrainConfig, "data": DataConfig, "labels": LabelConfig,
         "analysis": AnalysisConfig}


def _fields():
    """(part name, field) of every setting of an experiment."""
    return [(part, f) for part, cls in PARTS.items() for f in dataclasses.fields(cls)]


# experiment.json fields that a finished run may be resumed or re-analysed with.
NON_IDENTITY_FIELDS = tuple(record_key(f) for _, f in _fields() if not meta(f).identifies)


def migrate(record: dict) -> dict:
    """A flat experiment record in today's form (version ``RECORD_VERSION``): the settings
    an older record lacks take the values they had then (``settings.migrate_record``;
    version 1 held the flags only)."""
    return migrate_record(record, PARTS.values(), "experiment")


def identity(record: dict) -> dict:
    """The identifying part of a flat experiment record (``ExperimentConfig.to_dict``)."""
    return {k: v for k, v in migrate(record).items()
            if k not in NON_IDENTITY_FIELDS and k != "record_version"}


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
        except FieldError as e:  # TrainConfig decides; the message names the flag
            raise ConfigError(f"{flag_of(e.field)} {_show(e.value)}: {e.why}") from None
        if self.labels.kind not in KINDS:
            raise ConfigError(f"label kind {self.labels.kind!r}: must be one of "
                              f"{', '.join(KINDS)}")
        c = self.labels.num_coarse
        if self.labels.kind in COARSE_KINDS:
            check_int_range("--num-coarse", c, 1, INT32_MAX)
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
        points = self.analysis.clp_max_tsne_points
        check_int_range("--clp-max-tsne-points", points, MIN_TSNE_POINTS, INT32_MAX)
        check_int_range("--permutations", self.analysis.permutations, 1, INT32_MAX)
        return self

    def to_dict(self) -> dict:
        """The flat experiment.json record: every setting under its record key."""
        record = {"record_version": RECORD_VERSION, "experiment": self.experiment}
        for part in PARTS:
            record.update(to_record(getattr(self, part)))
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "ExperimentConfig":
        """Inverse of ``to_dict`` (older record versions migrated)."""
        r = migrate(record)
        return cls(r["experiment"], **{part: from_record(c, r) for part, c in PARTS.items()})

    def identity(self) -> dict:
        """What identifies the trained run (``to_dict`` without NON_IDENTITY_FIELDS)."""
        return identity(self.to_dict())


# Identity settings the default workdir name spells out when they differ from the
# experiment's defaults (any other difference shows in its hash only).
_NAMED_IN_WORKDIR = ("arch", "width", "epochs", "batch_size", "schedule", "precision",
                     "augment", "data", "subset", "num_coarse", "label_kind")


def default_workdir(config: ExperimentConfig, defaults: ExperimentConfig) -> Path:
    """Where a run goes when no --workdir is given: one folder per trained run.

    ``runs/<experiment>/lr<lr>_wd<wd>_seed<seed>`` for the experiment's defaults (the
    flagship: ``runs/coarse_cifar10/lr0.01_wd0.0005_seed0``); when other settings that
    identify the run differ from the defaults, the name adds the short ones (e.g.
    ``_width16_epochs5``) and a 6-digit hash of every identifying setting, so another
    config never lands in (and is refused by) a folder that holds a run. The same command
    gives the same folder, which is how a run resumes; analysis and bookkeeping flags
    (``--clp-reduce``, ``--eval-every``, ...) do not change it.
    """
    name = f"lr{config.lr:g}_wd{config.weight_decay:g}_seed{config.seed}"
    ident, reference = config.identity(), defaults.identity()
    differs = [k for k in ident if k not in ("lr", "weight_decay", "seed", "experiment")
               and ident[k] != reference.get(k)]
    if differs:
        named = [_workdir_token(k, ident[k]) for k in _NAMED_IN_WORKDIR if k in differs]
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:6]
        name = "_".join([name, *named, digest])
    return Path("runs") / config.experiment / name


def _workdir_token(key: str, value: Any) -> str:
    """One setting in a folder name: "width16", "subset2000-500", "data-cifar10_jpeg"."""
    if key == "data":
        stem = Path(str(value)).name.split(".")[0] or "data"
        return "data-" + re.sub(r"[^A-Za-z0-9_-]+", "-", stem)
    if key == "augment":
        return "augment-" + ("on" if value else "off")
    if key in ("arch", "schedule", "precision", "label_kind"):
        return str(value)
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{flag_of(key)[2:] if key in _FLAG_OF else key}{text}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


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
    """One command-line flag of an experiment setting (read from the field's ``Meta``).

    Attributes:
      flag: e.g. "--lr".
      field: the config field, "<part>.<name>" with part in ``PARTS``.
      type: argparse type.
      help: meaning and unit.
      choices, metavar, nargs: argparse options (a bool setting is an on/off flag).
      grid_axis: takes one or more values in a grid script.
      group: its --help section (``settings.FLAG_GROUPS``).
      default_help: how --help names the default, when not by its value.
    """

    flag: str
    field: str
    type: Callable[[str], Any] = str
    help: str = ""
    choices: tuple | None = None
    metavar: str | None = None
    nargs: str | None = None
    grid_axis: bool = False
    group: str = "run and workdir"
    default_help: str | None = None


def _flag(part: str, field: dataclasses.Field) -> Flag:
    m = meta(field)
    default = field.default
    is_bool = isinstance(default, bool)
    kind = m.type or (type(default) if isinstance(default, (int, float, str)) and not is_bool
                      else str)
    return Flag(m.flag, f"{part}.{field.name}", kind, m.help,
                ON_OFF if is_bool else m.choices, m.metavar, m.nargs, m.grid_axis, m.group,
                m.default_help)


FLAGS = tuple(_flag(part, f) for part, f in _fields() if meta(f).flag)
_FLAG_OF = {f.field.split(".", 1)[1]: f.flag for f in FLAGS}


def flag_of(field: str) -> str:
    """The flag of a config field name (e.g. "weight_decay" -> "--wd")."""
    return _FLAG_OF.get(field, field)


def _get(config: ExperimentConfig, path: str) -> Any:
    part, name = path.split(".")
    return getattr(getattr(config, part), name)


def add_config_flags(parser, defaults: ExperimentConfig, grid: bool = False) -> None:
    """Add every ``FLAGS`` entry with ``defaults``' values, each in its --help section
    (``cli.flag_groups``) with its default named once; with ``grid`` the grid axes (--lr,
    --wd) take one or more values."""
    groups = flag_groups(parser)
    for f in FLAGS:
        default = _get(defaults, f.field)
        shown = f.default_help or default
        if f.field == "train.save_features_at":
            shown = (f"{' '.join(map(str, default))} clipped to --epochs, plus the last epoch"
                     if default else "the last epoch")
            default = None  # derived from --epochs unless given (see config_from_args)
        elif f.field == "data.subset":
            default = None
        elif f.choices == ON_OFF:
            default = shown = ON_OFF[0] if default else ON_OFF[1]
        nargs = "+" if grid and f.grid_axis else f.nargs
        groups[f.group].add_argument(f.flag, type=f.type, default=default,
                                     help=f"{f.help} (default: {shown})", choices=f.choices,
                                     metavar=f.metavar, nargs=nargs)


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
