"""``analyze_features``: the paper's analysis of one network's features, from arrays.

The one analysis path: ``analyze_run(workdir)`` (a run trained here) and
``python -m ncfine_jax.analyze FILES`` (any network's saved features) both call it.

Per feature set (epoch or checkpoint), on the training split:
  * NC1, NC2, CDNV on the training labels, and NC3, NC4 when the classifier
    (``classifier_kernel [d, L]``, ``classifier_bias [L]``) is given; all streamed over
    row chunks (``ncfine_jax.metrics.streaming_metrics_of_arrays``), so memory-mapped
    inputs larger than memory work;
  * the class-distance matrix D and MSDR. Coarsenings: D over the original classes,
    superclass = training label. "fine": D over the training labels, superclass =
    original class. "original": D over the classes, MSDR null.
At the last feature set: CLP (coarsenings only, else null) and LPO (probe on the
original classes), both needing the test split; without one they are null and
``skipped`` says why. Steps that degenerate features make undefined (t-SNE of a label
whose features coincide, a non-finite NC value) are skipped and listed in
``results["skipped"]`` and ``report.md``, never a crash.

Every input check runs before anything is written: a bad input leaves ``out_dir``
as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ncfine_jax import console, metrics, workdir as wdir
from ncfine_jax.analysis import outputs, significance as sig
from ncfine_jax.analysis.clp import cluster_and_linear_probe, lpo_predictions
from ncfine_jax.analysis.embedding import all_rows_equal
from ncfine_jax.analysis.inputs import (FeatureSource, check_feature_set, load_feature_set,
                                        resolve_label_mapping)
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.analysis.outputs import MAX_HEATMAP_PANELS
from ncfine_jax.analysis.results import Results
from ncfine_jax.analysis.views import label_view
from ncfine_jax.errors import ConfigError
from ncfine_jax.metrics.registry import EPOCH_METRICS

# Class means whose spread is at most this fraction of their magnitude coincide: the
# differences are float32 rounding, and every NC metric a ratio of such noise.
_COINCIDE_RTOL = 1e-5

FeatureSet = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | FeatureSource


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _epoch_items(features) -> list[tuple[int, FeatureSet]]:
    """(epoch, feature set) pairs sorted by epoch; a sequence is numbered 1, 2, ...; a
    single feature set (a dict with ``train_features``) is epoch 1."""
    if isinstance(features, Mapping) and "train_features" in features:
        features = [features]
    if isinstance(features, Mapping):
        items = list(features.items())
    else:
        items = list(enumerate(features, start=1))
    if not items:
        raise ConfigError("features: no feature sets given")
    for epoch, _ in items:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ConfigError(f"features: epochs must be ints, got {epoch!r}")
    if len({int(e) for e, _ in items}) != len(items):
        raise ConfigError(f"features: epochs {[int(e) for e, _ in items]} are not distinct")
    return sorted(((int(e), s) for e, s in items), key=lambda t: t[0])


def superclass_of(mapping) -> np.ndarray:
    """The grouping D is ordered and MSDR computed by (``LabelView.superclass``)."""
    return label_view(mapping).superclass


def epoch_metrics(fs: Mapping[str, Any], mapping, chunk_rows: int | None) -> dict:
    """NC1-NC4, CDNV (training labels), D and MSDR of one checked feature set."""
    import jax

    f, y, c = fs["train_features"], fs["train_labels"], fs["train_classes"]
    view = label_view(mapping)
    out: dict[str, Any] = dict.fromkeys(EPOCH_METRICS)
    # Features that all coincide make every ratio below rounding noise over rounding noise.
    out["constant"] = all_rows_equal(f)
    out["means_coincide"] = out["constant"]
    D_labels = None
    if mapping.num_labels >= 2:
        m = metrics.streaming_metrics_of_arrays(f, y, mapping.num_labels, kernel=fs["classifier_kernel"],
                                                bias=fs["classifier_bias"], chunk_rows=chunk_rows)
        means = np.asarray(m["statistics"].mean, np.float64)
        spread = np.abs(means - means.mean(axis=0)).max()
        out["means_coincide"] |= bool(spread <= _COINCIDE_RTOL * np.abs(means).max())
        if not out["means_coincide"]:
            for k in (k for k, metric in EPOCH_METRICS.items() if metric.over_labels):
                if k in m:
                    out[k] = _finite_or_none(m[k])
        D_labels = np.asarray(m["class_distance_matrix"])
    if (view.distances_over_labels or view.labels_are_classes) and D_labels is not None:
        D = D_labels
    else:
        rows = metrics.streaming.chunk_rows_for(f.shape[1]) if chunk_rows is None else chunk_rows
        acc = metrics.ClassStatisticsAccumulator(mapping.num_classes)
        for fb, cb in metrics.array_batches(f, c, rows)():
            acc.update(fb, cb)
        D = np.asarray(jax.jit(metrics.distance_matrix_from_statistics)(acc.statistics))
    superclass = view.superclass
    out["D_finite"] = bool(np.isfinite(D).all())  # False when squares overflow float32
    if view.has_structure and not out["constant"] and out["D_finite"]:
        # validate=False: a D whose diagonal is exactly 0 (every class collapsed to a point)
        # gives a non-finite MSDR, which is reported as a skipped step, not an error.
        out["msdr"] = _finite_or_none(metrics.msdr(D, superclass, validate=False))
    out["D"] = D
    out["superclass"] = superclass
    return out


def _null_roles(fs: Mapping[str, Any], mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``LabelView.null_roles`` of a feature set's training labels and classes."""
    return label_view(mapping).null_roles(fs["train_labels"], fs["train_classes"])


