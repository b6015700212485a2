"""Each claim of ``ncfine_jax.paper.claims`` judged on a planted input (holds) and on a null
input or a network outside the claim's regime (does not hold / uninformative)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ncfine_jax.paper import claims as cl
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.evidence import NotRun

EPOCHS = (1, 5, 10)
MAIN = (0.05, 5e-4)


def fine_structure(present: bool, epochs=EPOCHS) -> dict:
    """A results.json ``fine_structure`` block: planted structure far beyond the null, or
    numbers at their null."""
    msdr, cluster, clp, pv = (1.30, 0.80, 0.60, 0.005) if present else (1.011, 0.512, 0.351, 0.45)
    return {"alpha": 0.01, "permutations": 200, "bootstrap": 100, "seed": 0,
            "epoch": epochs[-1], "verdict": "present" if present else "absent", "reason": None,
            "p_value": pv, "msdr": msdr, "msdr_p_value": pv, "msdr_null_p50": 1.01,
            "msdr_null_p99": 1.02, "msdr_ci": [msdr - 0.01, msdr + 0.01],
            "cluster_accuracy": cluster, "cluster_accuracy_p_value": pv,
            "cluster_accuracy_null_p50": 0.51, "cluster_accuracy_null_p99": 0.53,
            "chance": 0.51, "clp_train_mapping": clp, "clp_p_value": pv, "clp_null_p50": 0.35,
            "clp_null_p99": 0.37, "clp_ci": [clp - 0.02, clp + 0.02],
            "by_epoch": {e: {"msdr": msdr, "msdr_p_value": pv, "msdr_null_p50": 1.01,
                             "msdr_null_p99": 1.02} for e in epochs}}


def run_results(present=True, terminal=True, lpo=0.62, test_acc=0.5, nc2_falls=True,
                epochs=EPOCHS, num_classes=10, num_labels=5) -> dict:
    nc1 = np.geomspace(10, 0.5 if terminal else 8, len(epochs))
    nc2 = np.linspace(0.8, 0.3 if nc2_falls else 0.9, len(epochs))
    return {"final_train_accuracy": 1.0 if terminal else 0.6, "final_test_accuracy": test_acc,
            "nc1": {str(e): float(v) for e, v in zip(epochs, nc1)},
            "nc2": {str(e): float(v) for e, v in zip(epochs, nc2)},
            "msdr": {str(e): 1.2 for e in epochs}, "lpo_accuracy": lpo,
            "label_mapping": {"num_classes": num_classes, "num_labels": num_labels},
            "clp_details": {"per_superclass": [{"label": l, "cluster_accuracy_train": 0.5 + l / 20}
                                               for l in range(num_labels)]},
            "fine_structure": fine_structure(present, epochs)}


def distance_matrix(superclass, diag, within, across) -> np.ndarray:
    """D with ``diag`` on the diagonal, ``within`` between classes of one group and
    ``across`` between groups."""
    s = np.asarray(superclass)
    D = np.where(s[:, None] == s[None, :], within, across).astype(np.float64)
    np.fill_diagonal(D, diag)
    return D


COARSE = np.arange(10) % 5
# Diagonal first: early, classes are tight (diagonal) while the labels' lines are faint.
D_DIAGONAL_FIRST = {1: distance_matrix(COARSE, 2.0, 2.1, 2.2), 5: distance_matrix(COARSE, 2.0, 3.0, 3.3),
                    10: distance_matrix(COARSE, 1.0, 2.0, 6.0)}
# Lines first: the labels' lines are already strong at the first early epoch.
D_LINES_FIRST = {1: distance_matrix(COARSE, 2.0, 2.1, 2.2), 5: distance_matrix(COARSE, 2.0, 1.5, 4.5),
                 10: distance_matrix(COARSE, 1.0, 1.2, 6.0)}


class FakeEvidence:
    """The ``Evidence`` interface over in-memory results (name or (name, point) keys)."""

    def __init__(self, results=None, distances=None, accuracy=None, records=None, archs=None,
                 grid=(MAIN, (MAIN[0], 0.0))):
        self.main_lr, self.main_wd = MAIN
        self._results, self._distances = results or {}, distances or {}
        self._accuracy = accuracy or {}
        self._records, self._archs = records or {}, archs or {}
        self._grid = grid

    def _get(self, table, name, point):
        key = (name, point) if point is not None else name
        if key not in table:
            raise NotRun(f"{key} not run")
        return table[key]

    def results(self, name, point=None):
        return self._get(self._results, name, point)

    def distances(self, name, point=None):
        return self._get(self._distances, name, point)

    def train_accuracy(self, name, point=None):
        self.results(name, point)
        return self._accuracy.get((name, point) if point is not None else name,
                                  {1: 0.3, 5: 0.7, 10: 1.0})

    def records(self, name):
        return self._get(self._records, name, None)

    def config(self, name, point=None):
        return SimpleNamespace(arch=self._archs.get(name, "resnet18"))

    def item(self, name):
        return SimpleNamespace(configs=[SimpleNamespace(lr=lr, weight_decay=wd)
                                        for lr, wd in self._grid])


def claim(key):
    return next(c for c in cl.CLAIMS if c.key == key)


def verdict(key, ev):
    try:
        return claim(key).judge(ev).verdict
    except NotRun:
        return cl.NOT_RUN


def main_evidence(present=True, terminal=True, **kw):
    results = {(p.GRID, MAIN): run_results(present, terminal, **kw),
               p.OT: run_results(True, terminal, test_acc=0.65)}
    return FakeEvidence(results, {(p.GRID, MAIN): (D_DIAGONAL_FIRST, COARSE)})


@pytest.mark.parametrize("key", ["msdr_above_1", "clusters_find_classes", "clp_close_to_lpo",
                                 "clp_close_to_ot", "resnet18", "nc1_falls_msdr_stays"])
def test_main_run_claims_hold_on_planted_fail_on_null_and_need_the_regime(key):
    assert verdict(key, main_evidence(present=True)) == cl.HOLDS
    assert verdict(key, main_evidence(present=False)) == cl.FAILS
    assert verdict(key, main_evidence(present=True, terminal=False)) == cl.UNINFORMATIVE


def test_clp_must_also_be_close_to_lpo_and_ot():
    assert verdict("clp_close_to_lpo", main_evidence(lpo=0.85)) == cl.FAILS
    ev = main_evidence()
    ev._results[p.OT] = run_results(True, True, test_acc=0.9)
    assert verdict("clp_close_to_ot", ev) == cl.FAILS
    ev._results[p.OT] = run_results(True, False, test_acc=0.65)  # OT at chance
    assert verdict("clp_close_to_ot", ev) == cl.UNINFORMATIVE


def test_effect_size_and_collapse_are_needed_beyond_significance():
    r = run_results(True)
    r["fine_structure"]["msdr"] = 1.015  # significant, but excess only 1.5x the null's
    ev = FakeEvidence({(p.GRID, MAIN): r})
    assert verdict("msdr_above_1", ev) == cl.FAILS
    r = run_results(True)
    r["fine_structure"]["cluster_accuracy"] = 0.55  # significant, tiny effect
    assert verdict("clusters_find_classes", FakeEvidence({(p.GRID, MAIN): r})) == cl.FAILS
    assert verdict("nc1_falls_msdr_stays", main_evidence(nc2_falls=False)) == cl.FAILS
    r = run_results(True)
    r["fine_structure"]["by_epoch"][5]["msdr_p_value"] = 0.3  # merged at an early epoch
    assert verdict("nc1_falls_msdr_stays", FakeEvidence({(p.GRID, MAIN): r})) == cl.FAILS


def test_a_run_without_the_significance_block_is_not_run():
    r = run_results(True)
    del r["fine_structure"]
    ev = FakeEvidence({(p.GRID, MAIN): r})
    out = claim("msdr_above_1").judge
    with pytest.raises(NotRun, match="significance"):
        out(ev)


def test_diagonal_first_timing_and_its_regime():
    assert verdict("diagonal_before_lines", main_evidence()) == cl.HOLDS
    ev = main_evidence()
    ev._distances[(p.GRID, MAIN)] = (D_LINES_FIRST, COARSE)
    assert verdict("diagonal_before_lines", ev) == cl.FAILS
    ev = main_evidence()
    ev._accuracy[(p.GRID, MAIN)] = {1: 0.2, 5: 0.3, 10: 0.4}  # never half learned
    assert verdict("diagonal_before_lines", ev) == cl.UNINFORMATIVE


def test_vgg_judged_by_when_its_lines_appear():
    def ev(vgg_d, arch="vgg16"):
        e = main_evidence()
        e._results[p.VGG] = run_results(True)
        e._distances[p.VGG] = (vgg_d, COARSE)
        e._archs[p.VGG] = arch
        return e
    assert verdict("vgg_lacks_structure", ev(D_LINES_FIRST)) == cl.HOLDS
    assert verdict("vgg_lacks_structure", ev(D_DIAGONAL_FIRST)) == cl.FAILS  # same as ResNet
    assert verdict("vgg_lacks_structure", ev(D_LINES_FIRST, arch="mlp")) == cl.NOT_RUN


def test_structure_claims_of_other_runs():
    for key, name, point in (("long_training", p.LONG, None), ("random_coarse", p.RANDOM, None),
                             ("weight_decay_0", p.GRID, (MAIN[0], 0.0)),
                             ("densenet121", p.DENSENET, None)):
        for present, terminal, expected in ((True, True, cl.HOLDS), (False, True, cl.FAILS),
                                            (True, False, cl.UNINFORMATIVE)):
            ev = FakeEvidence({(name, point) if point else name:
                               run_results(present, terminal)},
                              archs={p.DENSENET: "densenet121"})
            assert verdict(key, ev) == expected, (key, present, terminal)


def test_grid_counts_only_points_in_the_regime():
    points = [(0.05, 5e-4), (0.05, 0.0), (0.01, 5e-4), (0.01, 0.0)]
    def ev(present, terminal):
        return FakeEvidence({(p.GRID, pt): run_results(a, b) for pt, a, b in
                             zip(points, present, terminal)}, grid=points)
    assert verdict("lr_wd_grid", ev([1, 1, 1, 0], [1, 1, 1, 1])) == cl.HOLDS
    assert verdict("lr_wd_grid", ev([1, 0, 0, 0], [1, 1, 1, 1])) == cl.FAILS
    # Points outside the regime are not judged: the one in it decides.
    assert verdict("lr_wd_grid", ev([1, 0, 0, 0], [1, 0, 0, 0])) == cl.HOLDS
    assert verdict("lr_wd_grid", ev([1, 1, 1, 1], [0, 0, 0, 0])) == cl.UNINFORMATIVE


def test_cifar100_superclasses_partly():
    def ev(super_present, super_cluster):
        sup = run_results(super_present, num_classes=100, num_labels=20)
        sup["fine_structure"]["cluster_accuracy"] = super_cluster
        return FakeEvidence({p.CIFAR100_COARSE: run_results(True, num_classes=100, num_labels=20),
                             p.CIFAR100_SUPER: sup})
    assert verdict("cifar100", ev(True, 0.65)) == cl.HOLDS  # separated, less than y mod 20
    assert verdict("cifar100", ev(True, 0.80)) == cl.FAILS  # as separated as arbitrary groups
    assert verdict("cifar100", ev(False, 0.512)) == cl.FAILS  # not separated at all


def test_fine_cifar10_against_random_regrouping():
    pairs = np.repeat(np.arange(10), 2)
    rng = np.random.default_rng(0)

    def noisy(D):
        N = rng.uniform(-0.05, 0.05, D.shape)
        return D + (N + N.T) / 2

    planted = {e: noisy(distance_matrix(pairs, 1.0, 2.0, 3.0)) for e in EPOCHS}
    null = {e: noisy(distance_matrix(pairs, 1.0, 3.0, 3.0)) for e in EPOCHS}
    for D, expected in ((planted, cl.HOLDS), (null, cl.FAILS)):
        ev = FakeEvidence({p.FINE: run_results(True, num_labels=20)}, {p.FINE: (D, pairs)})
        assert verdict("fine_cifar10", ev) == expected


def gm_records(vary, values, level, seeds=3, acc=1.0, noise=0.02, seed=0):
    """Fig. 18-20 records: MSDR = level(value, sigma2) x seed noise."""
    rng = np.random.default_rng(seed)
    out = []
    for v in values:
        for s2 in (0.0, 1.0, 4.0, 16.0):
            per_seed = [float(level(v, s2) * (1 + noise * rng.standard_normal())) for _ in range(seeds)]
            out.append({"vary": vary, "value": v, "sigma2": s2, "tau2": None, "subclasses": "all",
                        "msdr_mean": float(np.mean(per_seed)), "msdr_std": float(np.std(per_seed, ddof=1)),
                        "train_acc_min": acc, "train_acc_mean": acc, "msdr_per_seed": per_seed})
    return out


def gm_evidence(name, records, pytorch_records=None):
    return FakeEvidence(records={name: records,
                                 p.pytorch_variant(name): pytorch_records or records})


def test_gm_width_trends_need_an_effect_beyond_the_seed_spread():
    rising = lambda v, s2: 1 + s2 * v / 64
    flat_noisy = lambda v, s2: 1 + s2 / 4
    for key, name, vary in (("gm_d_input", p.GM_D_INPUT, "d_input"),
                            ("gm_d_hidden", p.GM_D_HIDDEN, "d_hidden")):
        planted = gm_records(vary, (16, 32, 64), rising)
        assert verdict(key, gm_evidence(name, planted)) == cl.HOLDS
        null = gm_records(vary, (16, 32, 64), flat_noisy, noise=0.05)
        assert verdict(key, gm_evidence(name, null)) == cl.FAILS
        # One parameterisation without the trend: the claim does not hold.
        assert verdict(key, gm_evidence(name, planted, null)) == cl.FAILS
        # MLPs that did not learn their labels say nothing.
        assert verdict(key, gm_evidence(name, gm_records(vary, (16, 32, 64), rising, acc=0.3))) \
            == cl.UNINFORMATIVE
    ev = FakeEvidence(records={p.GM_D_INPUT: gm_records("d_input", (16, 32, 64), rising)})
    assert verdict("gm_d_input", ev) == cl.NOT_RUN  # PyTorch defaults not run


def test_gm_trend_in_rank_order_but_inside_the_seed_noise_is_no_trend():
    # Line means rise 16 < 32 < 64 (rank correlation 1), but the largest minus the smallest
    # width, paired by seed, is +0.03, -0.03, +0.04: well inside its standard error.
    seeds = {16: [2.0, 4.0, 8.0], 32: [2.01, 4.0, 8.01], 64: [2.06, 3.88, 8.32]}
    records = []
    for v, per_seed in seeds.items():
        for s2 in (4.0, 16.0):
            records.append({"vary": "d_input", "value": v, "sigma2": s2, "tau2": None,
                            "subclasses": "all", "msdr_mean": float(np.mean(per_seed)),
                            "msdr_std": float(np.std(per_seed, ddof=1)), "train_acc_min": 1.0,
                            "train_acc_mean": 1.0, "msdr_per_seed": per_seed})
    out = claim("gm_d_input").judge(gm_evidence(p.GM_D_INPUT, records))
    assert out.values["mup"]["spearman"] == pytest.approx(1.0)
    assert out.verdict == cl.FAILS


def test_gm_sigma2_and_weight_decay():
    rising = gm_records("d_input", (16, 32), lambda v, s2: 1 + s2)
    falling = gm_records("d_input", (16, 32), lambda v, s2: 10 - s2 / 2)
    assert verdict("gm_sigma2", gm_evidence(p.GM_D_INPUT, rising)) == cl.HOLDS
    assert verdict("gm_sigma2", gm_evidence(p.GM_D_INPUT, falling)) == cl.FAILS
    flat = gm_records("weight_decay", (0.0, 1e-3, 1e-2), lambda v, s2: 1 + s2)
    moved = gm_records("weight_decay", (0.0, 1e-3, 1e-2), lambda v, s2: (1 + s2) * (1 + 100 * v))
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, flat)) == cl.HOLDS
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, moved)) == cl.FAILS


def test_gm_tau2_judged_by_its_trend_not_by_tau2_zero():
    def records(similar):
        out = []
        for t, x in zip((0.0, 1.0, 4.0, 16.0), similar):
            out.append({"tau2": t, "subclasses": "similar", "msdr_mean": x, "msdr_std": 0.02,
                        "train_acc_min": 1.0, "train_acc_mean": 1.0})
            out.append({"tau2": t, "subclasses": "dissimilar", "msdr_mean": 8.0, "msdr_std": 0.1,
                        "train_acc_min": 1.0, "train_acc_mean": 1.0})
        return out
    assert verdict("gm_similar_subclasses", gm_evidence(p.GM_TAU2, records((1.0, 1.5, 3.0, 6.0)))) \
        == cl.HOLDS
    # MSDR ~1 at tau^2 = 0 (true by construction) but no separation as tau^2 grows.
    assert verdict("gm_similar_subclasses", gm_evidence(p.GM_TAU2, records((1.0, 1.01, 0.99, 1.02)))) \
        == cl.FAILS


def test_every_claim_carries_its_regime_values():
    ev = main_evidence()
    out = claim("msdr_above_1").judge(ev)
    assert out.regime["met"] is True and out.regime["train_accuracy"] == 1.0
    assert out.regime["nc1_drop"] == pytest.approx(20.0) and out.p_value == 0.005
    out = claim("clp_close_to_ot").judge(ev)
    assert [g["run"] for g in out.regime["runs"]] == [f"{p.GRID}/lr0.05_wd0.0005", p.OT]
    assert math.isfinite(out.regime["nc1_last"])
