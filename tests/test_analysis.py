"""Tests for ncfine_jax.analysis: probe, Hungarian mapping, CLP, embeddings, figures, report."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ncfine_jax.analysis import (best_cluster_mapping, cluster_and_linear_probe,
                                 fit_linear_probe, lpo_accuracy, pca, tsne)
from ncfine_jax.analysis import figures as figs
from ncfine_jax.analysis.embedding import opentsne_available
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.errors import DataError, NcfineError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
D_FEAT = 16
# Small probes fit in milliseconds with scikit-learn; the JAX solver is exercised on
# the 4-class, 60-per-class shape (one compile shared by the tests that use it).
SKLEARN = {"solver": "sklearn"}


def planted(classes_of_label, n_train=60, n_test=30, sub_scale=3.0, noise=1.0, seed=0):
    """Features with one far-apart centre per label and planted subclusters per class.

    Returns train/test (features, labels, classes) as a dict.
    """
    rng = np.random.default_rng(seed)
    C = sum(len(cs) for cs in classes_of_label)
    label_of_class = np.empty(C, np.int64)
    for l, cs in enumerate(classes_of_label):
        label_of_class[list(cs)] = l
    centres = rng.normal(size=(len(classes_of_label), D_FEAT)) * 10.0
    means = centres[label_of_class] + rng.normal(size=(C, D_FEAT)) * sub_scale
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        classes = np.repeat(np.arange(C), n)
        feats = means[classes] + rng.normal(size=(classes.size, D_FEAT)) * noise
        out[f"{split}_features"] = feats.astype(np.float32)
        out[f"{split}_classes"] = classes.astype(np.int32)
        out[f"{split}_labels"] = label_of_class[classes].astype(np.int32)
    return out


def run_clp(data, classes_of_label, **kw):
    return cluster_and_linear_probe(
        data["train_features"], data["train_labels"], data["train_classes"],
        data["test_features"], data["test_labels"], data["test_classes"], classes_of_label, **kw)


def is_png(path):
    from PIL import Image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("seed", [3289, 6391, 1644])
def test_hungarian_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        k = int(rng.integers(1, 6))
        counts = rng.integers(0, 50, size=(k, k))
        mapping = best_cluster_mapping(counts)
        assert sorted(mapping.tolist()) == list(range(k))  # a permutation
        best = max(sum(counts[i, p[i]] for i in range(k)) for p in itertools.permutations(range(k)))
        assert counts[np.arange(k), mapping].sum() == best


def test_many_to_one_mapping_when_k_differs():
    counts = np.array([[5, 1], [4, 0], [0, 9]])
    assert best_cluster_mapping(counts).tolist() == [0, 0, 1]


def test_clp_accuracy_equals_brute_force_over_all_permutations():
    # Noisy subclusters, so the clustering makes mistakes and the mapping matters.
    col = ((0, 2, 4), (1, 3))
    data = planted(col, sub_scale=1.0, noise=1.2, seed=3)
    res = run_clp(data, col, reduce="none", seed=1, probe_kwargs=SKLEARN)
    pred = res["probe"].predict(data["test_features"])
    ks = [s["k"] for s in res["per_superclass"]]
    offsets = np.cumsum([0] + ks[:-1])
    true = data["test_classes"]
    best = 0
    for perms in itertools.product(*[itertools.permutations(cs) for cs in col]):
        class_of_recon = np.concatenate([np.asarray(p) for p in perms])
        best = max(best, int(np.sum(class_of_recon[pred] == true)))
    assert res["clp_accuracy"] == pytest.approx(best / true.size)
    assert 0.3 < res["clp_accuracy"] < 1.0  # the case is not trivial
    # The training mapping can only be worse or equal on test.
    assert res["clp_accuracy_train_mapping"] <= res["clp_accuracy"] + 1e-12
    mapped = [c for l in range(2) for c in res["mapping_test"][l]]
    assert np.sum(np.asarray(mapped)[pred] == true) == best
    assert offsets.tolist() == [0, 3]


# ----------------------------------------------------------------------------- CLP


@pytest.mark.parametrize("col", [((0, 2), (1, 3)), ((0, 3), (1, 2)), ((0, 1, 2), (3, 4))])
@pytest.mark.parametrize("reduce", ["none", "pca"])
def test_clp_recovers_planted_subclusters(col, reduce):
    data = planted(col, seed=sum(map(len, col)))
    # The JAX solver compiles once per shape: the 4-class cases share one compile.
    kw = {} if len(col[0]) == 2 else {"probe_kwargs": SKLEARN}
    res = run_clp(data, col, reduce=reduce, seed=0, **kw)
    assert res["clp_accuracy"] > 0.97
    assert res["clp_accuracy_train_mapping"] > 0.97
    assert res["cluster_accuracy_train"] > 0.97
    assert res["ari"] > 0.9 and res["nmi"] > 0.9
    assert res["num_reconstructed_labels"] == sum(map(len, col))
    for l, cs in enumerate(col):
        assert sorted(res["mapping_train"][l]) == list(cs)
        assert sorted(res["mapping_test"][l]) == list(cs)
    lpo = lpo_accuracy(data["train_features"], data["train_classes"],
                       data["test_features"], data["test_classes"], **kw)
    assert lpo > 0.97


@pytest.mark.parametrize("backend", ["sklearn", "opentsne"])
def test_clp_tsne_recovers_planted_subclusters(backend):
    if backend == "opentsne" and not opentsne_available():
        pytest.skip("openTSNE not installed")
    col = ((0, 2), (1, 3))
    data = planted(col, n_train=60, seed=11)
    res = run_clp(data, col, reduce="tsne", seed=0, tsne_backend=backend)
    assert res["clp_accuracy"] > 0.95
    emb = res["embeddings"]
    assert len(emb) == 2 and emb[0]["points"].shape == (120, 2)
    assert np.all(data["train_labels"][emb[1]["index"]] == 1)


def test_clp_tsne_subset_with_knn_extension():
    col = ((0, 2), (1, 3))
    data = planted(col, n_train=60, seed=12)
    res = run_clp(data, col, reduce="tsne", seed=0, tsne_backend="sklearn", max_tsne_points=50)
    assert res["clp_accuracy"] > 0.95 and res["cluster_accuracy_train"] > 0.95
    assert res["embeddings"][0]["points"].shape == (50, 2)
    assert all(s["tsne_points"] == 50 for s in res["per_superclass"])
    assert (res["reconstructed_train_labels"] >= 0).all()


def test_clp_silhouette_finds_number_of_subclasses():
    col = ((0, 1, 2), (3, 4))
    data = planted(col, seed=5)
    res = run_clp(data, col, reduce="none", k_selection="silhouette", k_candidates=range(2, 6),
                  probe_kwargs=SKLEARN)
    assert [s["k"] for s in res["per_superclass"]] == [3, 2]
    assert res["clp_accuracy"] > 0.95


def test_clp_is_deterministic():
    col = ((0, 2), (1, 3))
    data = planted(col, sub_scale=1.0, noise=1.2, seed=7)
    a = run_clp(data, col, reduce="pca", seed=3)
    b = run_clp(data, col, reduce="pca", seed=3)
    assert a["clp_accuracy"] == b["clp_accuracy"]
    np.testing.assert_array_equal(a["reconstructed_train_labels"], b["reconstructed_train_labels"])


def test_clp_bad_input():
    col = ((0, 2), (1, 3))
    data = planted(col, seed=0)
    with pytest.raises(NcfineError, match="classes_of_label"):
        run_clp(data, ((0, 1), (2, 3)), reduce="none")  # label 0 holds class 2, not 1
    with pytest.raises(NcfineError, match="reduce"):
        run_clp(data, col, reduce="umap")
    bad = dict(data, test_features=data["test_features"][:, :3])
    with pytest.raises(NcfineError, match="test_features"):
        run_clp(bad, col, reduce="none")
    bad = dict(data, train_labels=data["train_labels"][:-1])
    with pytest.raises(NcfineError, match="train_labels"):
        run_clp(bad, col, reduce="none")
    bad = dict(data, train_features=np.full_like(data["train_features"], np.nan))
    with pytest.raises(NcfineError, match="NaN"):
        run_clp(bad, col, reduce="none")


# ----------------------------------------------------------------------------- probe


def _objective_grad64(probe, x, y, C):
    """Float64 NumPy gradient of mean CE + ||W||^2 / (2 C n) at the probe's solution."""
    z = (x.astype(np.float64) - probe.mean) / probe.scale
    idx = np.searchsorted(probe.classes, y)
    logits = z @ probe.weights + probe.bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), idx] -= 1.0
    n = len(y)
    return z.T @ p / n + probe.weights / (C * n), p.mean(0)