def significance_request(options) -> dict:
    """What identifies an analysis' fine-structure test (``results["analysis"]``)."""
    return {"alpha": options.alpha, "permutations": options.permutations,
            "bootstrap": options.bootstrap, "seed": options.seed}


def _fine_structure(options, mapping, epoch: int, msdr_tests: dict, clp, last, tested: bool,
                    asked: bool) -> dict:
    """results["fine_structure"] of an analysis (see ``analysis.significance``)."""
    if not asked:
        return sig.fine_structure_block(options, epoch, msdr_tests, None, None,
                                        reason="not run (significance=False)")
    if not tested:
        return sig.fine_structure_block(options, epoch, msdr_tests, None, None, reason=(
            f"label kind {mapping.kind!r}: no label merges classes, no fine structure to test"))
    clusters = clp_test = None
    if clp is not None:
        ks = [rec["k"] for rec in clp["per_superclass"]]
        clusters = sig.cluster_significance(
            np.asarray(clp["reconstructed_train_labels"]), np.asarray(last["train_labels"], np.int64),
            np.asarray(last["train_classes"], np.int64), mapping.classes_of_label, ks, options)
        if clp.get("test_predicted_classes") is not None:
            lpo_predicted = last.get("lpo_predicted_classes")
            clp_test = sig.clp_significance(
                np.asarray(clp["test_predicted_classes"]), np.asarray(last["test_labels"], np.int64),
                np.asarray(last["test_classes"], np.int64), options,
                lpo_predicted=None if lpo_predicted is None else np.asarray(lpo_predicted))
    return sig.fine_structure_block(options, epoch, msdr_tests, clusters, clp_test)


def pick_epochs(epochs: Sequence[int], n: int) -> list[int]:
    """At most n epochs, evenly spread, always keeping the first and the last."""
    epochs = list(epochs)
    if len(epochs) <= n:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, n)).astype(int))
    return [epochs[i] for i in idx]


