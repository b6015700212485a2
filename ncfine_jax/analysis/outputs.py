"""What an analysis writes: figures/, distance_matrices.npz, results.json, report.md.

Every figure carries a caption naming what it was computed from (source, epoch,
number of samples). A figure that degenerate features make undefined (t-SNE or PCA of
points that all coincide) is not drawn; the reason goes to ``results["skipped"]`` and
report.md, and an older file of that name in ``figures/`` is removed so no stale
figure sits beside the new report.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ncfine_jax import workdir as wdir
from ncfine_jax.analysis import figures as figs
from ncfine_jax.analysis.embedding import all_rows_equal, pca, tsne
from ncfine_jax.analysis.inputs import NPZ_ERRORS
from ncfine_jax.analysis.regime import COLLAPSE_FACTOR, TERMINAL_ACCURACY, terminal_phase
from ncfine_jax.analysis.results import Results
from ncfine_jax.analysis.views import label_view
from ncfine_jax.errors import DataError
from ncfine_jax.io import atomic_save_npz, atomic_write_json, atomic_write_text
from ncfine_jax.labels import class_names_of_labels
from ncfine_jax.metrics.registry import EPOCH_METRICS
from ncfine_jax.models.registry import BACKBONES
from ncfine_jax.text import interval, number, squashed

MAX_HEATMAP_PANELS = 6
# Points in the PCA figure (a seeded subsample; PCA is fitted on the same points).
PCA_FIGURE_POINTS = 5000


def label_names(mapping, names: Sequence[str]) -> list[str]:
    """Readable name per training label: "airplane+dog" (coarsenings), "cat/a" (fine)."""
    if not label_view(mapping).is_refinement:
        return class_names_of_labels(mapping, names)
    seen: dict[int, int] = {}
    out = []
    for cs in mapping.classes_of_label:
        i = seen.get(cs[0], 0)
        seen[cs[0]] = i + 1
        out.append(f"{names[cs[0]]}/{chr(ord('a') + i) if i < 26 else i}")
    return out


def _n(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def write_figures(out_dir: Path, mapping, last: Mapping[str, Any], clp, per_epoch, D_by_epoch,
                  superclass, chosen: Sequence[int], class_names, results: Results, seed: int,
                  tsne_backend, figure_tsne_points: int, source: str, inputs: Mapping[int, dict],
                  training_log: Sequence[Mapping] | None = None) -> list[str]:
    """Draw the run figures into ``out_dir/figures``; returns their paths relative to ``out_dir``.

    ``training_log`` (a trained run's log.jsonl records) adds the training curves.
    Appends to ``results.skipped`` for every figure not drawn.
    """
    fig_dir = wdir.RunDir(out_dir).figures
    written: list[Path] = []
    skipped = results.skipped
    names = list(class_names) if class_names is not None else [str(i) for i in range(mapping.num_classes)]
    lnames = label_names(mapping, names)
    last_epoch = max(per_epoch)
    n_train, n_test = inputs[last_epoch]["n_train"], inputs[last_epoch]["n_test"]
    epochs = sorted(per_epoch)
    sizes = sorted({inputs[e]["n_train"] for e in epochs})
    n_text = f"n = {_n(sizes[0])}" if len(sizes) == 1 else f"n = {_n(sizes[0])}-{_n(sizes[-1])}"

    if training_log:
        written.append(figs.plot_training_curves(
            training_log, fig_dir / wdir.TRAINING_FIGURE,
            nc1={e: per_epoch[e]["nc1"] for e in epochs},
            msdr={e: per_epoch[e]["msdr"] for e in epochs}, title="Training",
            caption=f"{source}; log.jsonl, epochs 1-{training_log[-1]['epoch']}; NC1 (training "
                    f"labels) and MSDR at epochs {', '.join(map(str, epochs))}"))
    written.append(figs.plot_nc_curves(
        {m.title: {e: per_epoch[e][k] for e in epochs}
         for k, m in EPOCH_METRICS.items() if m.plotted},
        fig_dir / wdir.NC_CURVES_FIGURE, title="Neural-collapse metrics on the training labels",
        caption=f"{source}; epochs {', '.join(map(str, epochs))}; {n_text} training samples per epoch"))

    if label_view(mapping).distances_over_labels:
        tick_names, what = lnames, "training labels, grouped by original class"
    else:
        tick_names, what = names, "original classes, grouped by training label"
    written.append(figs.plot_distance_heatmaps(
        {e: D_by_epoch[e] for e in chosen}, superclass, fig_dir / wdir.HEATMAPS_FIGURE,
        class_names=tick_names, title=f"class-distance matrix D ({what})",
        caption=f"{source}; epochs {', '.join(map(str, sorted(chosen)))}; {n_text} training samples"))

    tsne_path = _tsne_figure(fig_dir, mapping, last, clp, names, lnames, seed, tsne_backend,
                             figure_tsne_points, skipped,
                             caption=f"{source}; epoch {last_epoch}; training samples (n = {_n(n_train)})")
    if tsne_path is not None:
        written.append(tsne_path)

    x = last["train_features"]
    rows = np.arange(x.shape[0])
    if rows.size > PCA_FIGURE_POINTS:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, PCA_FIGURE_POINTS, replace=False))
    sample = np.asarray(x[rows])
    if all_rows_equal(sample):
        skipped.append({"step": "figure pca.png", "reason": f"the training features at epoch {last_epoch} "
                                                            "all coincide: no principal direction"})
    else:
        written.append(figs.plot_pca(
            pca(sample, 2, seed), last["train_classes"][rows], last["train_labels"][rows], fig_dir / wdir.PCA_FIGURE,
            class_names=names, title="PCA of the training features", seed=seed,
            max_points=PCA_FIGURE_POINTS,
            caption=f"{source}; epoch {last_epoch}; {_n(rows.size)} of {_n(n_train)} training samples"))

    bars = {"CLP": results.clp_accuracy, "CLP (train mapping)": results.clp_accuracy_train_mapping,
            "LPO": results.lpo_accuracy, "OT": results.ot_accuracy}
    written.append(figs.plot_accuracy_bars(
        {"test accuracy on original classes": bars}, fig_dir / wdir.ACCURACY_FIGURE, title="CLP / LPO / OT",
        caption=f"{source}; epoch {last_epoch}; {_n(n_train)} training / {_n(n_test)} test samples"))

    names_written = {p.name for p in written}
    for name in wdir.RUN_FIGURES:  # a figure not drawn this time must not stay from an older analysis
        if name not in names_written:
            with contextlib.suppress(FileNotFoundError):
                (fig_dir / name).unlink()
    return [str(Path(p).relative_to(out_dir)) for p in written]


def _tsne_figure(fig_dir, mapping, last, clp, names, lnames, seed, tsne_backend, figure_tsne_points,
                 skipped, caption) -> Path | None:
    """t-SNE per group: coarsenings group by training label and colour by class; "fine"
    groups by original class and colours by fine label; "original" has no groups."""
    view = label_view(mapping)
    if not view.has_structure:
        return None
    x, y, c = last["train_features"], last["train_labels"], last["train_classes"]
    if view.is_refinement:
        groups = [np.flatnonzero(c == k) for k in range(mapping.num_classes)]
        colour, titles, colour_names = y, names, lnames
    else:
        groups = [np.flatnonzero(y == k) for k in range(mapping.num_labels)]
        colour, titles, colour_names = c, lnames, names
    embeddings = clp["embeddings"] if clp is not None else [None] * len(groups)
    rng = np.random.default_rng(seed)
    panels, constant = [], []
    for i, g in enumerate(groups):
        if embeddings[i] is not None:
            panels.append((embeddings[i]["points"], c[embeddings[i]["index"]]))
            continue
        if g.size > figure_tsne_points:
            g = np.sort(rng.choice(g, figure_tsne_points, replace=False))
        points = np.asarray(x[g])
        if g.size < 2:
            panels.append(None)
        elif all_rows_equal(points):
            panels.append("features coincide:\nno t-SNE")
            constant.append(titles[i])
        else:
            panels.append((tsne(points, seed=seed, backend=tsne_backend), colour[g]))
    if constant:
        skipped.append({"step": f"t-SNE panels {', '.join(constant)} of tsne_superclasses.png",
                        "reason": "the group's features coincide (t-SNE is undefined)"})
    if all(p is None or isinstance(p, str) for p in panels):
        skipped.append({"step": "figure tsne_superclasses.png", "reason": "no group has an embedding"})
        return None
    return figs.plot_tsne_grid(panels, fig_dir / wdir.TSNE_FIGURE, panel_titles=titles,
                               colour_names=colour_names, title="t-SNE of training features per group",
                               seed=seed, caption=caption)


def save_distance_matrices(path: Path, D_by_epoch: Mapping[int, np.ndarray], superclass) -> Path:
    """D per epoch and the grouping (read back by :func:`load_distance_matrices`)."""
    return atomic_save_npz(
        path, epochs=np.asarray(list(D_by_epoch), np.int32),
        superclass_of_class=np.asarray(superclass, np.int32),
        **{f"epoch_{e:04d}": np.asarray(D, np.float32) for e, D in D_by_epoch.items()},
    )


def load_distance_matrices(workdir: str | os.PathLike) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """D per saved epoch and the grouping used, as written by an analysis.

    Returns:
        ({epoch: [C, C] float32}, superclass_of_class [C] int32).
    """
    path = wdir.RunDir(workdir).distances
    if not path.exists():
        raise DataError(f"distance matrices {path}: not found")
    try:
        with np.load(path) as z:
            mats = {int(e): np.asarray(z[f"epoch_{int(e):04d}"]) for e in z["epochs"]}
            return mats, np.asarray(z["superclass_of_class"])
    except NPZ_ERRORS as e:
        raise DataError(f"distance matrices {path}: unreadable ({squashed(e)})") from None


def _fmt(x, digits=4) -> str:
    return number(x, f".{digits}f")


def _fmtg(x) -> str:
    return number(x, ".4g")


_ci = interval


def fine_structure_md(fs: dict | None, kind: str = "coarse") -> list[str]:
    """report.md lines of ``results["fine_structure"]``: verdict, observed vs null."""
    if not fs:
        return []
    lines = ["", "## Fine structure against its permutation null", ""]
    if fs["verdict"] is None:
        return lines + [f"Not tested: {fs['reason']}."]
    shuffled = ("training labels inside each class" if kind == "fine" else
                "original classes inside each label")
    tests = [f"MSDR p = {_fmtg(fs['msdr_p_value'])}"]
    if fs["cluster_accuracy"] is not None:
        tests.append(f"cluster-accuracy p = {_fmtg(fs['cluster_accuracy_p_value'])}")
    rule = ("both p-values <= alpha" if len(tests) == 2 else "the MSDR p-value <= alpha "
            "(no clustering here)")
    lines += [f"Verdict: **{fs['verdict']}** at alpha {fs['alpha']:g}: present needs {rule}; "
              f"{' and '.join(tests)} ({fs['permutations']} permutations of the {shuffled}, "
              f"{fs['bootstrap']} bootstrap resamples, epoch {fs['epoch']}, seed {fs['seed']}).",
              "",
              "| statistic | observed | null median | null 99th pct | p-value | 95% CI |",
              "|---|---|---|---|---|---|",
              f"| MSDR | {_fmt(fs['msdr'])} | {_fmt(fs['msdr_null_p50'])} | "
              f"{_fmt(fs['msdr_null_p99'])} | {_fmtg(fs['msdr_p_value'])} | {_ci(fs['msdr_ci'])} |"]
    if fs["cluster_accuracy"] is not None:
        lines.append(f"| cluster accuracy (training) | {_fmt(fs['cluster_accuracy'])} | "
                     f"{_fmt(fs['cluster_accuracy_null_p50'])} | "
                     f"{_fmt(fs['cluster_accuracy_null_p99'])} | "
                     f"{_fmtg(fs['cluster_accuracy_p_value'])} | n/a |")
    if fs["clp_train_mapping"] is not None:
        lines.append(f"| CLP, training mapping (test) | {_fmt(fs['clp_train_mapping'])} | "
                     f"{_fmt(fs['clp_null_p50'])} | {_fmt(fs['clp_null_p99'])} | "
                     f"{_fmtg(fs['clp_p_value'])} | {_ci(fs['clp_ci'])} |")
    effects = [(name, fs.get(key), fs.get(f"{key}_ci")) for name, key in (
        ("MSDR", "msdr_excess"), ("cluster accuracy", "cluster_effect"),
        ("train-mapped CLP", "clp_effect"), ("CLP - LPO (paired)", "clp_minus_lpo"))]
    effects = [f"{name} {value:+.4f} {_ci(ci)}" for name, value, ci in effects
               if value is not None]
    if effects:
        lines += ["", "Effects over the null medians (and CLP - LPO), with 95% bootstrap "
                      "intervals: " + "; ".join(effects) + "."]
    lines += ["", "MSDR >= 1 for any features when labels merge two classes; only a value "
                  "beyond the null's is evidence of fine structure."]
    return lines


def run_md(r: dict) -> list[str]:
    """report.md's opening lines for a trained run: its config (experiment.json, with the
    engine's config.json for what training actually used) and its regime, with a warning
    when it is not in the terminal phase."""
    setting = {**(r.get("experiment") or {}), **((r.get("config") or {}).get("config") or {})}
    if not setting:
        return []

    def value(key, default="-"):
        v = setting.get(key)
        return default if v is None else v

    arch, width, subset = setting.get("arch"), setting.get("width"), setting.get("subset")
    if width is None and arch in BACKBONES:
        width = BACKBONES[arch].default_width
    rows = [("experiment", value("experiment")),
            ("backbone", f"{value('arch')}, width {'-' if width is None else width}"),
            ("data", f"{value('data')}" + (f", subset {subset[0]:,} / {subset[1]:,}"
                                            if subset else "")),
            ("labels", f"{value('label_kind')}" + (f", C~ = {setting['num_coarse']}"
                                                    if setting.get("num_coarse") else "")),
            ("epochs, batch size", f"{value('epochs')}, {value('batch_size')}"),
            ("lr, schedule", f"{value('lr')}, {value('schedule')}"),
            ("weight decay, momentum", f"{value('weight_decay')}, {value('momentum')}"),
            ("precision", value("precision")),
            ("augmentation", "pad-4 crop + flip" if setting.get("augment") else "off"),
            ("seed", value("seed"))]
    lines = ["## Run", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    phase = terminal_phase(r)
    if phase["train_accuracy"] is None:
        return lines + [""]
    saved = len([v for v in (r.get("nc1") or {}).values() if v is not None])
    collapsed = saved >= 2 and phase["nc1_drop"] is not None
    drop = (f"NC1 fell {phase['nc1_drop']:.3g}x from its peak over the saved epochs "
            f"({_fmtg(phase['nc1_peak'])} -> {_fmtg(phase['nc1_last'])})" if collapsed
            else "NC1 was measured at fewer than two saved epochs")
    fitted = phase["train_accuracy"] >= TERMINAL_ACCURACY
    lines += ["", f"Regime: final training accuracy {_fmt(phase['train_accuracy'])} on the "
                  f"training labels ({'fitted' if fitted else 'not fitted'}: the terminal "
                  f"phase needs >= {TERMINAL_ACCURACY:g}); {drop}."]
    if not fitted:
        lines += ["", "> **Warning: an under-trained network.** It has not fitted its training "
                      f"labels (accuracy {_fmt(phase['train_accuracy'], 3)} < "
                      f"{TERMINAL_ACCURACY:g}). The paper's claims are about features that "
                      "survive Neural Collapse at the end of training; the fine-structure "
                      "verdict below describes an under-trained network, not collapsed "
                      "features. Train longer before reading it as evidence."]
    elif not (collapsed and phase["nc1_drop"] >= COLLAPSE_FACTOR):
        lines += ["", f"> Note: the training labels are fitted, but NC1 did not fall "
                      f"{COLLAPSE_FACTOR:g}x over the saved epochs (the whole-paper claims ask "
                      "for that much collapse; save features from an early epoch on to "
                      "measure it)."]
    return lines + [""]


def report_md(r: dict, mapping, title: str) -> str:
    """report.md: the run's config and regime, the headline numbers, NC metrics per epoch,
    the fine-structure test, skipped steps, figures, timings."""
    a = r["analysis"]
    trained = f" (trained {a['epochs_trained']} epochs)" if a.get("epochs_trained") is not None else ""
    lines = [f"# {title}", "", f"Source: {a['source']}.", ""]
    lines += run_md(r)
    lines += [
        f"Label kind: `{mapping.kind}` ({mapping.num_labels} training labels over "
        f"{mapping.num_classes} classes). Analysed epoch {a['epoch']}{trained}. Seed {a['seed']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| CLP accuracy (best mapping per superclass, test) | {_fmt(r['clp_accuracy'])} |",
        f"| CLP accuracy (mapping from training clusters) | {_fmt(r['clp_accuracy_train_mapping'])} |",
        f"| LPO accuracy (probe on original labels) | {_fmt(r['lpo_accuracy'])} |",
        f"| OT accuracy (network trained on original labels) | {_fmt(r['ot_accuracy'])} |",
        f"| clustering ARI / NMI vs original classes | {_fmt(r['ari'])} / {_fmt(r['nmi'])} |",
        f"| final train / test accuracy (training labels) | "
        f"{_fmt(r['final_train_accuracy'])} / {_fmt(r['final_test_accuracy'])} |",
        "",
        "| epoch | n train / test | " + " | ".join(m.title for m in EPOCH_METRICS.values())
        + " |",
        "|---|---|" + "---|" * len(EPOCH_METRICS),
    ]
    for ep in a["inputs"]:
        info = a["inputs"][ep]
        lines.append(f"| {ep} | {_n(info['n_train'])} / {_n(info['n_test'])} | "
                     + " | ".join(_fmtg(r[k].get(ep)) for k in EPOCH_METRICS) + " |")
    lines += [""] + [f"- {m.title}: {m.meaning}" + (" (on the training labels" if m.over_labels
                                                      else " (over the original classes")
                     + ("; needs the classifier, n/a without it)" if m.needs_classifier
                        else ")") for m in EPOCH_METRICS.values()]
    lines += fine_structure_md(r.get("fine_structure"), mapping.kind)
    if r["clp_accuracy"] is not None:
        lines += ["", f"CLP reduction: `{a['reduce']}`"
                  + (f", t-SNE on at most {a['max_tsne_points']} points per label" if a["max_tsne_points"] else "")
                  + "."]
    if r["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['step']}: {s['reason']}" for s in r["skipped"]]
    if r["figures"]:
        lines += ["", "## Figures", ""]
        for f in r["figures"]:
            lines.append(f"![{Path(f).stem}]({f})")
    timings = a.get("timings_s") or {}
    if timings:
        lines += ["", "## Timings", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {_TIMING_NAMES.get(k, k)} | {v:.2f} |" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


# How report.md names the analysis steps of ``results["analysis"]["timings_s"]``.
_TIMING_NAMES = {"nc_metrics": "NC metrics and D", "lpo": "LPO", "clp": "CLP",
                 "significance": "fine-structure test", "figures": "figures",
                 "total": "total"}


def write_results(out_dir: Path, results: Results, mapping, title: str) -> dict:
    """results.json and report.md, each atomically; returns the dict written."""
    record = results.to_dict()
    atomic_write_json(wdir.RunDir(out_dir).results, record)
    atomic_write_text(wdir.RunDir(out_dir).report, report_md(record, mapping, title))
    return record
