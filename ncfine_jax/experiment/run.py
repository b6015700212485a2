"""Paper experiments as one pipeline: data -> label transform -> train -> analysis.

Every script in ``experiments/`` is a thin wrapper: it names an
:class:`ExperimentSpec` (which label transform, which dataset, which defaults) and
calls :func:`main`. All scripts share one flag set (:func:`build_parser`).

CIFAR experiments, paper setting (defaults): ResNet-18, 350 epochs, SGD momentum 0.9, batch 128, wd 5e-4,
lr x0.1 at epochs 150 and 250, features at epochs 20, 120, 240, 350. Cost: 350 x 390
ResNet-18 steps; a GPU job (no full run was measured by this project: no GPU was lent to
the session that built it). On a 2-core CPU use --width/--subset/--epochs (README has a
measured reduced run). Writes results.json, report.md and figures/ into --workdir.

Workdir contents (one run):
  experiment.json       the validated experiment config (refuses a different one)
  label_mapping.json    which original classes make up each training label
  config.json, log.jsonl, checkpoints/, features/epoch_XXXX.npz   (training engine)
  results.json, report.md, figures/*.png                          (analysis)
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ncfine_jax import io
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError

PAPER_SAVE_EPOCHS = (20, 120, 240, 350)


@dataclass(frozen=True)
class ExperimentSpec:
    """What distinguishes one paper experiment from another.

    Attributes:
      name: script name, e.g. "coarse_cifar10"; default workdir is runs/<name>/...
      label_kind: "original" | "coarse" | "fine" | "random_coarse" | "cifar100_superclass".
      data: default dataset name or path.
      num_coarse: default number of coarse labels (coarse / random_coarse only).
      arch: default backbone.
      epochs: default number of epochs.
      description: one line for --help.
    """

    name: str
    label_kind: str
    data: str = "cifar10"
    num_coarse: int | None = None
    arch: str = "resnet18"
    epochs: int = 350
    width: int | None = None
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "step"
    save_features_at: tuple[int, ...] = PAPER_SAVE_EPOCHS
    description: str = ""


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment configuration (what the flags say)."""

    experiment: str
    label_kind: str
    data: str
    arch: str
    width: int | None
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    schedule: str
    precision: str
    seed: int
    num_coarse: int | None
    subset: tuple[int, int] | None
    save_features_at: tuple[int, ...]
    checkpoint_every: int
    clp_reduce: str = "tsne"
    clp_max_tsne_points: int | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["subset"] = list(self.subset) if self.subset else None
        d["save_features_at"] = list(self.save_features_at)
        return d

    def training_fields(self) -> dict:
        """``to_dict()`` without ``NON_TRAINING_FIELDS``: what identifies the trained run."""
        return training_fields(self.to_dict())


# Flags that change only the analysis or the checkpoint cadence, not the trained run: a
# workdir may be resumed or re-analysed with other values of these.
NON_TRAINING_FIELDS = ("clp_reduce", "clp_max_tsne_points", "checkpoint_every")


def training_fields(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in NON_TRAINING_FIELDS}


def default_workdir(config: ExperimentConfig) -> Path:
    return Path("runs") / config.experiment / f"lr{config.lr:g}_wd{config.weight_decay:g}_seed{config.seed}"


