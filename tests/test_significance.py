"""The fine-structure test: kernels against float64 NumPy, null features -> absent,
planted structure -> present, bad input -> one line and nothing written."""

import json

import numpy as np
import pytest

from ncfine_jax.analysis import significance as sig
from ncfine_jax.analysis.pipeline import analyze_features
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.errors import ConfigError, DataError


def reference_msdr(x, members, superclass, weights=None):
    """float64 MSDR of D_ij = |mu_i - mu_j|^2 + v_i + v_j (weighted samples)."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if weights is None else weights
    M = superclass.size
    mu = np.stack([np.average(x[members == m], axis=0, weights=w[members == m]) for m in range(M)])
    v = np.array([np.average(np.sum((x[members == m] - mu[m]) ** 2, axis=1), weights=w[members == m])
                  for m in range(M)])
    D = np.sum((mu[:, None] - mu[None]) ** 2, axis=-1) + v[:, None] + v[None]
    same = (superclass[:, None] == superclass[None]) & ~np.eye(M, dtype=bool)
    return D[same].mean() / np.diag(D).mean()


def coarse_features(planted: bool, n_per_class=60, n_test=20, d=16, seed=0):
    """3 x one-hot(coarse label) + noise; planted: the two classes of a label differ by a
    shift of 1.2 along their own axis (else both come from one distribution)."""
    rng = np.random.default_rng(seed)

    def split(n):
        c = np.repeat(np.arange(10), n)
        y = c % 5
        x = 3 * np.eye(d)[y] + rng.normal(size=(c.size, d))
        if planted:
            x += 1.2 * np.eye(d)[c // 5 + 5]
        return x.astype(np.float32), y, c

    x, y, c = split(n_per_class)
    xt, yt, ct = split(n_test)
    return dict(train_features=x, train_labels=y, train_classes=c,
                test_features=xt, test_labels=yt, test_classes=ct)


def test_msdr_draws_match_a_float64_reference_for_permutations_and_bootstrap():
    rng = np.random.default_rng()
    n, d = 90, 7
    members = np.repeat(np.arange(6), 15)
    groups = members % 3
    superclass = np.arange(6) % 3
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + 5.0  # an offset: centring matters
    perms = sig.permute_within(groups, members, 5, rng)
    w = sig.bootstrap_weights(members, 3, rng)
    got = sig.msdr_draws(x, perms, np.ones(perms.shape), superclass, groups)
    want = [reference_msdr(x, p, superclass) for p in perms]
    np.testing.assert_allclose(got, want, rtol=2e-5)
    got = sig.msdr_draws(x, np.broadcast_to(members, w.shape), w, superclass, members)
    np.testing.assert_allclose(got, [reference_msdr(x, members, superclass, wi) for wi in w], rtol=2e-5)
    # Tight, far-apart classes (MSDR ~1e3, a collapsed network): no cancellation.
    tight = 30 * rng.normal(size=(6, d))[members] + 0.5 * rng.normal(size=(n, d))
    assert reference_msdr(tight, members, superclass) > 100
    got = sig.msdr_draws(tight, members[None], np.ones((1, n)), superclass, members)
    np.testing.assert_allclose(got, [reference_msdr(tight, members, superclass)], rtol=2e-5)
    # ... and its null: random subsets of a label, whose mean is near the label's.
    perms = sig.permute_within(groups, members, 5, rng)
    got = sig.msdr_draws(tight, perms, np.ones(perms.shape), superclass, groups)
    np.testing.assert_allclose(got, [reference_msdr(tight, p, superclass) for p in perms], rtol=2e-5)


def test_permutations_move_members_only_inside_their_group_and_keep_counts():
    rng = np.random.default_rng(1)
    groups = np.array([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    members = np.array([0, 2, 1, 3, 4, 5, 0, 3, 4, 1])
    perms = sig.permute_within(groups, members, 50, rng)
    of_group = {0: {0, 1}, 1: {2, 3}, 2: {4, 5}}
    for p in perms:
        assert all(p[i] in of_group[g] for i, g in enumerate(groups))
        assert np.array_equal(np.bincount(p, minlength=6), np.bincount(members, minlength=6))
    assert len({tuple(p) for p in perms}) > 10  # they do shuffle


def test_p_value_counts_ties_and_never_reaches_zero():
    null = np.array([1.0, 2.0, 3.0, 3.0])
    assert sig.p_value(3.0, null) == pytest.approx(3 / 5)  # ties count as >=
    assert sig.p_value(9.0, null) == pytest.approx(1 / 5)
    assert sig.p_value(3.0 + 1e-7, null) == pytest.approx(1 / 5)
    assert sig.p_value(3.0 + 1e-7, null, rtol=1e-5) == pytest.approx(3 / 5)  # float32 rounding


def test_cluster_accuracy_matches_a_direct_computation():
    rng = np.random.default_rng()
    labels = np.repeat(np.arange(2), 40)
    classes = labels * 2 + rng.integers(0, 2, 80)
    clusters = labels * 2 + rng.integers(0, 2, 80)
    got = sig.cluster_accuracies(clusters, labels, classes[None], [[0, 1], [2, 3]], [2, 2])[0]
    want = 0
    for l in range(2):
        i = labels == l
        same = np.sum((clusters[i] - 2 * l) == (classes[i] - 2 * l))
        want += max(same, i.sum() - same)  # the better of the two bijections
    assert got == pytest.approx(want / 80)


@pytest.mark.parametrize("planted", [False, True])
def test_null_features_are_absent_and_planted_structure_present(tmp_path, planted):
    r = analyze_features(coarse_features(planted), tmp_path, num_coarse=5,
        options=AnalysisOptions(reduce="pca", make_figures=False))
    fs = r["fine_structure"]
    assert set(fs) == set(sig.KEYS)
    assert fs["msdr"] == pytest.approx(r["msdr"][1], rel=1e-4)  # the pipeline's MSDR
    assert fs["msdr"] > 1  # MSDR > 1 either way: the null is what tells them apart
    assert fs["clp_train_mapping"] == pytest.approx(r["clp_accuracy_train_mapping"])
    assert fs["cluster_accuracy"] == pytest.approx(r["clp_details"]["cluster_accuracy_train"])
    if planted:
        assert fs["verdict"] == "present" and fs["p_value"] <= fs["alpha"]
        assert fs["msdr"] > fs["msdr_null_p99"] and fs["clp_p_value"] <= fs["alpha"]
        assert fs["cluster_accuracy"] > fs["cluster_accuracy_null_p99"]
        assert fs["msdr_ci"][0] > fs["msdr_null_p99"]
    else:
        assert fs["verdict"] == "absent" and fs["p_value"] > 0.05
        assert fs["msdr"] < fs["msdr_null_p99"] and fs["clp_p_value"] > 0.05
        assert fs["msdr_ci"][0] < fs["msdr_null_p99"]  # the interval does not exclude the null
    assert fs["msdr_ci"][0] < fs["msdr_ci"][1] and fs["clp_ci"][0] < fs["clp_ci"][1]
    assert list(fs["by_epoch"]) == [1]
    saved = json.loads((tmp_path / "results.json").read_text())["fine_structure"]
    assert saved["verdict"] == fs["verdict"] and saved["p_value"] == fs["p_value"]
    md = (tmp_path / "report.md").read_text()
    assert f"Verdict: **{fs['verdict']}**" in md and "null median" in md


def test_the_test_is_seeded_and_every_epoch_gets_its_null(tmp_path):
    sets = {e: coarse_features(True, seed=e) for e in (1, 3)}
    a = analyze_features(sets, tmp_path / "a", num_coarse=5,
        options=AnalysisOptions(reduce="pca", make_figures=False))
    b = analyze_features(sets, tmp_path / "b", num_coarse=5,
        options=AnalysisOptions(reduce="pca", make_figures=False))
    assert a["fine_structure"] == b["fine_structure"]
    assert sorted(a["fine_structure"]["by_epoch"]) == [1, 3]
    c = analyze_features(sets, tmp_path / "c", num_coarse=5,
        options=AnalysisOptions(reduce="pca", make_figures=False, significance=sig.SignificanceOptions(
            permutations=50, bootstrap=0, seed=7)))
    fs = c["fine_structure"]
    assert fs["permutations"] == 50 and fs["msdr_ci"] is None and fs["seed"] == 7
    assert fs["msdr_p_value"] == pytest.approx(1 / 51)  # planted: beyond every draw


def test_fine_runs_shuffle_the_labels_inside_each_class(tmp_path):
    from ncfine_jax.labels import LabelMapping

    f = coarse_features(False)
    rng = np.random.default_rng(0)
    # The two training labels of a class are random halves: nothing inside a class.
    halves = np.zeros_like(f["train_classes"])
    for k in range(10):
        idx = np.flatnonzero(f["train_classes"] == k)
        halves[rng.permutation(idx)[: idx.size // 2]] = 1
    y = 2 * f["train_classes"] + halves
    yt = 2 * f["test_classes"] + (np.arange(f["test_classes"].size) % 2)
    m = LabelMapping(kind="fine", num_classes=10, num_labels=20, seed=0,
                     classes_of_label=tuple((k // 2,) for k in range(20)))
    fs = analyze_features(dict(f, train_labels=y, test_labels=yt), tmp_path, m,
        options=AnalysisOptions(reduce="pca", make_figures=False))["fine_structure"]
    assert fs["verdict"] == "absent" and fs["cluster_accuracy"] is None
    assert fs["msdr_p_value"] > 0.05


def test_bad_input_one_line_nothing_written(tmp_path):
    from ncfine_jax.labels import LabelMapping

    # A label holding a single class: nothing inside it to separate.
    f = coarse_features(True)
    for split in ("train", "test"):
        f[f"{split}_labels"] = np.where(f[f"{split}_classes"] == 9, 5, f[f"{split}_labels"])
    single = LabelMapping(kind="coarse", num_classes=10, num_labels=6, num_coarse=5,
                          classes_of_label=((0, 5), (1, 6), (2, 7), (3, 8), (4,), (9,)))
    # A class with one training sample: no variance.
    g = coarse_features(True)
    nine = np.flatnonzero(g["train_classes"] == 9)
    keep = np.setdiff1d(np.arange(g["train_classes"].size), nine[1:])
    for k in ("train_features", "train_labels", "train_classes"):
        g[k] = g[k][keep]
    for features, mapping, needle in ((f, single, "holds a single class"),
                                      (g, None, "has 1 training sample")):
        out = tmp_path / "out"
        with pytest.raises(ConfigError, match=needle) as e:
            analyze_features(features, out, mapping, num_coarse=None if mapping else 5,
                options=AnalysisOptions(reduce="pca", make_figures=False))
        assert "\n" not in str(e.value)
        assert not out.exists()
    # Without the test the same input is analysed, and the block says why it is empty.
    fs = analyze_features(f, tmp_path / "off", single,
        options=AnalysisOptions(reduce="pca", make_figures=False, significance=False))["fine_structure"]
    assert fs["verdict"] is None and "not run" in fs["reason"] and fs["msdr"] is None


def test_bad_options_and_nan_features(tmp_path):
    for bad in (dict(alpha=0.0), dict(alpha=1.5), dict(permutations=0), dict(bootstrap=-1),
                dict(permutations=2.5)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            analyze_features(coarse_features(True), tmp_path / "o", num_coarse=5,
                options=AnalysisOptions(reduce="pca", make_figures=False,
                                        significance=sig.SignificanceOptions(**bad)))
    f = coarse_features(True)
    f["train_features"][3, 2] = np.nan
    with pytest.raises((ConfigError, DataError)):
        analyze_features(f, tmp_path / "o", num_coarse=5,
            options=AnalysisOptions(reduce="pca", make_figures=False))
    assert not (tmp_path / "o").exists()


def test_original_labels_have_no_fine_structure_question(tmp_path):
    f = coarse_features(True)
    f["train_labels"], f["test_labels"] = f["train_classes"], f["test_classes"]
    r = analyze_features(f, tmp_path, num_coarse=None,
        options=AnalysisOptions(reduce="pca", make_figures=False))
    fs = r["fine_structure"]
    assert fs["verdict"] is None and "original" in fs["reason"]


def test_the_observed_msdr_is_draw_0_of_its_nulls_own_call(monkeypatch):
    """The observed value and the null draws go through one kernel call with one layout,
    so they round alike (a separate call rounded differently, by up to 2.6e-5)."""
    calls = []
    original = sig.msdr_draws
    monkeypatch.setattr(sig, "msdr_draws", lambda f, a, *rest, **kw: calls.append(
        np.array(a)) or original(f, a, *rest, **kw))
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(4), 30)
    labels = classes // 2
    x = rng.normal(size=(120, 5)) + 3 * np.eye(5)[classes]
    out = sig.msdr_significance(x, labels, classes, np.array([0, 0, 1, 1]),
                                sig.SignificanceOptions(permutations=50, bootstrap=20))
    null_call = calls[0]
    assert null_call.shape == (51, 120) and (null_call[0] == classes).all()
    assert out["msdr"] == pytest.approx(original(x, null_call[:1], np.ones((1, 120)),
                                                 np.array([0, 0, 1, 1]), labels)[0], rel=1e-5)
    lo, hi = out["msdr_ci"]
    assert lo <= out["msdr"] <= hi and out["msdr_null_p025"] <= out["msdr_null_p975"]


def test_effect_sizes_and_their_intervals_are_in_the_block(tmp_path):
    rng = np.random.default_rng(1)
    classes = np.repeat(np.arange(4), 60)
    x = (rng.normal(size=(240, 6)) + 2.0 * np.eye(6)[classes]).astype(np.float32)
    test_classes = np.repeat(np.arange(4), 20)
    xt = (rng.normal(size=(80, 6)) + 2.0 * np.eye(6)[test_classes]).astype(np.float32)
    res = analyze_features({1: {"train_features": x, "train_classes": classes,
                                "train_labels": classes % 2, "test_features": xt,
                                "test_classes": test_classes, "test_labels": test_classes % 2}},
                           tmp_path, num_coarse=2, options=AnalysisOptions(
                               reduce="pca", make_figures=False,
                               significance=sig.SignificanceOptions(permutations=100,
                                                                    bootstrap=50)))
    fs = res["fine_structure"]
    for key, value in (("msdr_excess", fs["msdr"] - fs["msdr_null_p50"]),
                       ("cluster_effect", fs["cluster_accuracy"] - fs["cluster_accuracy_null_p50"]),
                       ("clp_effect", fs["clp_train_mapping"] - fs["clp_null_p50"]),
                       ("clp_minus_lpo", fs["clp_train_mapping"] - res["lpo_accuracy"])):
        assert fs[key] == pytest.approx(value)
        lo, hi = fs[f"{key}_ci"]
        assert lo <= fs[key] <= hi, key
    assert fs["test_samples"] == 80
    assert "Effects over the null medians" in (tmp_path / "report.md").read_text()
