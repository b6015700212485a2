"""``analyze_run``: everything the paper shows for one run, from its workdir alone.

Reads (docs/DESIGN.md layout): ``config.json``, ``log.jsonl``,
``features/epoch_XXXX.npz``, ``label_mapping.json`` (and ``experiment.json`` when
present, copied into the results). Writes ``results.json``, ``report.md``,
``distance_matrices.npz`` (D per saved epoch, for the grid figures) and
``figures/*.png``, each atomically, and returns the results dict.
``grid_figures`` draws the lr x wd grid figures from analysed sub-workdirs.

Per saved epoch (training set):
  * ``nc1``, ``nc2`` on the *training labels* (what the network was trained on);
  * the class-distance matrix D and MSDR. Coarsenings: D over the original classes,
    superclass = training label. "fine": D over the 2C fine training labels,
    superclass = original class. "original": D over the classes, MSDR null (no
    superclass holds two classes).
At the last saved epoch: CLP (coarsenings only, else null) and LPO (probe on the
original classes, every kind). OT accuracy is the last ``test_accuracy`` in the OT
run's ``log.jsonl``.
"""

from __future__ import annotations

import math
import os
import time
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ncfine_jax.analysis import figures as figs
from ncfine_jax.analysis.clp import cluster_and_linear_probe, lpo_accuracy
from ncfine_jax.analysis.embedding import pca, tsne
from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.io import (atomic_save_npz, atomic_write_json, atomic_write_text, read_json,
                          read_jsonl)

FEATURE_KEYS = ("train_features", "train_labels", "train_classes", "test_features",
                "test_labels", "test_classes")
MAX_HEATMAP_PANELS = 6
DISTANCE_FILE = "distance_matrices.npz"
# What np.load raises on a truncated or corrupt .npz (BadZipFile and EOFError are
# neither OSError nor ValueError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} {path}: not found")
    return path


def _read_json(path: Path, what: str, lines: bool = False):
    """``read_json`` / ``read_jsonl`` of an existing file; a bad file -> one-line DataError."""
    _require(path, what)
    try:
        return read_jsonl(path) if lines else read_json(path)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{what} {path}: unreadable ({' '.join(str(e).split())})") from None


def feature_epochs(workdir: str | os.PathLike) -> dict[int, Path]:
    """Saved feature files of a workdir: epoch -> path, sorted by epoch."""
    out = {}
    for p in sorted((Path(workdir) / "features").glob("epoch_*.npz")):
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue  # not one of ours (e.g. a stray temp file)
    return dict(sorted(out.items()))