def add_experiment_flags(parser, spec: ExperimentSpec) -> None:
    """The flag set every experiment script shares (grid.py reuses it)."""
    a = parser.add_argument
    a("--lr", type=float, default=spec.lr, help="SGD learning rate (paper grid: 0.1, 0.01, 0.001)")
    a("--wd", type=float, default=spec.weight_decay, help="weight decay (coupled L2, as PyTorch SGD)")
    a("--epochs", type=int, default=spec.epochs, help="training epochs (paper: 350)")
    a("--batch-size", type=int, default=spec.batch_size, help="global batch size (paper: 128)")
    a("--arch", default=spec.arch, help="backbone: resnet18, densenet121, vgg11/13/16/19, mlp")
    a("--width", type=int, default=spec.width, help="base width (channels/units); smaller = tiny model")
    a("--seed", type=int, default=0, help="seed for init, shuffling, augmentation and label transforms")
    a("--data", default=spec.data, help="dataset name (cifar10, cifar100, digits, ...) or a path")
    a("--data-dir", default=None, help="directory holding dataset archives (else $NCFINE_DATA_DIR, cache)")
    a("--subset", default=None, metavar="N_TRAIN[,N_TEST]",
      help="class-stratified subset sizes, for quick runs")
    a("--save-features-at", type=int, nargs="+", default=None, metavar="EPOCH",
      help=f"epochs at which to save features (default: {' '.join(map(str, spec.save_features_at))}"
           " clipped to --epochs, plus the last epoch)")
    a("--precision", choices=("fp32", "bf16"), default="fp32", help="compute precision (params stay fp32)")
    a("--schedule", choices=("constant", "step", "cosine"), default=spec.schedule,
      help="lr schedule; step = x0.1 at 3/7 and 5/7 of training (epochs 150, 250 of 350)")
    a("--num-coarse", type=int, default=spec.num_coarse, help="number of coarse labels (coarse experiments)")
    a("--checkpoint-every", type=int, default=10, help="checkpoint every N epochs (and at the end)")
    a("--clp-reduce", choices=("tsne", "pca", "none"), default="tsne",
      help="reduction before KMeans in Cluster-and-Linear-Probe")
    a("--clp-max-tsne-points", type=int, default=None, metavar="N",
      help="per-label t-SNE on at most N points, the rest joined by 10-NN (default: all, as the paper)")
    a("--workdir", default=None, help="output directory (default runs/<experiment>/lr<lr>_wd<wd>_seed<seed>)")
    a("--ot-workdir", default=None, help="workdir of an original-label (OT) run, for the CLP/LPO/OT bars")
    a("--overwrite", action="store_true",
      help="start afresh: empty the workdir first (needed when it holds a run with another config)")
    a("--no-progress", action="store_true", help="no tqdm progress bar")


def build_parser(spec: ExperimentSpec) -> ArgumentParser:
    parser = ArgumentParser(prog=f"{spec.name}.py", description=spec.description)
    add_experiment_flags(parser, spec)
    return parser


def _parse_subset(text: str | None) -> tuple[int, int] | None:
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


def config_from_args(spec: ExperimentSpec, args) -> ExperimentConfig:
    """Validate parsed flags into an ExperimentConfig (raises ConfigError)."""
    from ncfine_jax.models import MODELS

    if args.arch not in MODELS:
        raise ConfigError(f"--arch {args.arch!r}: unknown backbone; known: {', '.join(sorted(MODELS))}")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--checkpoint-every", args.checkpoint_every)):
        if value <= 0:
            raise ConfigError(f"{flag} {value}: must be positive")
    if args.width is not None and args.width <= 0:
        raise ConfigError(f"--width {args.width}: must be positive")
    if not args.lr > 0:
        raise ConfigError(f"--lr {args.lr}: must be positive")
    if args.wd < 0:
        raise ConfigError(f"--wd {args.wd}: must be >= 0")
    from ncfine_jax.analysis.clp import MIN_TSNE_POINTS

    if args.clp_max_tsne_points is not None and args.clp_max_tsne_points < MIN_TSNE_POINTS:
        raise ConfigError(f"--clp-max-tsne-points {args.clp_max_tsne_points}: must be "
                          f">= {MIN_TSNE_POINTS}")
    if args.save_features_at is None:
        save_at = sorted({e for e in spec.save_features_at if e <= args.epochs} | {args.epochs})
    else:
        save_at = sorted(set(args.save_features_at))
        bad = [e for e in save_at if e < 1 or e > args.epochs]
        if bad:
            raise ConfigError(f"--save-features-at {' '.join(map(str, bad))}: outside 1..--epochs ({args.epochs})")
    num_coarse = args.num_coarse
    if spec.label_kind in ("coarse", "random_coarse"):
        if num_coarse is None or num_coarse <= 0:
            raise ConfigError(f"--num-coarse {num_coarse}: must be a positive integer")
    elif num_coarse is not None and num_coarse != spec.num_coarse:
        raise ConfigError(f"--num-coarse {num_coarse}: not used by {spec.name} (labels: {spec.label_kind})")
    return ExperimentConfig(
        experiment=spec.name, label_kind=spec.label_kind, data=args.data, arch=args.arch,
        width=args.width, lr=args.lr, weight_decay=args.wd, epochs=args.epochs,
        batch_size=args.batch_size, schedule=args.schedule, precision=args.precision,
        seed=args.seed, num_coarse=num_coarse, subset=_parse_subset(args.subset),
        save_features_at=tuple(save_at), checkpoint_every=args.checkpoint_every,
        clp_reduce=args.clp_reduce, clp_max_tsne_points=args.clp_max_tsne_points,
    )