@dataclasses.dataclass
class Analysis:
    """What ``analyze`` computed, before anything is written.

    ``results`` is the content of results.json (JSON-ready; the figure list, empty here,
    and the timings of writing are filled in by ``write_analysis``); the rest is what the
    figures and the distance file need (NumPy, not for JSON).
    """
    results: Results
    mapping: Any  # the LabelMapping
    per_epoch: dict  # epoch -> metrics, with "D" [C, C] and "superclass" [C]
    epochs: list  # the analysed epochs, in order
    last: dict  # the last epoch's feature set
    clp: dict | None  # ``cluster_and_linear_probe``'s result (None: not a coarsening)
    timings: dict  # step -> seconds
    started: float  # time.perf_counter() when the analysis began


def analyze(
    features: Mapping[int, FeatureSet] | Sequence[FeatureSet],
    mapping=None,
    options: AnalysisOptions | None = None,
    *,
    num_coarse: int | None = None,
    class_names: Sequence[str] | None = None,
    source: str | None = None,
    ot_accuracy: float | None = None,
    extra_results: Mapping[str, Any] | None = None,
    extra_analysis: Mapping[str, Any] | None = None,
) -> Analysis:
    """Analyse feature sets; reads them, writes nothing.

    Args:
        features: epoch -> feature set, a sequence of feature sets (epochs 1, 2, ...)
            or one feature set (epoch 1).
            A feature set is a dict of arrays (keys in ``ncfine_jax.analysis.inputs``;
            NumPy arrays, memmaps or anything ``np.asarray`` takes), a zero-argument
            callable returning one (loaded when its epoch is analysed), or a
            ``FeatureSource``.
        mapping: a ``LabelMapping`` or a path to its JSON; else ``num_coarse``; else
            inferred from the first set's (train_labels, train_classes) pairs.
        options: how to analyse (``AnalysisOptions``; None = the defaults). The
            fine-structure test's block is ``results["fine_structure"]``
            (``ncfine_jax.analysis.significance``).
        num_coarse: C~, for training labels = class mod C~.
        class_names: names of the original classes (checked against the classes).
        source: what the features are, for figure captions and results.json (e.g. a
            workdir or file names); default "arrays".
        ot_accuracy: accuracy of a network trained on the original classes (OT bar).
        extra_results: values of the run's own fields of ``Results`` (``RUN_FIELDS``:
            its final accuracies, config and experiment record).
        extra_analysis: keys added to ``results["analysis"]``.

    Raises:
        ConfigError / DataError: bad options or input.
    """
    opts = (options or AnalysisOptions()).validate()
    items = _epoch_items(features)
    epochs = [e for e, _ in items]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    first, mapping = _first_set_and_mapping(items, opts, mapping, num_coarse, class_names)
    asked = opts.tests_significance
    sig_options = opts.significance_options()
    tested = asked and label_view(mapping).has_structure
    loaded = [first]  # handed over: the first set is freed once its epoch is measured
    del first
    with console.phase(f"NC metrics and D at {len(items)} epoch(s)"
                       + (", with MSDR's permutation null" if tested else "")):
        per_epoch, msdr_tests, inputs, last, msdr_null_s = _measure_epochs(
            [(epoch, fs, _where(epoch, fs)) for epoch, fs in items], loaded, mapping,
            opts.chunk_rows, sig_options if tested else None)
    timings["nc_metrics"] = time.perf_counter() - t0 - msdr_null_s
    skipped = _skipped_metrics(per_epoch, mapping)
    lpo, clp = _probes(last, mapping, skipped, timings, opts)
    t1 = time.perf_counter()
    with console.phase("fine-structure test against the permutation null") if tested \
            else contextlib.nullcontext():
        results_fine = _fine_structure(sig_options, mapping, epochs[-1], msdr_tests, clp,
                                       last, tested, asked)
    timings["significance"] = time.perf_counter() - t1 + msdr_null_s
    analysis = {
        "source": source or "arrays", "epoch": epochs[-1], "epochs_trained": None,
        "reduce": opts.reduce if clp is not None else None, "seed": opts.seed,
        "k_selection": opts.k_selection, "max_tsne_points": opts.max_tsne_points,
        "significance": significance_request(sig_options) if asked else None,
        "ot_workdir": None, "inputs": inputs, **(extra_analysis or {})}
    results = _results(per_epoch, epochs, mapping, results_fine, clp, lpo, skipped, analysis,
                       ot_accuracy=ot_accuracy)
    try:
        results = results.with_run(extra_results or {})
    except ValueError as e:
        raise ConfigError(f"extra_results: {e}") from None
    return Analysis(results, mapping, per_epoch, epochs, last, clp, timings, t0)


