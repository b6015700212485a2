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

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncfine_jax import console, runlog, tensorboard, workdir as wdir
from ncfine_jax.analysis import analyze_run
from ncfine_jax.analysis.options import AnalysisOptions, SignificanceOptions
from ncfine_jax.analysis.pipeline import significance_request
from ncfine_jax.data import load_dataset
from ncfine_jax.distributed import agree, initialize_from_args, is_writer
from ncfine_jax.errors import ConfigError, NcfineError
from ncfine_jax.experiment.config import (ExperimentConfig, config_from_args, default_workdir,
                                          flag_of, identity, migrate)
from ncfine_jax.experiment.registry import EXPERIMENTS, ExperimentSpec
from ncfine_jax.io import atomic_write_json
from ncfine_jax.labels import COARSE_KINDS, LabelMapping, transform_labels
from ncfine_jax.metrics.registry import EPOCH_METRICS
from ncfine_jax.models.registry import BACKBONES
from ncfine_jax.text import number, plural, squashed
from ncfine_jax.train import TrainData, train
from ncfine_jax.train.compile_cache import enable_compile_cache
from ncfine_jax.train.config import FieldError
from ncfine_jax.train.layout import check_mesh_shape, default_mesh_shape
from ncfine_jax.train.preflight import preflight


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
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        raise ConfigError(f"--num-coarse {num_coarse}: does not divide the "
                          f"{num_classes} classes of {config.data.name}; choose one of "
                          f"{', '.join(map(str, divisors))}")
    if kind == "cifar100_superclass" and num_classes != 100:
        raise ConfigError(f"--data {config.data.name}: the official superclasses need CIFAR-100 "
                          f"(100 classes), got {num_classes} classes")
    if not BACKBONES[config.arch].takes_vectors and not dataset.is_image:
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
    train_labels, test_labels, mapping = transform_labels(
        kind, dataset.y_train, dataset.y_test, num_classes, num_coarse=num_coarse,
        seed=config.seed, y_train_coarse=getattr(dataset, "y_train_coarse", None),
        y_test_coarse=getattr(dataset, "y_test_coarse", None))
    train_data = TrainData.from_dataset(dataset, train_labels, test_labels,
                                        num_labels=mapping.num_labels)
    return PreparedData(dataset, train_data, mapping, config.train.validate())


def check_layout(config: ExperimentConfig, mesh_shape: tuple[int, int] | None,
                 num_models: int) -> tuple[int, int]:
    """The (M, D) layout of ``num_models`` models trained together on every device
    (``mesh_shape`` or the default); ConfigError unless it fits the devices, the models
    and the batch sizes."""
    import jax

    devices = jax.device_count()
    shape = mesh_shape or default_mesh_shape(num_models, devices)
    check_mesh_shape(shape, num_models, devices, name=f"--mesh {shape[0]}x{shape[1]}")
    return shape


def check_training(config: ExperimentConfig, prepared: PreparedData, data_devices: int
                   ) -> PreparedData:
    """``train.preflight`` of the run on its data and devices, errors worded by flag; the
    prepared data with the training config as it will train (augmentation off for feature
    vectors)."""
    try:
        train_config = preflight(prepared.train_config, len(prepared.train_data.x_train),
                                 bool(prepared.dataset.is_image), data_devices)
    except FieldError as e:
        remedy = ""
        if e.field == "batch_size" and "exceeds" in e.why:
            remedy = (f"; use --batch-size {len(prepared.train_data.x_train)} or less"
                      + (" or a larger --subset" if config.data.subset else ""))
        name = flag_of(e.field) if flag_of(e.field) != e.field else e.field.replace("_", " ")
        raise ConfigError(f"{name} {e.value}: {e.why}{remedy}") from None
    return dataclasses.replace(prepared, train_config=train_config)


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


def significance_options(config: ExperimentConfig) -> SignificanceOptions:
    """The run's fine-structure test: its permutations, and a seed of its own, derived
    from the run's identity (runs with the same class arrays do not share permutation
    matrices; the same run always draws the same ones)."""
    digest = hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode()).digest()
    return SignificanceOptions(seed=int.from_bytes(digest[:4], "little"),
                               permutations=config.analysis.permutations)