# --------------------------------------------------------------------------- registry

EXPERIMENTS: dict[str, ExperimentSpec] = {
    spec.name: spec
    for spec in (
        ExperimentSpec("coarse_cifar10", "coarse", num_coarse=5,
                       description="ResNet-18 on Coarse CIFAR-10: 5 labels y mod 5 (paper Sec. 4)."),
        ExperimentSpec("fine_cifar10", "fine",
                       description="ResNet-18 on Fine CIFAR-10: 20 labels, each class split in two "
                                   "at random (paper Sec. 4, eq. 5)."),
        ExperimentSpec("random_coarse_cifar10", "random_coarse", num_coarse=5,
                       description="ResNet-18 on randomly coarsened CIFAR-10: classes shuffled by "
                                   "the seed, then y mod 5 (paper App. F)."),
        ExperimentSpec("coarse_cifar100", "coarse", data="cifar100", num_coarse=20,
                       description="ResNet-18 on Coarse CIFAR-100: 20 labels y mod 20."),
        ExperimentSpec("cifar100_superclasses", "cifar100_superclass", data="cifar100",
                       description="ResNet-18 on CIFAR-100's 20 official superclasses."),
        ExperimentSpec("original_cifar10", "original",
                       description="ResNet-18 on the original 10 CIFAR-10 labels (the OT "
                                   "baseline of the CLP/LPO/OT comparison)."),
        ExperimentSpec("coarse_digits", "coarse", data="digits", num_coarse=5, arch="mlp",
                       epochs=60, lr=0.05, weight_decay=5e-4, batch_size=128,
                       save_features_at=(5, 20, 40, 60),
                       description="Offline demo: the whole pipeline on sklearn's 8x8 digits "
                                   "(5 coarse labels y mod 5) with a 2-layer MLP."),
    )
}


# --------------------------------------------------------------------------- stages

@dataclass
class PreparedData:
    """What training and analysis need: the dataset, transformed labels, the mapping."""

    dataset: object          # ncfine_jax.data.Dataset
    train_data: object       # ncfine_jax.train.TrainData
    mapping: object          # ncfine_jax.labels.LabelMapping


def prepare_data(config: ExperimentConfig, data_dir: str | None = None) -> PreparedData:
    """Load the dataset, take the subset, transform the labels (raises NcfineError)."""
    from ncfine_jax.data import load_dataset
    from ncfine_jax.labels import transform_labels
    from ncfine_jax.train import TrainData

    dataset = load_dataset(config.data, data_dir=data_dir)
    if config.subset is not None:
        dataset = dataset.subset(config.subset[0], config.subset[1], seed=config.seed)
    num_classes = dataset.num_classes
    if config.label_kind in ("coarse", "random_coarse") and num_classes % config.num_coarse:
        raise ConfigError(f"--num-coarse {config.num_coarse}: does not divide the "
                          f"{num_classes} classes of {config.data}")
    if config.label_kind == "cifar100_superclass" and num_classes != 100:
        raise ConfigError(f"--data {config.data}: the official superclasses need CIFAR-100 "
                          f"(100 classes), got {num_classes} classes")
    train_labels, test_labels, mapping = transform_labels(
        config.label_kind, dataset.y_train, dataset.y_test, num_classes,
        num_coarse=config.num_coarse, seed=config.seed,
        y_train_coarse=getattr(dataset, "y_train_coarse", None),
        y_test_coarse=getattr(dataset, "y_test_coarse", None))
    train_data = TrainData.from_dataset(dataset, train_labels, test_labels,
                                        num_labels=mapping.num_labels)
    return PreparedData(dataset, train_data, mapping)


