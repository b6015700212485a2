"""One experiment run: data -> label transform -> train -> analysis, in one workdir.

Every script in ``experiments/`` names an :class:`~ncfine_jax.experiment.ExperimentSpec`
and calls :func:`main`. Everything that can be known before training (flags, the data's
shape against the backbone, batch size against samples, class coverage, the run behind
``--ot-workdir``, the workdir's content) is checked before anything is created, written
or deleted; then the workdir is locked for the whole run, analysis included.

Workdir contents (one run):
  experiment.json       the experiment config (a workdir with another one is refused)
  label_mapping.json    which original classes make up each training label
  config.json, log.jsonl, checkpoints/, features/epoch_XXXX.npz   (training engine)
  results.json, report.md, figures/*.png, distance_matrices.npz   (analysis)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ncfine_jax import workdir as wdir
from ncfine_jax.analysis import analyze_run
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.analysis.pipeline import significance_request
from ncfine_jax.analysis.significance import SignificanceOptions
from ncfine_jax.cli import ArgumentParser
from ncfine_jax.data import load_dataset
from ncfine_jax.distributed import (add_distributed_flags, agree, initialize_from_args,
                                    is_writer)
from ncfine_jax.errors import ConfigError, NcfineError
from ncfine_jax.experiment.config import (COARSE_KINDS, ExperimentConfig, add_config_flags,
                                          config_from_args, identity, migrate)
from ncfine_jax.experiment.registry import ExperimentSpec
from ncfine_jax.io import atomic_write_json
from ncfine_jax.labels import LabelMapping, transform_labels
from ncfine_jax.logs import add_verbose_flag
from ncfine_jax.text import number, squashed
from ncfine_jax.train import TrainData, default_mesh_shape, train
from ncfine_jax.train.compile_cache import enable_compile_cache
from ncfine_jax.train.sharding import check_mesh_shape, parse_mesh

# Backbones that also take feature vectors [n, d]; the others need images [n, h, w, c].
FEATURE_VECTOR_ARCHS = ("mlp",)


def default_workdir(config: ExperimentConfig) -> Path:
    return Path("runs") / config.experiment / f"lr{config.lr:g}_wd{config.weight_decay:g}_seed{config.seed}"


def add_run_flags(parser, *, workdir_help: str | None = None, workdir_required: bool = False
                  ) -> None:
    """Flags of a command that are not part of the experiment config: where it reads and
    writes, and how it runs (device mesh, processes)."""
    a = parser.add_argument
    a("--data-dir", type=_folder, default=None,
      help="directory holding dataset archives (else $NCFINE_DATA_DIR, the cache)")
    a("--workdir", type=_folder, default=None, required=workdir_required,
      help=workdir_help or "output directory (default runs/<experiment>/lr<lr>_wd<wd>_seed<seed>)")
    a("--ot-workdir", type=_folder, default=None, help="workdir of a finished original-label "
      "(OT) run on the same data, for the CLP/LPO/OT bars")
    a("--overwrite", action="store_true", help="start afresh in a workdir holding a run (of "
      "any config, in any state): removes exactly the files its manifest.json lists; a "
      "folder holding no run is never emptied")
    a("--no-progress", action="store_true", help="no tqdm progress bar")
    add_verbose_flag(parser)
    a("--no-analysis", action="store_true",
      help="train only (e.g. on a cluster); the same command without it analyses the run")
    a("--mesh", type=_mesh_layout, default=None, metavar="MxD",
      help="device layout: M model rows x D data devices over every device of every process "
           "(default: a single run 1xD; a grid as many model rows as divide the points and "
           "the devices)")
    add_distributed_flags(parser)


def _folder(text: str) -> str:
    # An empty --workdir / --ot-workdir / --data-dir would silently mean the current folder
    # (or the default one).
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (name a folder)")
    return text


def _mesh_layout(text: str) -> tuple[int, int]:
    return parse_mesh(text)


_mesh_layout.__name__ = "MxD"  # argparse names the expected form with it: "invalid MxD value"


def build_parser(spec: ExperimentSpec) -> ArgumentParser:
    parser = ArgumentParser(prog=f"{spec.name}.py", description=spec.description)
    add_config_flags(parser, spec.defaults)
    add_run_flags(parser)
    return parser


@dataclass
class PreparedData:
    """What training and analysis need.

    Attributes:
      dataset: the ``ncfine_jax.data.Dataset`` (after the subset).
      train_data: ``ncfine_jax.train.TrainData`` with the transformed labels.
      mapping: the ``LabelMapping``.
      train_config: the config's TrainConfig with augmentation set by the data (images).
    """

    dataset: object
    train_data: object
    mapping: object
    train_config: object


def prepare_data(config: ExperimentConfig, data_dir: str | None = None) -> PreparedData:
    """Load the dataset, take the subset, transform the labels, and check that the run can
    train on them (raises one-line NcfineErrors; writes nothing but the decoded cache)."""
    dataset = load_dataset(config.data.name, data_dir=data_dir)
    if config.data.subset is not None:
        dataset = dataset.subset(config.data.subset[0], config.data.subset[1], seed=config.seed)
    num_classes = dataset.num_classes
    kind, num_coarse = config.labels.kind, config.labels.num_coarse
    if kind in COARSE_KINDS and num_classes % num_coarse:
        raise ConfigError(f"--num-coarse {num_coarse}: does not divide the "
                          f"{num_classes} classes of {config.data.name}")
    if kind == "cifar100_superclass" and num_classes != 100:
        raise ConfigError(f"--data {config.data.name}: the official superclasses need CIFAR-100 "
                          f"(100 classes), got {num_classes} classes")
    if config.arch not in FEATURE_VECTOR_ARCHS and not dataset.is_image:
        raise ConfigError(f"--arch {config.arch}: needs images [n, h, w, c], but --data "
                          f"{config.data.name} holds feature vectors "
                          f"{list(np.shape(dataset.x_train))}; use --arch mlp")
    for split, y in (("training", dataset.y_train), ("test", dataset.y_test)):
        missing = np.setdiff1d(np.arange(num_classes), y)
        if missing.size:
            hint = (f" (--subset {config.data.subset[0]},{config.data.subset[1]} gives "
                    f"{len(y)} {split} samples for {num_classes} classes)"
                    if config.data.subset else "")
            raise ConfigError(f"--data {config.data.name}: the {split} split has no sample of "
                              f"{missing.size} of the {num_classes} classes (e.g. class "
                              f"{int(missing[0])}){hint}; every class needs at least one")
    n_train = len(dataset.x_train)
    if config.train.batch_size > n_train:
        raise ConfigError(f"--batch-size {config.train.batch_size}: exceeds the {n_train} "
                          "training samples")
    train_labels, test_labels, mapping = transform_labels(
        kind, dataset.y_train, dataset.y_test, num_classes, num_coarse=num_coarse,
        seed=config.seed, y_train_coarse=getattr(dataset, "y_train_coarse", None),
        y_test_coarse=getattr(dataset, "y_test_coarse", None))
    train_data = TrainData.from_dataset(dataset, train_labels, test_labels,
                                        num_labels=mapping.num_labels)
    # --augment asks for image augmentation; feature vectors are never augmented.
    train_config = dataclasses.replace(config.train, augment=config.train.augment
                                       and bool(dataset.is_image)).validate()
    return PreparedData(dataset, train_data, mapping, train_config)


def check_layout(config: ExperimentConfig, mesh_shape: tuple[int, int] | None,
                 num_models: int) -> tuple[int, int]:
    """The (M, D) layout of ``num_models`` models trained together on every device
    (``mesh_shape`` or the default); ConfigError unless it fits the devices, the models
    and the batch sizes."""
    import jax

    devices = jax.device_count()
    shape = mesh_shape or default_mesh_shape(num_models, devices)
    check_mesh_shape(shape, num_models, devices, name=f"--mesh {shape[0]}x{shape[1]}")
    check_devices(config, shape[1])
    return shape


def check_devices(config: ExperimentConfig, data_devices: int) -> None:
    """ConfigError unless the batch sizes split evenly over the data axis."""
    for name, size in (("--batch-size", config.train.batch_size),
                       ("eval batch size", config.train.eval_batch_size)):
        if size % data_devices:
            raise ConfigError(f"{name} {size}: must be divisible by the {data_devices} devices "
                              "of the data axis")


def check_ot_workdir(ot_workdir: str | Path | None, num_classes: int) -> None:
    """ConfigError unless ``ot_workdir`` holds a finished original-label run over
    ``num_classes`` classes (its final test accuracy is the OT bar)."""
    if ot_workdir is None:
        return
    path = Path(ot_workdir)
    flag = f"--ot-workdir {path}"
    if not wdir.RunDir(path).mapping.is_file() or not wdir.RunDir(path).log.is_file():
        raise ConfigError(f"{flag}: holds no finished run (needs {wdir.MAPPING_FILE} and "
                          f"{wdir.LOG_FILE})")
    try:
        mapping = LabelMapping.load(wdir.RunDir(path).mapping)
    except Exception as e:  # noqa: BLE001 - any unreadable mapping is one line
        raise ConfigError(f"{flag}: {wdir.MAPPING_FILE} is unreadable ({squashed(e)})") from None
    if mapping.kind != "original":
        raise ConfigError(f"{flag}: holds a run trained on {mapping.kind!r} labels; the OT "
                          "baseline is a run on the original labels (original_cifar10.py)")
    if mapping.num_classes != num_classes:
        raise ConfigError(f"{flag}: its run has {mapping.num_classes} classes, this one "
                          f"{num_classes}")
    log = wdir.read_log(wdir.RunDir(path).log, writer=False)
    epochs = (wdir.read_json_file(wdir.RunDir(path).config, "run config").get("config") or {}).get(
        "epochs") if wdir.RunDir(path).config.is_file() else None
    if not log or "test_accuracy" not in log[-1] or (epochs and log[-1]["epoch"] != epochs):
        done = log[-1]["epoch"] if log else 0
        raise ConfigError(f"{flag}: its run is not finished ({done} of {epochs or '?'} epochs "
                          "logged)")


def analysis_request(config: ExperimentConfig, ot_workdir) -> dict:
    """The ``results.json["analysis"]`` values this run's analysis must have."""
    return {"epochs_trained": config.epochs, "reduce": config.analysis.clp_reduce,
            "max_tsne_points": config.analysis.clp_max_tsne_points, "seed": config.seed,
            "significance": significance_request(SignificanceOptions(seed=config.seed)),
            "ot_workdir": None if ot_workdir is None else str(ot_workdir)}