def test_probe_jax_reaches_the_optimum_and_matches_sklearn():
    data = planted(((0, 2), (1, 3)), sub_scale=0.7, noise=1.5, seed=int(np.random.SeedSequence().entropy % 2**31))
    x, y = data["train_features"], data["train_classes"]
    jp = fit_linear_probe(x, y, solver="jax", tol=1e-6)
    sp = fit_linear_probe(x, y, solver="sklearn", tol=1e-8)
    assert jp.converged
    gw, gb = _objective_grad64(jp, x, y, 1.0)
    assert np.abs(gw).max() < 1e-4 and np.abs(gb).max() < 1e-4
    # The objective is strictly convex: both solvers find the same minimiser, up to
    # a shift of the intercepts that softmax ignores.
    np.testing.assert_allclose(jp.weights, sp.weights, atol=2e-3)
    np.testing.assert_allclose(jp.bias - jp.bias.mean(), sp.bias - sp.bias.mean(), atol=2e-3)
    xt, yt = data["test_features"], data["test_classes"]
    assert abs(jp.accuracy(xt, yt) - sp.accuracy(xt, yt)) <= 1.0 / len(yt) + 1e-12


def test_probe_handles_arbitrary_label_values_and_bad_input():
    data = planted(((0, 2), (1, 3)), seed=2)
    x, y = data["train_features"], data["train_classes"] * 7 + 3
    probe = fit_linear_probe(x, y)
    assert set(np.unique(probe.predict(x))) <= set(np.unique(y))
    assert probe.accuracy(x, y) > 0.97
    with pytest.raises(NcfineError, match="labels"):
        fit_linear_probe(x, np.zeros(len(y), np.int32))
    with pytest.raises(NcfineError, match="solver"):
        fit_linear_probe(x, y, solver="adam")
    with pytest.raises(NcfineError, match="dimension"):
        probe.predict(x[:, :4])