def write_analysis(done: Analysis, out_dir: str | os.PathLike, options: AnalysisOptions,
                   *, class_names: Sequence[str] | None = None, title: str | None = None,
                   training_log: Sequence[Mapping] | None = None) -> dict:
    """Write an ``Analysis`` to ``out_dir``: figures/ (when ``options.make_figures``; with
    ``training_log``, a trained run's log.jsonl records, also its training curves),
    distance_matrices.npz, results.json and report.md (files of the same names are
    replaced; the directory is created). Returns the results dict written."""
    out_dir = Path(out_dir)
    results, per_epoch, timings = done.results, done.per_epoch, done.timings
    D_by_epoch = {e: m["D"] for e, m in per_epoch.items()}
    superclass = per_epoch[done.epochs[-1]]["superclass"]
    if options.make_figures:
        t1 = time.perf_counter()
        with console.phase("figures"):
            results.figures = outputs.write_figures(
                out_dir, done.mapping, done.last, done.clp, per_epoch, D_by_epoch, superclass,
                _heatmap_epochs(options, done.epochs), class_names, results, options.seed,
                options.tsne_backend, options.figure_tsne_points, results.analysis["source"],
                results.analysis["inputs"], training_log)
        timings["figures"] = time.perf_counter() - t1
    outputs.save_distance_matrices(wdir.RunDir(out_dir).distances, D_by_epoch, superclass)
    timings["total"] = time.perf_counter() - done.started
    results.analysis["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return outputs.write_results(out_dir, results, done.mapping,
                                 title or f"Feature analysis: {out_dir.name}")


def analyze_features(
    features: Mapping[int, FeatureSet] | Sequence[FeatureSet],
    out_dir: str | os.PathLike,
    mapping=None,
    options: AnalysisOptions | None = None,
    *,
    num_coarse: int | None = None,
    class_names: Sequence[str] | None = None,
    source: str | None = None,
    ot_accuracy: float | None = None,
    extra_results: Mapping[str, Any] | None = None,
    extra_analysis: Mapping[str, Any] | None = None,
    title: str | None = None,
    training_log: Sequence[Mapping] | None = None,
) -> dict:
    """``analyze`` then ``write_analysis``: results.json, report.md, distance_matrices.npz
    and figures/ in ``out_dir``. Arguments as there (``title``: the report.md heading,
    default "Feature analysis: <out_dir name>"). Every check runs before anything is
    written. Returns the results dict written to results.json."""
    opts = (options or AnalysisOptions()).validate()
    done = analyze(features, mapping, opts, num_coarse=num_coarse, class_names=class_names,
                   source=source, ot_accuracy=ot_accuracy, extra_results=extra_results,
                   extra_analysis=extra_analysis)
    return write_analysis(done, out_dir, opts, class_names=class_names, title=title,
                          training_log=training_log)


def _where(epoch: int, fs) -> str:
    """How a feature set is named in error lines."""
    return fs.name if isinstance(fs, FeatureSource) else f"features (epoch {epoch})"


def _heatmap_epochs(opts: AnalysisOptions, epochs: list[int]) -> list[int]:
    """The epochs whose D matrices the heatmap figure shows."""
    return (list(opts.heatmap_epochs) if opts.heatmap_epochs is not None
            else pick_epochs(epochs, MAX_HEATMAP_PANELS))