def load_features(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load one features file and check its keys and shapes (DataError otherwise)."""
    path = Path(path)
    try:
        with np.load(path) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except _NPZ_ERRORS as e:
        raise DataError(f"features {path}: unreadable ({' '.join(str(e).split())})") from None
    missing = [k for k in FEATURE_KEYS if k not in data]
    if missing:
        raise DataError(f"features {path}: missing arrays {missing}")
    for split in ("train", "test"):
        f = data[f"{split}_features"]
        if f.ndim != 2:
            raise DataError(f"features {path}: {split}_features has shape {f.shape}, expected [n, d]")
        for k in (f"{split}_labels", f"{split}_classes"):
            if data[k].shape != (f.shape[0],):
                raise DataError(f"features {path}: {k} has shape {data[k].shape}, expected [{f.shape[0]}]")
    return data


def _load_mapping(workdir: Path):
    from ncfine_jax.labels import LabelMapping

    path = _require(workdir / "label_mapping.json", "label mapping")
    return LabelMapping.load(path)


def final_test_accuracy(workdir: str | os.PathLike) -> float:
    """Last ``test_accuracy`` in ``workdir/log.jsonl`` (used as the OT accuracy)."""
    log_path = Path(workdir) / "log.jsonl"
    log = _read_json(log_path, "training log", lines=True)
    if not log or "test_accuracy" not in log[-1]:
        raise DataError(f"training log {log_path}: no epoch record with test_accuracy")
    return float(log[-1]["test_accuracy"])


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _nc_metrics(data: dict, mapping) -> dict:
    """NC1, NC2 (training labels), D and MSDR for one epoch's training features."""
    from ncfine_jax import metrics

    f = data["train_features"]
    y = data["train_labels"].astype(np.int32)
    c = data["train_classes"].astype(np.int32)
    # One compiled pass over the training labels gives NC1, NC2 and their D.
    by_label = metrics.neural_collapse_metrics(f, y, mapping.num_labels)
    out = {"nc1": _finite_or_none(by_label["nc1"]), "nc2": _finite_or_none(by_label["nc2"])}
    if mapping.kind == "fine":
        superclass = np.array([cs[0] for cs in mapping.classes_of_label], np.int32)
        D = np.asarray(by_label["class_distance_matrix"])
    else:
        D = np.asarray(metrics.class_distance_matrix(f, c, mapping.num_classes))
        # "original": no class shares a label, so MSDR is undefined; one group for plots.
        superclass = (np.asarray(mapping.label_of_class, np.int32) if mapping.is_coarsening
                      else np.zeros(mapping.num_classes, np.int32))
    has_groups = mapping.kind == "fine" or mapping.is_coarsening
    out["msdr"] = _finite_or_none(metrics.msdr(D, superclass)) if has_groups else None
    out["D"] = D
    out["superclass"] = superclass
    return out


def _pick_epochs(epochs: Sequence[int], n: int) -> list[int]:
    """At most n epochs, evenly spread, always keeping the first and the last."""
    epochs = list(epochs)
    if len(epochs) <= n:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, n)).astype(int))
    return [epochs[i] for i in idx]