# ----------------------------------------------------------------------------- embedding


def test_tsne_and_pca_shapes_and_seeding(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 60)).astype(np.float32)
    a = tsne(x, seed=1, backend="sklearn")
    b = tsne(x, seed=1, backend="sklearn")
    assert a.shape == (80, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert tsne(x[:3], seed=0).shape == (3, 2)  # too few points: PCA layout
    p = pca(x, 2)
    assert p.shape == (80, 2)
    # PCA against a float64 NumPy SVD reference (up to the sign of each component).
    xc = x.astype(np.float64) - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    ref = u[:, :2] * s[:2]
    np.testing.assert_allclose(np.abs(p), np.abs(ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(NcfineError, match="backend"):
        tsne(x, backend="umap")
    with pytest.raises(NcfineError, match="features"):
        tsne(x[:, :0])
    # Asking for openTSNE where it is not installed: one clear error.
    from ncfine_jax.analysis import embedding

    monkeypatch.setattr(embedding, "opentsne_available", lambda: False)
    with pytest.raises(NcfineError, match="openTSNE is not installed"):
        tsne(x, backend="opentsne")


# ----------------------------------------------------------------------------- figures


def test_figures_write_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    C = 6
    sc = np.array([0, 1, 2, 0, 1, 2])
    mats = {e: np.abs(rng.normal(size=(C, C))) for e in (20, 120, 350)}
    names = [f"c{i}" for i in range(C)]
    paths = [
        figs.plot_distance_heatmaps(mats, sc, tmp_path / "heat.png", class_names=names, title="D"),
        figs.plot_nc_curves({"NC1": {1: 1.0, 2: 0.1, 3: 0.01}, "NC2": {1: 0.5, 2: 0.2, 3: None}},
                            tmp_path / "nc.png"),
        figs.plot_tsne_grid([(rng.normal(size=(50, 2)), rng.integers(0, 2, 50)), None],
                            tmp_path / "tsne.png", panel_titles=["a", "b"], colour_names=names),
        figs.plot_pca(rng.normal(size=(50, 2)), rng.integers(0, C, 50), rng.integers(0, 3, 50),
                      tmp_path / "pca.png", class_names=names),
        figs.plot_accuracy_bars({"run": {"CLP": 0.9, "LPO": 0.95, "OT": None}}, tmp_path / "bars.png"),
    ]
    runs = [{"lr": lr, "wd": wd, "distance_matrix": mats[20], "superclass_of_class": sc,
             "clp_accuracy": 0.8, "lpo_accuracy": 0.9, "diverged": False}
            for lr in (0.1, 0.01, 0.001) for wd in (5e-3, 5e-4, 5e-5)]
    runs[0] = dict(runs[0], distance_matrix=None, clp_accuracy=None, lpo_accuracy=None, diverged=True)
    paths.append(figs.plot_grid_heatmaps(runs, tmp_path / "grid_heat.png", epoch=350, class_names=names))
    paths.append(figs.plot_grid_bars(runs, tmp_path / "grid_bars.png"))
    for p in paths:
        w, h = is_png(p)
        assert w > 100 and h > 100
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    with pytest.raises(NcfineError, match="matrices"):
        figs.plot_distance_heatmaps({20: np.zeros((3, 3))}, sc, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_superclass_order():
    order, bounds = figs.superclass_order([1, 0, 1, 0, 2])
    assert order.tolist() == [1, 3, 0, 2, 4] and bounds.tolist() == [2, 4]


@pytest.mark.parametrize("kind", ["coarse", "random_coarse", "fine", "original"])
def test_label_view_per_kind(kind):
    """One view per label kind: where D lives, its grouping and the null's roles."""
    from ncfine_jax.analysis.views import label_view
    from ncfine_jax.labels import LabelMapping

    mapping = LabelMapping.for_kind(kind, 4, num_coarse=2 if "coarse" in kind else None, seed=3)
    view = label_view(mapping)
    labels, classes = np.array([0, 1, 2, 3, 0, 1]), np.array([0, 1, 2, 3, 0, 1])
    if "coarse" in kind:
        assert view.is_coarsening and view.has_structure and view.unit == "class"
        assert view.superclass.tolist() == list(mapping.label_of_class)
        groups, members, _ = view.null_roles(labels % 2, classes)
        assert groups.tolist() == (labels % 2).tolist() and members.tolist() == classes.tolist()
    elif kind == "fine":
        assert view.is_refinement and view.distances_over_labels and not view.is_coarsening
        assert view.unit == "training label"
        assert view.superclass.tolist() == [cs[0] for cs in mapping.classes_of_label]
        groups, members, _ = view.null_roles(labels, classes)  # labels shuffled inside classes
        assert groups.tolist() == classes.tolist() and members.tolist() == labels.tolist()
    else:
        assert not view.has_structure and view.labels_are_classes and view.unit == "class"
        assert view.superclass.tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------- report


def make_workdir(path, kind, num_classes=4, num_coarse=2, epochs=(1, 2), seed=0):
    """A synthetic workdir in the engine's layout (docs/design.md)."""
    from ncfine_jax.io import append_jsonl, atomic_write_json
    from ncfine_jax.labels import LabelMapping
    from ncfine_jax.train.features import features_path, save_features

    mapping = LabelMapping.for_kind(kind, num_classes, num_coarse=num_coarse if "coarse" in kind else None)
    col = ((0, 2), (1, 3)) if kind == "coarse" else tuple((c,) for c in range(num_classes))
    data = planted(col, seed=seed)
    rng = np.random.default_rng(seed)
    if kind == "coarse":
        labels = {s: mapping.label_of_class[data[f"{s}_classes"]] for s in ("train", "test")}
    elif kind == "fine":
        labels = {s: data[f"{s}_classes"] + num_classes * rng.integers(0, 2, data[f"{s}_classes"].size)
                  for s in ("train", "test")}
    else:
        labels = {s: data[f"{s}_classes"] for s in ("train", "test")}
    path.mkdir(parents=True)
    mapping.save(path / "label_mapping.json")
    atomic_write_json(path / "config.json", {"config": {"arch": "mlp", "epochs": max(epochs)}})
    for e in range(1, max(epochs) + 1):
        append_jsonl(path / "log.jsonl", {"epoch": e, "loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e,
                                          "test_accuracy": 0.4 + 0.1 * e, "lr": 0.1, "wall_time_s": e})
    for i, e in enumerate(epochs):
        scale = 1.0 / (i + 1)  # features contract over "training"
        save_features(features_path(path, e), e, data["train_features"] * scale, labels["train"],
                      data["train_classes"], data["test_features"] * scale, labels["test"],
                      data["test_classes"])
    return path


def test_analyze_run_writes_every_output(tmp_path):
    from ncfine_jax.analysis import analyze_run

    wd = make_workdir(tmp_path / "coarse", "coarse")
    ot = make_workdir(tmp_path / "ot", "original", epochs=(2,))
    res = analyze_run(wd, ot_workdir=ot, class_names=["a", "b", "c", "d"],
        options=AnalysisOptions(reduce="pca", seed=0, figure_tsne_points=60))
    on_disk = json.loads((wd / "results.json").read_text())
    for key in ("clp_accuracy", "clp_accuracy_train_mapping", "lpo_accuracy", "ot_accuracy", "ari",
                "nmi", "nc1", "nc2", "msdr", "final_train_accuracy", "final_test_accuracy", "config"):
        assert key in on_disk, key
    assert on_disk["clp_accuracy"] > 0.95 and on_disk["lpo_accuracy"] > 0.95
    assert on_disk["ot_accuracy"] == pytest.approx(0.6)
    assert on_disk["final_train_accuracy"] == pytest.approx(0.7)
    assert set(on_disk["nc1"]) == {"1", "2"} and on_disk["msdr"]["2"] > 1.0
    # NC1 is scale invariant; the synthetic epochs only rescale the features.
    assert on_disk["nc1"]["1"] == pytest.approx(on_disk["nc1"]["2"], rel=1e-4)
    assert on_disk["config"]["config"]["arch"] == "mlp"
    report = (wd / "report.md").read_text()
    for name in ("nc_curves", "distance_heatmaps", "tsne_superclasses", "pca", "accuracy_bars"):
        assert (wd / "figures" / f"{name}.png").exists(), name
        is_png(wd / "figures" / f"{name}.png")
        assert f"figures/{name}.png" in report
    assert res["clp_accuracy"] == on_disk["clp_accuracy"]


@pytest.mark.parametrize("kind", ["fine", "original"])
def test_analyze_run_non_coarsening_kinds(tmp_path, kind):
    from ncfine_jax.analysis import analyze_run

    wd = make_workdir(tmp_path / kind, kind, epochs=(2,))
    res = analyze_run(wd, options=AnalysisOptions(reduce="pca", figure_tsne_points=40))
    assert res["clp_accuracy"] is None and res["ari"] is None
    assert res["lpo_accuracy"] > 0.95
    if kind == "fine":
        assert res["msdr"][2] is not None  # D over the 8 fine labels, grouped by class
        assert (wd / "figures" / "tsne_superclasses.png").exists()
    else:
        assert res["msdr"][2] is None
        assert not (wd / "figures" / "tsne_superclasses.png").exists()


def test_analyze_run_bad_workdir_changes_nothing(tmp_path):
    from ncfine_jax.analysis import analyze_run

    with pytest.raises(DataError, match="not a directory"):
        analyze_run(tmp_path / "missing")
    with pytest.raises(NcfineError, match="reduce"):
        analyze_run(tmp_path, options=AnalysisOptions(reduce="umap"))
    wd = make_workdir(tmp_path / "w", "coarse", epochs=(1,))
    for f in (wd / "features").glob("*.npz"):
        f.unlink()
    before = sorted(p.name for p in wd.rglob("*"))
    with pytest.raises(DataError, match="no features"):
        analyze_run(wd)
    with pytest.raises(DataError, match="training log"):
        analyze_run(make_workdir(tmp_path / "w2", "coarse", epochs=(1,)), ot_workdir=tmp_path)
    assert sorted(p.name for p in wd.rglob("*")) == before
    assert not (tmp_path / "w2" / "results.json").exists()
    # Damaged files: one-line DataError naming the file, nothing written.
    w3 = make_workdir(tmp_path / "w3", "coarse", epochs=(1,))
    feats = next((w3 / "features").glob("*.npz"))
    feats.write_bytes(feats.read_bytes()[:200])
    with pytest.raises(DataError, match=f"features {feats}: unreadable") as err:
        analyze_run(w3)
    assert "\n" not in str(err.value)
    (w3 / "config.json").write_text('{"config": ')
    with pytest.raises(DataError, match="run config .*config.json: unreadable"):
        analyze_run(w3)
    assert not (w3 / "results.json").exists() and not (w3 / "figures").exists()


def test_grid_figures_from_analysed_runs(tmp_path):
    from ncfine_jax.analysis import analyze_run, grid_figures

    points = []
    for i, (lr, wd) in enumerate([(0.1, 5e-4), (0.1, 0.0), (0.01, 5e-4), (0.01, 0.0)]):
        run = tmp_path / f"lr{lr:g}_wd{wd:g}"
        if i == 1:  # diverged before any analysis: no results, drawn empty
            run.mkdir()
            points.append({"lr": lr, "wd": wd, "workdir": run, "diverged": True})
            continue
        make_workdir(run, "coarse", epochs=(1, 2))
        analyze_run(run, options=AnalysisOptions(reduce="none", make_figures=False))
        points.append({"lr": lr, "wd": wd, "workdir": run})
    paths = grid_figures(points, tmp_path)
    assert [p.name for p in paths] == ["grid_distance_heatmaps.png", "grid_clp_lpo.png"]
    for p in paths:
        is_png(p)


def test_grid_figures_per_epoch_heatmaps_and_unsaved_epoch(tmp_path, monkeypatch):
    from ncfine_jax.analysis import analyze_run, grid_figures
    from ncfine_jax.analysis import grid as grid_module
    from ncfine_jax.errors import ConfigError

    def analysed(kind, epochs, name):
        run = make_workdir(tmp_path / name, kind, epochs=epochs)
        analyze_run(run, options=AnalysisOptions(reduce="none", make_figures=False, probe_kwargs=SKLEARN))
        return run

    points = [{"lr": 0.1, "wd": 0.0, "workdir": analysed("coarse", (1, 2), "a")},
              {"lr": 0.01, "wd": 0.0, "workdir": analysed("coarse", (2, 3), "b")}]
    with pytest.raises(ConfigError, match=r"epoch\(s\) \[7\] saved by no grid point \(saved: \[1, 2, 3\]\)"):
        grid_figures(points, tmp_path / "grid", heatmap_epochs=[2, 7])
    assert not (tmp_path / "grid").exists()  # refused before any figure

    ticks = []
    plot = grid_module.figs.plot_grid_heatmaps
    monkeypatch.setattr(grid_module.figs, "plot_grid_heatmaps",
                        lambda runs, path, **kw: ticks.append(kw["class_names"]) or plot(runs, path, **kw))
    paths = grid_figures(points, tmp_path / "grid", class_names=list("abcd"), heatmap_epochs="all")
    assert [p.name for p in paths] == ["grid_distance_heatmaps.png", "grid_clp_lpo.png",
                                       "grid_heatmaps_epoch_0001.png", "grid_heatmaps_epoch_0002.png",
                                       "grid_heatmaps_epoch_0003.png"]
    for p in paths:
        is_png(p)
    assert ticks == [list("abcd")] * 4
    # "fine" runs: D is over the 8 fine labels, so the 4 class names are no tick labels.
    ticks.clear()
    fine = [{"lr": 0.1, "wd": 0.0, "workdir": analysed("fine", (2,), "f")}]
    grid_figures(fine, tmp_path / "fine_grid", class_names=list("abcd"), heatmap_epochs=[2])
    assert ticks == [None, None]


def test_analyze_run_reads_the_classifier_and_refuses_a_test_set_missing_a_class(tmp_path):
    from ncfine_jax.analysis import analyze_run

    wd = make_workdir(tmp_path / "w", "coarse", epochs=(1,))
    path = next((wd / "features").glob("*.npz"))
    with np.load(path) as z:
        data = dict(z)
    kernel = np.random.default_rng(0).normal(size=(D_FEAT, 2)).astype(np.float32)
    np.savez(path, **data, classifier_kernel=kernel, classifier_bias=np.zeros(2, np.float32))
    res = analyze_run(wd, options=AnalysisOptions(reduce="none", make_figures=False, probe_kwargs=SKLEARN))
    assert res["nc3"][1] is not None and 0 <= res["nc4"][1] <= 1 and res["cdnv"][1] > 0
    keep = data["test_classes"] != 3
    np.savez(path, **{**data, **{f"test_{k}": data[f"test_{k}"][keep] for k in ("features", "labels", "classes")}})
    before = (wd / "results.json").read_bytes()
    with pytest.raises(DataError, match=r"none of class\(es\) 3; CLP and LPO need every class in the test set"):
        analyze_run(wd, options=AnalysisOptions(reduce="none", make_figures=False, probe_kwargs=SKLEARN))
    assert (wd / "results.json").read_bytes() == before