def analysis_request(config: ExperimentConfig, ot_workdir) -> dict:
    """The ``results.json["analysis"]`` values this run's analysis must have."""
    return {"epochs_trained": config.epochs, "reduce": config.analysis.clp_reduce,
            "max_tsne_points": config.analysis.clp_max_tsne_points, "seed": config.seed,
            "significance": significance_request(significance_options(config)),
            "ot_workdir": None if ot_workdir is None else str(ot_workdir)}


# How the start block names a changed key of ``analysis_request``.
ANALYSIS_NAMES = {"epochs_trained": "--epochs", "reduce": "--clp-reduce",
                  "max_tsne_points": "--clp-max-tsne-points", "seed": "--seed",
                  "significance": "the fine-structure test (--permutations)",
                  "ot_workdir": "--ot-workdir"}


def why_analyse_again(workdir: Path, config: ExperimentConfig, ot_workdir) -> str | None:
    """Why ``workdir/results.json`` is not this run's analysis, in a few words (None: it
    is; ``wdir.why_analyse_again`` with the record migrated)."""
    return wdir.why_analyse_again(workdir, config.to_dict(), analysis_request(config, ot_workdir),
                                  migrate, keys=EPOCH_METRICS, names=ANALYSIS_NAMES)


def results_are_current(workdir: Path, config: ExperimentConfig, ot_workdir) -> bool:
    """Whether ``workdir/results.json`` is this run's analysis (``why_analyse_again``)."""
    return why_analyse_again(workdir, config, ot_workdir) is None


def analyze(workdir: Path, config: ExperimentConfig, ot_workdir, class_names) -> dict:
    """``analyze_run`` of a trained run unless its results.json is already this analysis
    (the one re-analysis rule of single runs and grid points)."""
    if results_are_current(workdir, config, ot_workdir):
        return wdir.read_json_file(wdir.RunDir(workdir).results, "results")
    console.say(f"analysis -> {wdir.RunDir(workdir).report}")
    options = AnalysisOptions(reduce=config.analysis.clp_reduce, seed=config.seed,
                              max_tsne_points=config.analysis.clp_max_tsne_points,
                              significance=significance_options(config))
    return analyze_run(workdir, options, ot_workdir=ot_workdir, class_names=class_names)


def write_header(workdir: Path, config: ExperimentConfig, mapping) -> None:
    atomic_write_json(wdir.RunDir(workdir).experiment, config.to_dict())
    mapping.save(wdir.RunDir(workdir).mapping)


def run_experiment(config: ExperimentConfig, workdir: str | Path, *, data_dir: str | None = None,
                   ot_workdir: str | None = None, overwrite: bool = False,
                   progress: bool = True, prepared: PreparedData | None = None,
                   mesh_shape: tuple[int, int] | None = None, analysis: bool = True) -> dict:
    """Train (or resume) one experiment and write its analysis; returns results.json.

    Every input error is raised before anything in ``workdir`` changes: first what needs
    no workdir (the data, the flags against the data, the device layout, the OT run), then
    the workdir. The workdir is locked from the first write to the end of the analysis. In
    a multi-process run every process trains, process 0 alone writes (and returns the
    results; the others {}). With ``analysis=False`` the run is only trained (returns {}).
    With the console on (``ncfine_jax.console``) it says what it runs and each slow phase.
    """
    workdir = Path(workdir)
    # "auto" precision resolved here, after any jax.distributed.initialize: the record
    # and the run identity hold the precision that actually ran.
    config = dataclasses.replace(config, train=config.train.resolved()).validate()
    spec = EXPERIMENTS.get(config.experiment)
    console.say(f"{config.experiment}" + (f": {spec.description}" if spec else ""))
    if prepared is None:
        with console.phase("loading the data") as info:
            prepared = prepare_data(config, data_dir)
            info["detail"] = data_text(config, prepared.dataset)
    if mesh_shape is not None and mesh_shape[0] != 1:
        raise ConfigError(f"--mesh {mesh_shape[0]}x{mesh_shape[1]}: a single run trains one "
                          "model; use a models axis of 1 (1xD)")
    shape = check_layout(config, mesh_shape, 1)
    prepared = check_training(config, prepared, shape[1])
    check_ot_workdir(ot_workdir, prepared.dataset.num_classes)
    state = wdir.inspect(workdir, wdir.EXPERIMENT_FILE, config.identity(), identity, overwrite)
    console.block(f"-> {workdir}", start_rows(config, prepared, shape, run_state(
        workdir, config, ot_workdir, state, analysis), workdir))
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