def results_are_current(workdir: Path, config: ExperimentConfig, ot_workdir) -> bool:
    """Whether ``workdir/results.json`` is this run's analysis (``wdir.results_are_current``
    with the record migrated)."""
    return wdir.results_are_current(workdir, config.to_dict(), analysis_request(config, ot_workdir),
                                    migrate)


def analyze(workdir: Path, config: ExperimentConfig, ot_workdir, class_names) -> dict:
    """``analyze_run`` of a trained run unless its results.json is already this analysis
    (the one re-analysis rule of single runs and grid points)."""
    if results_are_current(workdir, config, ot_workdir):
        return wdir.read_json_file(wdir.RunDir(workdir).results, "results")
    options = AnalysisOptions(reduce=config.analysis.clp_reduce, seed=config.seed,
                              max_tsne_points=config.analysis.clp_max_tsne_points)
    return analyze_run(workdir, options, ot_workdir=ot_workdir, class_names=class_names)


def write_header(workdir: Path, config: ExperimentConfig, mapping) -> None:
    atomic_write_json(wdir.RunDir(workdir).experiment, config.to_dict())
    mapping.save(wdir.RunDir(workdir).mapping)


def run_experiment(config: ExperimentConfig, workdir: str | Path, *, data_dir: str | None = None,
                   ot_workdir: str | None = None, overwrite: bool = False,
                   progress: bool = True, prepared: PreparedData | None = None,
                   mesh_shape: tuple[int, int] | None = None, analysis: bool = True) -> dict:
    """Train (or resume) one experiment and write its analysis; returns results.json.

    Every input error is raised before anything in ``workdir`` changes; the workdir is
    locked from the first write to the end of the analysis. In a multi-process run every
    process trains, process 0 alone writes (and returns the results; the others {}).
    With ``analysis=False`` the run is only trained (returns {}).
    """
    workdir = Path(workdir)
    # "auto" precision resolved here, after any jax.distributed.initialize: the record
    # and the run identity hold the precision that actually ran.
    config = dataclasses.replace(config, train=config.train.resolved()).validate()
    wdir.inspect(workdir, wdir.EXPERIMENT_FILE, config.identity(), identity, overwrite)
    prepared = prepared or prepare_data(config, data_dir)
    if mesh_shape is not None and mesh_shape[0] != 1:
        raise ConfigError(f"--mesh {mesh_shape[0]}x{mesh_shape[1]}: a single run trains one "
                          "model; use a models axis of 1 (1xD)")
    shape = check_layout(config, mesh_shape, 1)
    check_ot_workdir(ot_workdir, prepared.dataset.num_classes)
    writer = is_writer()
    with contextlib.ExitStack() as held:
        problem = None
        if writer:
            try:
                held.enter_context(wdir.lock(workdir))
                # Under the lock: another command may have changed the workdir since the check.
                state = wdir.inspect(workdir, wdir.EXPERIMENT_FILE, config.identity(),
                                     identity, overwrite)
                if state == "replace":
                    wdir.reset(workdir)
                write_header(workdir, config, prepared.mapping)
            except NcfineError as e:
                problem = e
        agree(problem, f"--workdir {workdir}")  # every process stops when process 0 refused
        train(prepared.train_config, prepared.train_data, workdir, progress=progress,
              mesh_shape=shape)
        if not (writer and analysis):
            return {}
        return analyze(workdir, config, ot_workdir, list(prepared.dataset.class_names))