def train_config(config: ExperimentConfig, is_image: bool):
    """The engine's TrainConfig for an experiment config."""
    from ncfine_jax.train import TrainConfig

    return TrainConfig(
        arch=config.arch, width=config.width, lr=config.lr, weight_decay=config.weight_decay,
        epochs=config.epochs, batch_size=config.batch_size, schedule=config.schedule,
        precision=config.precision, seed=config.seed, augment=is_image,
        save_features_at=config.save_features_at, checkpoint_every=config.checkpoint_every,
    ).validate()


def check_workdir(workdir: Path, config: ExperimentConfig, overwrite: bool) -> None:
    """Read-only check that ``workdir`` may take this run (raises ConfigError)."""
    record = workdir / "experiment.json"
    if record.exists():
        old, new = training_fields(io.read_json(record)), config.training_fields()
        if old != new and not overwrite:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"--workdir {workdir}: holds a run with a different config "
                f"(differs in {', '.join(diff)}); use --overwrite to replace it or pick another workdir")
    elif workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
    elif workdir.exists() and any(workdir.iterdir()) and not overwrite:
        raise ConfigError(f"--workdir {workdir}: not empty and holds no experiment.json; "
                          "use --overwrite to replace it or pick another workdir")


def write_workdir_header(workdir: Path, config: ExperimentConfig, mapping, overwrite: bool) -> None:
    """Start (or resume) a workdir: with ``overwrite`` empty it first (the run starts
    afresh), then record experiment.json and label_mapping.json."""
    if overwrite and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(workdir / "experiment.json", config.to_dict())
    mapping.save(workdir / "label_mapping.json")


def run_experiment(config: ExperimentConfig, workdir: str | Path, *, data_dir: str | None = None,
                   ot_workdir: str | None = None, overwrite: bool = False,
                   progress: bool = True, prepared: PreparedData | None = None) -> dict:
    """Train (or resume) one experiment and write its analysis; returns results.json.

    Every input error is raised before anything in ``workdir`` changes.
    """
    from ncfine_jax.analysis import analyze_run
    from ncfine_jax.train import train

    workdir = Path(workdir)
    check_workdir(workdir, config, overwrite)
    if ot_workdir is not None and not (Path(ot_workdir) / "log.jsonl").exists():
        raise ConfigError(f"--ot-workdir {ot_workdir}: holds no log.jsonl of a finished run")
    prepared = prepared or prepare_data(config, data_dir)
    tconfig = train_config(config, prepared.dataset.is_image)
    write_workdir_header(workdir, config, prepared.mapping, overwrite)
    train(tconfig, prepared.train_data, workdir, overwrite=overwrite, progress=progress)
    return analyze_run(workdir, ot_workdir=ot_workdir, reduce=config.clp_reduce,
                       seed=config.seed, max_tsne_points=config.clp_max_tsne_points,
                       class_names=list(prepared.dataset.class_names))


def main(spec: ExperimentSpec, argv: Sequence[str] | None = None) -> dict:
    """Entry point of every experiment script (wrapped by ``cli.run_main``)."""
    args = build_parser(spec).parse_args(argv)
    config = config_from_args(spec, args)
    workdir = Path(args.workdir) if args.workdir else default_workdir(config)
    results = run_experiment(config, workdir, data_dir=args.data_dir, ot_workdir=args.ot_workdir,
                             overwrite=args.overwrite, progress=not args.no_progress)
    print(summary_line(results, workdir))
    return results


def summary_line(results: dict, workdir: Path) -> str:
    def fmt(key):
        v = results.get(key)
        return "n/a" if v is None else f"{v:.4f}"
    return (f"{workdir}: final train acc {fmt('final_train_accuracy')}, test acc "
            f"{fmt('final_test_accuracy')}, CLP {fmt('clp_accuracy')}, LPO {fmt('lpo_accuracy')}"
            f" -> {workdir / 'report.md'}")


if __name__ == "__main__":  # pragma: no cover - scripts in experiments/ are the entry points
    import sys

    sys.exit(run_main(lambda argv: main(EXPERIMENTS["coarse_cifar10"], argv)))