def data_text(config: ExperimentConfig, dataset) -> str:
    """The data of a run in a few words: sizes, sample shape, classes."""
    shape = "x".join(map(str, np.shape(dataset.x_train)[1:]))
    kind = "images" if dataset.is_image else "feature vectors"
    subset = " (class-stratified subset)" if config.data.subset else ""
    return (f"{len(dataset.x_train):,} train / {len(dataset.x_test):,} test {kind} of "
            f"{shape}, {dataset.num_classes} classes{subset}")


def run_state(workdir: Path, config: ExperimentConfig, ot_workdir, state: str,
              analysis: bool) -> str:
    """What this command will do in ``workdir`` (``wdir.inspect``'s state, made specific)."""
    if state == "fresh":
        return "new run"
    if state == "replace":
        return "replacing the run there (--overwrite): a new run"
    log = wdir.RunDir(workdir).log
    try:
        logged = {r["epoch"] for _, r in runlog.read_log_lines(log, writer=False)
                  } if log.is_file() else set()
    except NcfineError:  # said here in a word; training's own check of the log says why
        logged = set()
    done = 0
    while done + 1 in logged:
        done += 1
    if done < config.epochs:
        return f"resuming after epoch {done} of {config.epochs}"
    if not analysis:
        return "already trained (--no-analysis)"
    why = why_analyse_again(workdir, config, ot_workdir)
    if why is None:
        return "finished and analysed: nothing to do"
    return f"trained: analysing again ({why})"


def start_rows(config: ExperimentConfig, prepared: PreparedData, shape: tuple[int, int],
               state: str, workdir: Path) -> list[tuple[str, str]]:
    """The rows of a run's start block."""
    import jax

    t, mapping = prepared.train_config, prepared.mapping
    backbone = BACKBONES[t.arch]
    width = backbone.default_width if t.width is None else t.width
    per_label = sorted({len(c) for c in mapping.classes_of_label})
    labels = (f"{mapping.kind}: {mapping.num_labels} labels, "
              f"{'/'.join(map(str, per_label))} original class(es) each")
    steps = len(prepared.train_data.x_train) // t.batch_size
    augment = ("pad-4 random crop + flip" if t.augment else
               "off" if prepared.dataset.is_image else "none (feature vectors)")
    devices = jax.devices()
    return [
        ("run", state),
        ("model", f"{t.arch}, width {width} ({backbone.features(width)}-d features), "
                  f"{t.precision}"),
        ("data", f"{config.data.name}: {data_text(config, prepared.dataset)}"),
        ("labels", labels),
        ("training", f"{t.epochs} epochs x {steps} steps of {t.batch_size}, SGD lr {t.lr:g} "
                     f"({t.schedule} schedule), weight decay {t.weight_decay:g}, momentum "
                     f"{t.momentum:g}, seed {t.seed}"),
        ("augmentation", augment),
        ("features", "saved at epoch(s) " + ", ".join(map(str, t.save_features_at))),
        ("devices", f"{plural(len(devices), devices[0].platform + ' device')} in "
                    f"{plural(jax.process_count(), 'process')}, mesh {shape[0]}x{shape[1]}"),
        ("live curves", tensorboard.how_to_view(workdir)),
    ]


def run_from_args(spec: ExperimentSpec, args) -> dict:
    """Run what parsed flags ask for (``cli.build_parser``): the body of every experiment
    script once its flags have parsed."""
    config = config_from_args(spec.defaults, args)
    console.enable()
    enable_compile_cache()
    initialize_from_args(args)
    workdir = Path(args.workdir) if args.workdir else default_workdir(config, spec.defaults)
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