def main(spec: ExperimentSpec, argv: Sequence[str] | None = None) -> dict:
    """Entry point of every experiment script (wrapped by ``cli.run_main``)."""
    args = build_parser(spec).parse_args(argv)
    config = config_from_args(spec.defaults, args)
    enable_compile_cache()
    initialize_from_args(args)
    workdir = Path(args.workdir) if args.workdir else default_workdir(config)
    results = run_experiment(config, workdir, data_dir=args.data_dir, ot_workdir=args.ot_workdir,
                             overwrite=args.overwrite, progress=not args.no_progress,
                             mesh_shape=args.mesh, analysis=not args.no_analysis)
    if is_writer():
        print(summary_line(results, workdir) if results else
              f"{workdir}: trained; not analysed (--no-analysis)")
    return results


def fmt(value, digits: int = 4) -> str:
    """A metric for tables and summary lines: ``text.MISSING`` for None."""
    return number(value, f".{digits}f")


def summary_line(results: dict, workdir: Path) -> str:
    return (f"{workdir}: final train acc {fmt(results.get('final_train_accuracy'))}, test acc "
            f"{fmt(results.get('final_test_accuracy'))}, CLP {fmt(results.get('clp_accuracy'))}, "
            f"LPO {fmt(results.get('lpo_accuracy'))} -> {wdir.RunDir(workdir).report}")