def analyze_run(
    workdir: str | os.PathLike,
    ot_workdir: str | os.PathLike | None = None,
    reduce: str = "tsne",
    seed: int = 0,
    *,
    k_selection: str | None = None,
    max_tsne_points: int | None = None,
    tsne_backend: str | None = None,
    probe_kwargs: dict | None = None,
    heatmap_epochs: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    figure_tsne_points: int = 2000,
    make_figures: bool = True,
) -> dict:
    """Analyse a finished (or partly finished) run and write its report.

    Args:
        workdir: run directory (docs/DESIGN.md layout).
        ot_workdir: workdir of the original-label run, for ``ot_accuracy``.
        reduce: CLP reduction, "tsne" (paper), "pca" or "none".
        seed: seeds t-SNE, KMeans, PCA and subsampling.
        k_selection: None (k = classes per label) or "silhouette".
        max_tsne_points: per-label t-SNE cap inside CLP (see ``clp``); None = all.
        tsne_backend: "opentsne", "sklearn" or None (openTSNE when importable).
        probe_kwargs: passed to ``fit_linear_probe`` (e.g. ``{"solver": "sklearn"}``).
        heatmap_epochs: epochs in the D-heatmap figure (default: up to 6 saved epochs).
        class_names: original class names for figure labels.
        figure_tsne_points: points per panel for t-SNE figures computed only for the
            figure (when CLP did not already embed with t-SNE).
        make_figures: write figures (False: results.json and report.md only).

    Returns:
        The results dict written to ``results.json`` (without NumPy arrays).
    """
    workdir = Path(workdir)
    if reduce not in ("tsne", "pca", "none"):
        raise ConfigError(f"reduce: unknown {reduce!r}; choose 'tsne', 'pca' or 'none'")
    if k_selection not in (None, "silhouette"):
        raise ConfigError(f"k_selection: unknown {k_selection!r}; choose None or 'silhouette'")
    if not workdir.is_dir():
        raise DataError(f"workdir {workdir}: not a directory")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    config = _read_json(workdir / "config.json", "run config")
    experiment = (_read_json(workdir / "experiment.json", "experiment record")
                  if (workdir / "experiment.json").exists() else None)
    log = _read_json(workdir / "log.jsonl", "training log", lines=True)
    mapping = _load_mapping(workdir)
    epochs = feature_epochs(workdir)
    if not epochs:
        raise DataError(f"workdir {workdir}: no features/epoch_*.npz saved yet")
    ot_accuracy = final_test_accuracy(ot_workdir) if ot_workdir is not None else None

    nc1, nc2, msdr, D_by_epoch = {}, {}, {}, {}
    superclass = None
    last_epoch = max(epochs)
    last_data = None
    for ep, path in epochs.items():
        data = load_features(path)
        _check_against_mapping(data, mapping, path)
        m = _nc_metrics(data, mapping)
        nc1[ep], nc2[ep], msdr[ep] = m["nc1"], m["nc2"], m["msdr"]
        D_by_epoch[ep], superclass = m["D"], m["superclass"]
        if ep == last_epoch:
            last_data = data
    timings["nc_metrics"] = time.perf_counter() - t0

    d = last_data
    t1 = time.perf_counter()
    lpo = lpo_accuracy(d["train_features"], d["train_classes"], d["test_features"],
                       d["test_classes"], probe_kwargs=probe_kwargs)
    timings["lpo"] = time.perf_counter() - t1

    clp = None
    if mapping.is_coarsening:
        t1 = time.perf_counter()
        clp = cluster_and_linear_probe(
            d["train_features"], d["train_labels"], d["train_classes"], d["test_features"],
            d["test_labels"], d["test_classes"], mapping.classes_of_label, reduce=reduce,
            seed=seed, k_selection=k_selection, max_tsne_points=max_tsne_points,
            tsne_backend=tsne_backend, probe_kwargs=probe_kwargs,
        )
        timings["clp"] = time.perf_counter() - t1

    last_log = log[-1] if log else {}
    results = {
        "clp_accuracy": None if clp is None else clp["clp_accuracy"],
        "clp_accuracy_train_mapping": None if clp is None else clp["clp_accuracy_train_mapping"],
        "lpo_accuracy": lpo,
        "ot_accuracy": ot_accuracy,
        "ari": None if clp is None else clp["ari"],
        "nmi": None if clp is None else clp["nmi"],
        "nc1": nc1,
        "nc2": nc2,
        "msdr": msdr,
        "final_train_accuracy": last_log.get("train_accuracy"),
        "final_test_accuracy": last_log.get("test_accuracy"),
        "config": config,
        "experiment": experiment,
        "label_mapping": mapping.to_dict(),
        "analysis": {
            "epoch": last_epoch,
            "epochs_trained": last_log.get("epoch"),
            "reduce": reduce if clp is not None else None,
            "seed": seed,
            "k_selection": k_selection,
            "max_tsne_points": max_tsne_points,
            "ot_workdir": None if ot_workdir is None else str(ot_workdir),
        },
        "clp_details": None if clp is None else {
            k: clp[k] for k in ("clp_accuracy_label_routed", "cluster_accuracy_train",
                                "mapping_train", "mapping_test", "num_reconstructed_labels",
                                "probe_iterations", "probe_converged", "per_superclass")
        },
        "figures": [],
    }

    if make_figures:
        t1 = time.perf_counter()
        results["figures"] = _write_figures(
            workdir, mapping, d, clp, nc1, nc2, D_by_epoch, superclass, heatmap_epochs,
            class_names, results, seed, tsne_backend, figure_tsne_points,
        )
        timings["figures"] = time.perf_counter() - t1
    # The grid figures (Figs. 24-27) need D per epoch without re-reading features.
    atomic_save_npz(
        workdir / DISTANCE_FILE, epochs=np.asarray(list(D_by_epoch), np.int32),
        superclass_of_class=np.asarray(superclass, np.int32),
        **{f"epoch_{e:04d}": np.asarray(D, np.float32) for e, D in D_by_epoch.items()},
    )
    timings["total"] = time.perf_counter() - t0
    results["analysis"]["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    atomic_write_json(workdir / "results.json", results)
    atomic_write_text(workdir / "report.md", _report_md(workdir, results, mapping))
    return results


def _check_against_mapping(data: dict, mapping, path: Path) -> None:
    for split in ("train", "test"):
        y, c = data[f"{split}_labels"], data[f"{split}_classes"]
        if y.size and (y.min() < 0 or y.max() >= mapping.num_labels):
            raise DataError(f"features {path}: {split}_labels outside [0, {mapping.num_labels}) "
                            "of label_mapping.json")
        if c.size and (c.min() < 0 or c.max() >= mapping.num_classes):
            raise DataError(f"features {path}: {split}_classes outside [0, {mapping.num_classes}) "
                            "of label_mapping.json")


def _write_figures(workdir, mapping, d, clp, nc1, nc2, D_by_epoch, superclass, heatmap_epochs,
                   class_names, results, seed, tsne_backend, figure_tsne_points) -> list[str]:
    from ncfine_jax.labels import class_names_of_labels

    fig_dir = workdir / "figures"
    written = []
    names = list(class_names) if class_names is not None else [str(i) for i in range(mapping.num_classes)]
    label_names = class_names_of_labels(mapping, names)

    written.append(figs.plot_nc_curves(nc1, nc2, fig_dir / "nc_curves.png",
                                       title="NC1 / NC2 on the training labels"))
    chosen = list(heatmap_epochs) if heatmap_epochs is not None else _pick_epochs(list(D_by_epoch), MAX_HEATMAP_PANELS)
    chosen = [e for e in chosen if e in D_by_epoch] or [max(D_by_epoch)]
    if mapping.kind == "fine":
        tick_names, what = label_names, "fine training labels, grouped by original class"
    else:
        tick_names, what = names, "original classes, grouped by training label"
    written.append(figs.plot_distance_heatmaps(
        {e: D_by_epoch[e] for e in chosen}, superclass, fig_dir / "distance_heatmaps.png",
        class_names=tick_names, title=f"class-distance matrix D ({what})"))

    # t-SNE per group: coarsenings group by training label and colour by class; "fine"
    # groups by original class and colours by fine label. "original" has no groups.
    panels, titles, colour_names = None, None, None
    rng = np.random.default_rng(seed)
    if clp is not None and all(e is not None for e in clp["embeddings"]):
        panels = [(e["points"], d["train_classes"][e["index"]]) for e in clp["embeddings"]]
        titles, colour_names = label_names, names
    elif mapping.kind != "original":
        if mapping.kind == "fine":
            groups = [np.flatnonzero(d["train_classes"] == c) for c in range(mapping.num_classes)]
            colour, titles, colour_names = d["train_labels"], names, label_names
        else:
            groups = [np.flatnonzero(d["train_labels"] == l) for l in range(mapping.num_labels)]
            colour, titles, colour_names = d["train_classes"], label_names, names
        panels = []
        for g in groups:
            if g.size > figure_tsne_points:
                g = np.sort(rng.choice(g, figure_tsne_points, replace=False))
            panels.append(None if g.size < 2 else
                          (tsne(d["train_features"][g], seed=seed, backend=tsne_backend), colour[g]))
    if panels is not None:
        written.append(figs.plot_tsne_grid(panels, fig_dir / "tsne_superclasses.png",
                                           panel_titles=titles, colour_names=colour_names,
                                           title="t-SNE of training features per group", seed=seed))

    written.append(figs.plot_pca(pca(d["train_features"], 2, seed), d["train_classes"],
                                 d["train_labels"], fig_dir / "pca.png", class_names=names,
                                 title="PCA of all training features", seed=seed))
    bars = {"CLP": results["clp_accuracy"], "CLP (train mapping)": results["clp_accuracy_train_mapping"],
            "LPO": results["lpo_accuracy"], "OT": results["ot_accuracy"]}
    written.append(figs.plot_accuracy_bars({"test accuracy on original classes": bars},
                                           fig_dir / "accuracy_bars.png", title="CLP / LPO / OT"))
    return [str(Path(p).relative_to(workdir)) for p in written]


def _fmt(x, digits=4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmtg(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _report_md(workdir: Path, r: dict, mapping) -> str:
    a = r["analysis"]
    lines = [
        f"# Run report: {workdir.name}",
        "",
        f"Label kind: `{mapping.kind}` ({mapping.num_labels} training labels over "
        f"{mapping.num_classes} classes). Analysed epoch {a['epoch']} "
        f"(trained {a['epochs_trained']} epochs). Seed {a['seed']}.",
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
        "| epoch | NC1 | NC2 | MSDR |",
        "|---|---|---|---|",
    ]
    for ep in r["nc1"]:
        lines.append(f"| {ep} | {_fmtg(r['nc1'][ep])} | {_fmtg(r['nc2'][ep])} | {_fmtg(r['msdr'][ep])} |")
    if r["clp_accuracy"] is not None:
        lines += ["", f"CLP reduction: `{a['reduce']}`"
                  + (f", t-SNE on at most {a['max_tsne_points']} points per label" if a["max_tsne_points"] else "")
                  + "."]
    if r["figures"]:
        lines += ["", "## Figures", ""]
        for f in r["figures"]:
            lines.append(f"![{Path(f).stem}]({f})")
    lines += ["", f"Timings (s): {a.get('timings_s', {})}", ""]
    return "\n".join(lines)


def load_distance_matrices(workdir: str | os.PathLike) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """D per saved epoch and the grouping used, as written by ``analyze_run``.

    Returns:
        ({epoch: [C, C] float32}, superclass_of_class [C] int32).
    """
    path = _require(Path(workdir) / DISTANCE_FILE, "distance matrices")
    try:
        with np.load(path) as z:
            mats = {int(e): np.asarray(z[f"epoch_{int(e):04d}"]) for e in z["epochs"]}
            return mats, np.asarray(z["superclass_of_class"])
    except _NPZ_ERRORS as e:
        raise DataError(f"distance matrices {path}: unreadable ({' '.join(str(e).split())})") from None


def grid_figures(
    points: Sequence[dict],
    out_dir: str | os.PathLike,
    epoch: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """lr x wd grid figures from analysed runs: D heatmaps (Figs. 24-27), CLP/LPO bars (Fig. 31).

    Args:
        points: one dict per grid point with ``lr``, ``wd``, ``workdir`` and optional
            ``diverged``. A point whose workdir has no ``results.json`` /
            ``distance_matrices.npz`` (e.g. diverged before analysis) is drawn empty.
        out_dir: the figures go to ``out_dir/figures/``.
        epoch: epoch of the heatmaps; default the last epoch every analysed run saved.
            A run without that epoch shows its latest earlier saved epoch.
        class_names: tick labels for the heatmaps.
        title: prefix for the figure titles.

    Returns:
        Paths of the two PNGs.
    """
    if not points:
        raise DataError("points: no grid points given")
    loaded = []
    for p in points:
        wd = Path(p["workdir"])
        res = _read_json(wd / "results.json", "results") if (wd / "results.json").exists() else None
        mats = load_distance_matrices(wd) if (wd / DISTANCE_FILE).exists() else None
        loaded.append((p, res, mats))
    available = [set(m[0]) for _, _, m in loaded if m is not None]
    if epoch is None and available:
        epoch = max(set.intersection(*available) or {min(max(a) for a in available)})
    heat_runs, bar_runs = [], []
    for p, res, mats in loaded:
        D, sc = None, None
        if mats is not None:
            eps = [e for e in mats[0] if epoch is None or e <= epoch]
            if eps:
                D, sc = mats[0][max(eps)], mats[1]
        diverged = bool(p.get("diverged", False))
        heat_runs.append({"lr": p["lr"], "wd": p["wd"], "distance_matrix": None if diverged else D,
                          "superclass_of_class": sc, "diverged": diverged})
        bar_runs.append({"lr": p["lr"], "wd": p["wd"],
                         "clp_accuracy": None if res is None or diverged else res.get("clp_accuracy"),
                         "lpo_accuracy": None if res is None or diverged else res.get("lpo_accuracy")})
    fig_dir = Path(out_dir) / "figures"
    prefix = f"{title}: " if title else ""
    return [
        figs.plot_grid_heatmaps(heat_runs, fig_dir / "grid_distance_heatmaps.png", epoch=epoch,
                                class_names=class_names, title=f"{prefix}class-distance matrices"),
        figs.plot_grid_bars(bar_runs, fig_dir / "grid_clp_lpo.png",
                            title=f"{prefix}CLP vs LPO per configuration"),
    ]