def _first_set_and_mapping(items, opts: AnalysisOptions, mapping, num_coarse, class_names):
    """(the first epoch's loaded feature set, its ``LabelMapping``), the options checked
    against the epochs and the names against the classes (ConfigError otherwise)."""
    epochs = [e for e, _ in items]
    if opts.heatmap_epochs is not None:
        unknown = sorted(set(opts.heatmap_epochs) - set(epochs))
        if unknown:
            raise ConfigError(f"heatmap_epochs: epochs {unknown} were not analysed (analysed: {epochs})")
    first = load_feature_set(items[0][1])
    mapping = resolve_label_mapping(first, mapping, num_coarse,
                                    None if class_names is None else len(class_names), _where(*items[0]))
    if class_names is not None and len(class_names) != mapping.num_classes:
        raise ConfigError(f"class_names: {len(class_names)} names for {mapping.num_classes} classes")
    return first, mapping


def _measure_epochs(items, loaded: list, mapping, chunk_rows, options):
    """The NC metrics of every epoch, each set loaded, checked and measured in turn (at
    most the set being measured and the last one in memory).

    Args:
      items: (epoch, feature set, where it comes from) per epoch, in order.
      loaded: [the first epoch's set, already loaded]; emptied.
      mapping: the ``LabelMapping``.
      chunk_rows: rows per chunk of the streamed metrics.
      options: ``SignificanceOptions`` of the MSDR permutation null (None: not tested).

    Returns:
      (metrics per epoch, MSDR test per epoch (None where not tested), input summary per
      epoch, the last epoch's checked arrays, seconds spent on the MSDR null).
    """
    per_epoch: dict[int, dict] = {}
    msdr_tests: dict[int, dict | None] = {}
    inputs: dict[int, dict] = {}
    msdr_null_s, last = 0.0, None
    last_epoch = items[-1][0]
    for i, (epoch, fs, where) in enumerate(items):
        checked = check_feature_set(loaded.pop() if i == 0 else load_feature_set(fs),
                                    mapping, where)
        if options is not None:  # nothing is written before this loop ends
            sig.check_groups(*_null_roles(checked, mapping)[1:],
                             label_view(mapping).unit)
        per_epoch[epoch] = epoch_metrics(checked, mapping, chunk_rows)
        msdr_tests[epoch] = None
        if options is not None and per_epoch[epoch]["msdr"] is not None:
            t1 = time.perf_counter()
            groups, members, _ = _null_roles(checked, mapping)
            msdr_tests[epoch] = sig.msdr_significance(
                checked["train_features"], groups, members, per_epoch[epoch]["superclass"],
                options, salt=epoch, interval=epoch == last_epoch)
            msdr_null_s += time.perf_counter() - t1
        test = checked["test_features"]
        inputs[epoch] = {
            "source": where,
            "n_train": int(checked["train_features"].shape[0]),
            "n_test": None if test is None else int(test.shape[0]),
            "dim": int(checked["train_features"].shape[1]),
            "classifier": checked["classifier_kernel"] is not None,
        }
        last = checked if epoch == last_epoch else None
    return per_epoch, msdr_tests, inputs, last, msdr_null_s


def _skipped_metrics(per_epoch: dict[int, dict], mapping) -> list[dict]:
    """``results["skipped"]`` entries of the NC metrics and MSDR that could not be
    computed, with why."""
    skipped: list[dict] = []
    for epoch, m in per_epoch.items():
        if m["constant"]:
            skipped.append({"step": f"NC1-NC4, CDNV and MSDR at epoch {epoch}",
                            "reason": "the training features all coincide (to float32 rounding)"})
            continue
        if m["means_coincide"]:
            skipped.append({"step": f"NC1-NC4 and CDNV at epoch {epoch}",
                            "reason": "the means of the training labels coincide (to float32 rounding)"})
            continue
        bad = [metric.title for k, metric in EPOCH_METRICS.items() if metric.over_labels
               and not metric.needs_classifier and m[k] is None and mapping.num_labels >= 2]
        if bad:
            skipped.append({"step": f"{'/'.join(bad)} at epoch {epoch}", "reason": "not finite"})
        if not m["D_finite"]:
            skipped.append({"step": f"MSDR at epoch {epoch}",
                            "reason": "D is not finite: squared feature distances overflow float32"})
        elif m["msdr"] is None and label_view(mapping).has_structure:
            skipped.append({"step": f"MSDR at epoch {epoch}",
                            "reason": "not finite: the classes' features are constant (D has a zero diagonal)"})
    return skipped


