"""``analyze_run``: everything the paper shows for one run, from its workdir alone.

Reads (docs/design.md layout): ``config.json``, ``log.jsonl``,
``features/epoch_XXXX.npz`` (memory-mapped), ``label_mapping.json`` (and
``experiment.json`` when present, copied into the results), then runs
:func:`ncfine_jax.analysis.pipeline.analyze_features`, the same analysis
``python -m ncfine_jax.analyze`` runs on any network's features. Writes
``results.json``, ``report.md``, ``distance_matrices.npz`` (D per saved epoch, for the
grid figures) and ``figures/*.png`` into the workdir, each atomically.
OT accuracy is the last ``test_accuracy`` in the OT run's ``log.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ncfine_jax import manifest, workdir as wdir
from ncfine_jax.analysis.grid import grid_figures
from ncfine_jax.analysis.inputs import FEATURE_KEYS, FeatureSource, read_npz
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.analysis.outputs import load_distance_matrices
from ncfine_jax.analysis.pipeline import analyze_features
from ncfine_jax.errors import DataError
from ncfine_jax.io import load_json
from ncfine_jax.labels import LabelMapping
from ncfine_jax.metrics.registry import EPOCH_METRICS
from ncfine_jax.tensorboard import EventWriter

__all__ = ["analyze_run", "feature_epochs", "final_test_accuracy", "grid_figures",
           "load_distance_matrices", "load_features"]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} {path}: not found")
    return path


def feature_epochs(workdir: str | os.PathLike) -> dict[int, Path]:
    """Saved feature files of a workdir: epoch -> path, sorted by epoch."""
    out = {}
    for p in wdir.RunDir(workdir).feature_files():
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue  # not one of ours (e.g. a stray temp file)
    return dict(sorted(out.items()))


def load_features(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of one features file (memory-mapped where stored uncompressed); DataError when
    it is unreadable or lacks one of the six train/test arrays."""
    data = read_npz(path)
    missing = [k for k in FEATURE_KEYS if k not in data]
    if missing:
        raise DataError(f"features {path}: missing arrays {missing}")
    return data


def final_test_accuracy(workdir: str | os.PathLike) -> float:
    """Last ``test_accuracy`` in ``workdir/log.jsonl`` (used as the OT accuracy)."""
    log_path = wdir.RunDir(workdir).log
    log = load_json(log_path, "training log", DataError, lines=True)
    if not log or "test_accuracy" not in log[-1]:
        raise DataError(f"training log {log_path}: no epoch record with test_accuracy")
    return float(log[-1]["test_accuracy"])


def analyze_run(
    workdir: str | os.PathLike,
    options: AnalysisOptions | None = None,
    *,
    ot_workdir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Analyse a finished (or partly finished) run and write its report.

    Args:
        workdir: run directory (docs/design.md layout).
        options: how to analyse (``AnalysisOptions``; None = the defaults); its
            ``heatmap_epochs`` must have been saved.
        ot_workdir: workdir of the original-label run, for ``ot_accuracy``.
        class_names: original class names for figure labels.

    Returns:
        The results dict written to ``results.json`` (without NumPy arrays).
    """
    workdir = Path(workdir)
    options = (options or AnalysisOptions()).validate()
    if not workdir.is_dir():
        raise DataError(f"workdir {workdir}: not a directory")
    config = load_json(wdir.RunDir(workdir).config, "run config", DataError)
    experiment = (load_json(wdir.RunDir(workdir).experiment, "experiment record", DataError)
                  if wdir.RunDir(workdir).experiment.exists() else None)
    for what, record, shape in (("run config", config, {"config": dict, "data": dict}),
                                ("experiment record", experiment, {})):
        problem = record is not None and wdir.shape_problem(record, shape)
        if problem:
            raise DataError(f"{what} in {workdir}: damaged ({problem}); rerun with "
                            "--overwrite to start afresh")
    log = load_json(wdir.RunDir(workdir).log, "training log", DataError, lines=True)
    mapping = LabelMapping.load(_require(wdir.RunDir(workdir).mapping, "label mapping"))
    epochs = feature_epochs(workdir)
    saved = config["config"].get("save_features_at")
    if isinstance(saved, list):  # other files there (a folder linked elsewhere) are not the run's
        epochs = {e: p for e, p in epochs.items() if e in saved}
    if not epochs:
        raise DataError(f"workdir {workdir}: no features/epoch_*.npz saved yet")
    for path in epochs.values():  # the bytes training wrote, or no summary at all
        damage = manifest.verify(workdir, path.relative_to(workdir).as_posix())
        if damage is not None:
            raise DataError(f"features {path}: damaged ({damage}); rerun with --overwrite "
                            "to train afresh")
    ot_accuracy = final_test_accuracy(ot_workdir) if ot_workdir is not None else None

    last_log = log[-1] if log else {}
    sources = {e: FeatureSource(name=str(p), npz=p) for e, p in epochs.items()}
    results = analyze_features(
        sources, workdir, mapping, options, class_names=class_names,
        source=f"workdir {workdir}", ot_accuracy=ot_accuracy,
        extra_results={"final_train_accuracy": last_log.get("train_accuracy"),
                       "final_test_accuracy": last_log.get("test_accuracy"),
                       "config": config, "experiment": experiment},
        extra_analysis={"epochs_trained": last_log.get("epoch"),
                        "ot_workdir": None if ot_workdir is None else str(ot_workdir)},
        title=f"Run report: {workdir.name}", training_log=log,
    )
    write_metric_events(wdir.RunDir(workdir).tensorboard / "analysis", results)
    return results


def write_metric_events(logdir: Path, results: dict) -> None:
    """The per-epoch metrics at the saved epochs as TensorBoard scalars in ``logdir``
    (``collapse/<key>`` on the training labels, ``structure/<key>`` for MSDR and the like);
    the events of an earlier analysis there are purged (``purge_step=0``)."""
    tags = {key: f"{'collapse' if m.over_labels else 'structure'}/{key}"
            for key, m in EPOCH_METRICS.items()}
    by_epoch = {key: {int(e): v for e, v in (results.get(key) or {}).items()} for key in tags}
    events = EventWriter(logdir, purge_step=0)
    try:
        for epoch in sorted({e for values in by_epoch.values() for e in values}):
            events.scalars(epoch, {tag: by_epoch[key].get(epoch) for key, tag in tags.items()})
    finally:
        events.close()