def _probes(last: dict, mapping, skipped: list[dict], timings: dict[str, float],
            opts: AnalysisOptions):
    """(LPO accuracy, CLP result) on the last epoch's features (None where they cannot be
    computed, with a ``skipped`` entry); their seconds added to ``timings``."""
    lpo, clp = None, None
    if last["test_features"] is not None:
        t1 = time.perf_counter()
        with console.phase("LPO (linear probe on the original classes)"):
            predicted = lpo_predictions(last["train_features"], last["train_classes"],
                                        last["test_features"], probe_kwargs=opts.probe_kwargs)
            last["lpo_predicted_classes"] = predicted  # the paired CLP - LPO interval
            lpo = float(np.mean(predicted == np.asarray(last["test_classes"])))
        timings["lpo"] = time.perf_counter() - t1
    else:
        skipped.append({"step": "LPO and CLP test accuracies", "reason": "no test_* arrays given"})
    if label_view(mapping).is_coarsening:
        t1 = time.perf_counter()
        with console.phase(f"CLP ({opts.reduce} + KMeans inside each of the "
                           f"{mapping.num_labels} labels, then a linear probe)"):
            clp = cluster_and_linear_probe(
                last["train_features"], last["train_labels"], last["train_classes"],
                last["test_features"], last["test_labels"], last["test_classes"],
                mapping.classes_of_label, reduce=opts.reduce, seed=opts.seed,
                k_selection=opts.k_selection, max_tsne_points=opts.max_tsne_points,
                tsne_backend=opts.tsne_backend, probe_kwargs=opts.probe_kwargs)
        timings["clp"] = time.perf_counter() - t1
        for rec in clp["per_superclass"]:
            if rec["constant_features"]:
                skipped.append({"step": f"CLP clustering of training label {rec['label']} "
                                        f"(classes {rec['classes']})",
                                "reason": "its features coincide: one cluster, no t-SNE (CLP at chance there)"})
    return lpo, clp


def _results(per_epoch, epochs, mapping, fine_structure, clp, lpo, skipped, analysis, *,
             ot_accuracy) -> Results:
    """The analysis' ``Results`` (run fields None; figures and timings filled in later)."""
    def of_clp(key):
        return None if clp is None else clp[key]

    return Results(
        fine_structure=fine_structure,
        clp_accuracy=of_clp("clp_accuracy"),
        clp_accuracy_train_mapping=of_clp("clp_accuracy_train_mapping"),
        lpo_accuracy=lpo,
        ot_accuracy=ot_accuracy,
        ari=of_clp("ari"),
        nmi=of_clp("nmi"),
        metrics={k: {e: per_epoch[e][k] for e in epochs} for k in EPOCH_METRICS},
        final_train_accuracy=None,
        final_test_accuracy=None,
        config=None,
        experiment=None,
        label_mapping=mapping.to_dict(),
        analysis=analysis,
        clp_details=None if clp is None else {
            k: clp[k] for k in ("clp_accuracy_label_routed", "cluster_accuracy_train",
                                "mapping_train", "mapping_test", "num_reconstructed_labels",
                                "probe_iterations", "probe_converged", "per_superclass")
        },
        skipped=skipped,
        figures=[],
    )
