"""Each claim of ``ncfine_jax.paper.claims`` judged on a planted input (holds), on a null
input measured precisely (does not hold) or loosely (uninformative), and on a network
outside the claim's regime (uninformative); the decision rule and the family adjustment."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ncfine_jax.paper import claims as cl
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.claims import verdicts as v
from ncfine_jax.paper.evidence import NotRun

EPOCHS = (1, 5, 10)
MAIN = (0.05, 5e-4)
NULL_MSDR = 1.01


def fine_structure(present=True, epochs=EPOCHS, width=0.01, pv=None) -> dict:
    """A results.json ``fine_structure`` block. ``present``: effects far beyond the null
    (MSDR excess 0.29, clusters +0.29, CLP +0.25); otherwise the statistics sit at their
    null medians. ``width``: half-width of every interval (wide = too little data)."""
    msdr, cluster, clp = (1.30, 0.80, 0.60) if present else (NULL_MSDR, 0.51, 0.35)
    pv = (0.0005 if present else 0.45) if pv is None else pv
    block = {"alpha": 0.01, "permutations": 2000, "bootstrap": 100, "seed": 0,
             "epoch": epochs[-1], "verdict": "present" if present else "absent", "reason": None,
             "p_value": pv, "msdr": msdr, "msdr_p_value": pv, "msdr_null_p50": NULL_MSDR,
             "msdr_null_p99": NULL_MSDR + 0.01, "msdr_ci": [msdr - width, msdr + width],
             "cluster_accuracy": cluster, "cluster_accuracy_p_value": pv,
             "cluster_accuracy_null_p50": 0.51, "cluster_accuracy_null_p99": 0.53,
             "cluster_accuracy_ci": [cluster - width, cluster + width], "chance": 0.51,
             "clp_train_mapping": clp, "clp_p_value": pv, "clp_null_p50": 0.35,
             "clp_null_p99": 0.37, "clp_ci": [clp - width, clp + width],
             "clp_minus_lpo": None, "clp_minus_lpo_ci": None, "test_samples": 1000}
    for name, value, median in (("msdr_excess", "msdr", "msdr_null_p50"),
                                ("cluster_effect", "cluster_accuracy", "cluster_accuracy_null_p50"),
                                ("clp_effect", "clp_train_mapping", "clp_null_p50")):
        block[name] = block[value] - block[median]
        block[f"{name}_ci"] = [block[name] - width, block[name] + width]
    block["by_epoch"] = {e: {"msdr": msdr, "msdr_p_value": pv,
                             "msdr_null_p50": NULL_MSDR, "msdr_null_p99": NULL_MSDR + 0.01,
                             "msdr_null_p025": NULL_MSDR - 0.005,
                             "msdr_null_p975": NULL_MSDR + 0.005} for e in epochs}
    return block


def run_results(present=True, terminal=True, lpo=0.62, test_acc=0.5, nc2_falls=True,
                epochs=EPOCHS, num_classes=10, num_labels=5, width=0.01, pv=None) -> dict:
    nc1 = np.geomspace(10, 0.5 if terminal else 8, len(epochs))
    nc2 = np.linspace(0.8, 0.3 if nc2_falls else 0.9, len(epochs))
    fs = fine_structure(present, epochs, width, pv)
    fs["clp_minus_lpo"] = fs["clp_train_mapping"] - lpo
    fs["clp_minus_lpo_ci"] = [fs["clp_minus_lpo"] - 0.02, fs["clp_minus_lpo"] + 0.02]
    return {"final_train_accuracy": 1.0 if terminal else 0.6, "final_test_accuracy": test_acc,
            "nc1": {str(e): float(x) for e, x in zip(epochs, nc1)},
            "nc2": {str(e): float(x) for e, x in zip(epochs, nc2)},
            "msdr": {str(e): 1.2 for e in epochs}, "lpo_accuracy": lpo,
            "label_mapping": {"num_classes": num_classes, "num_labels": num_labels},
            "analysis": {"inputs": {str(e): {"n_test": 1000} for e in epochs}},
            "clp_details": {"per_superclass": [{"label": l, "cluster_accuracy_train": 0.5 + l / 20}
                                               for l in range(num_labels)]},
            "fine_structure": fs}


def distance_matrix(superclass, diag, within, across) -> np.ndarray:
    """D with ``diag`` on the diagonal, ``within`` between classes of one group and
    ``across`` between groups."""
    s = np.asarray(superclass)
    D = np.where(s[:, None] == s[None, :], within, across).astype(np.float64)
    np.fill_diagonal(D, diag)
    return D


COARSE = np.arange(10) % 5


def d_over_epochs(lines: dict, diag: float | dict = 1.0, seed: int = 0) -> dict:
    """{epoch: D} of coarse labels (y mod 5) whose line contrast (D across labels / D
    between the classes of one label) is ``lines[epoch]``, with a little noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for e, contrast in lines.items():
        d = diag[e] if isinstance(diag, dict) else diag
        D = distance_matrix(COARSE, d, 6.0 / contrast, 6.0)
        N = rng.uniform(-0.05, 0.05, D.shape)
        out[e] = D + (N + N.T) / 2
    return out


D_MAIN = d_over_epochs({e: 3.0 for e in EPOCHS})
GROWING = {1: 1.0, 5: 1.05, 10: 2.0}  # within-label lines appear after the labels
EARLY = {1: 1.0, 5: 2.0, 10: 2.0}  # lines already there at the first early epoch


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


def outcome(key, ev):
    return claim(key).judge(ev)


def verdict(key, ev):
    try:
        return outcome(key, ev).verdict
    except NotRun:
        return cl.NOT_RUN


def main_evidence(present=True, terminal=True, ot_acc=0.65, d_lines=None, diag=1.0, **kw):
    results = {(p.GRID, MAIN): run_results(present, terminal, **kw),
               p.OT: run_results(True, terminal, test_acc=ot_acc)}
    D = D_MAIN if d_lines is None else d_over_epochs(d_lines, diag)
    return FakeEvidence(results, {(p.GRID, MAIN): (D, COARSE)})


MAIN_CLAIMS = ["msdr_above_1", "clusters_find_classes", "clp_close_to_lpo", "clp_close_to_ot",
               "resnet18"]


@pytest.mark.parametrize("key", MAIN_CLAIMS)
def test_main_run_claims_hold_planted_say_no_to_a_measured_null_and_need_the_regime(key):
    assert verdict(key, main_evidence(present=True)) == cl.HOLDS
    # At their nulls, measured precisely: the intervals exclude the claimed effects.
    assert verdict(key, main_evidence(present=False, pv=0.001, width=0.005)) == cl.FAILS
    # At their nulls with wide intervals and no significance: too little data (LPO and OT
    # as low as CLP, so that only the structure is in question).
    assert verdict(key, main_evidence(present=False, width=0.3, lpo=0.36, ot_acc=0.36)) \
        == cl.UNINFORMATIVE
    assert verdict(key, main_evidence(present=True, terminal=False)) == cl.UNINFORMATIVE


@pytest.mark.parametrize("key", MAIN_CLAIMS)
def test_a_p_value_above_alpha_alone_is_uninformative_never_a_no(key):
    out = outcome(key, main_evidence(present=True, pv=0.3))
    assert out.verdict == cl.UNINFORMATIVE
    assert [t["result"] for t in out.decided_by if t["quantity"] == "p"] == [cl.UNINFORMATIVE]


def test_clp_must_also_be_close_to_lpo_and_ot():
    assert verdict("clp_close_to_lpo", main_evidence(lpo=0.85)) == cl.FAILS  # CLP - LPO -0.25
    assert verdict("clp_close_to_lpo", main_evidence(lpo=0.70)) == cl.UNINFORMATIVE  # -0.1 in CI
    ev = main_evidence()
    ev._results[p.OT] = run_results(True, True, test_acc=0.9)
    assert verdict("clp_close_to_ot", ev) == cl.FAILS
    ev._results[p.OT] = run_results(True, True, test_acc=0.70)  # -0.10: within the interval
    out = outcome("clp_close_to_ot", ev)
    assert out.verdict == cl.UNINFORMATIVE and out.decided_by[-1]["quantity"] == "CLP - OT"
    ev._results[p.OT] = run_results(True, False, test_acc=0.65)  # OT at chance
    assert verdict("clp_close_to_ot", ev) == cl.UNINFORMATIVE


def test_an_effect_below_its_size_is_a_no_even_when_significant():
    r = run_results(True)
    fs = r["fine_structure"]
    fs["msdr_excess"], fs["msdr_excess_ci"] = 0.004, [0.002, 0.006]  # p tiny, effect tiny
    assert verdict("msdr_above_1", FakeEvidence({(p.GRID, MAIN): r})) == cl.FAILS
    r = run_results(True)
    r["fine_structure"]["cluster_effect_ci"] = [0.02, 0.06]
    assert verdict("clusters_find_classes", FakeEvidence({(p.GRID, MAIN): r})) == cl.FAILS


def test_nc1_falls_needs_collapse_and_significance_at_every_epoch():
    assert verdict("nc1_falls_msdr_stays", main_evidence()) == cl.HOLDS
    assert verdict("nc1_falls_msdr_stays", main_evidence(nc2_falls=False)) == cl.FAILS
    r = run_results(True)
    r["fine_structure"]["by_epoch"][5]["msdr_p_value"] = 0.3  # not beyond its null there
    assert verdict("nc1_falls_msdr_stays", FakeEvidence({(p.GRID, MAIN): r})) == cl.UNINFORMATIVE


def test_a_run_without_the_effect_sizes_is_not_run():
    r = run_results(True)
    del r["fine_structure"]
    with pytest.raises(NotRun, match="significance"):
        outcome("msdr_above_1", FakeEvidence({(p.GRID, MAIN): r}))
    r = run_results(True)
    del r["fine_structure"]["msdr_excess_ci"]
    with pytest.raises(NotRun, match="predates"):
        outcome("msdr_above_1", FakeEvidence({(p.GRID, MAIN): r}))


def test_diagonal_first_is_decided_by_the_growth_of_the_within_label_lines():
    assert verdict("diagonal_before_lines", main_evidence(d_lines=GROWING)) == cl.HOLDS
    assert verdict("diagonal_before_lines", main_evidence(d_lines={1: 1.0, 5: 2.0, 10: 1.05})) \
        == cl.FAILS  # the lines fade
    assert verdict("diagonal_before_lines", main_evidence(d_lines=EARLY)) == cl.UNINFORMATIVE
    # Lines that grow, but no diagonal at the early epoch (each class as wide as the
    # distances between classes): the lines came first.
    assert verdict("diagonal_before_lines", main_evidence(
        d_lines=GROWING, diag={1: 6.0, 5: 6.0, 10: 1.0})) == cl.FAILS
    ev = main_evidence(d_lines=GROWING)
    ev._accuracy[(p.GRID, MAIN)] = {1: 0.2, 5: 0.3, 10: 0.4}  # never half learned
    assert verdict("diagonal_before_lines", ev) == cl.UNINFORMATIVE


def test_vgg_judged_by_how_far_its_lines_are_at_the_early_epoch():
    def ev(vgg_lines, arch="vgg16", resnet_lines=GROWING):
        e = main_evidence(d_lines=resnet_lines)
        e._results[p.VGG] = run_results(True)
        e._distances[p.VGG] = (d_over_epochs(vgg_lines, seed=1), COARSE)
        e._archs[p.VGG] = arch
        return e
    assert verdict("vgg_lacks_structure", ev(EARLY)) == cl.HOLDS
    assert verdict("vgg_lacks_structure", ev({1: 1.0, 5: 1.0, 10: 2.0},
                                             resnet_lines=EARLY)) == cl.FAILS
    assert verdict("vgg_lacks_structure", ev(GROWING)) == cl.UNINFORMATIVE  # the same as ResNet
    assert verdict("vgg_lacks_structure", ev(EARLY, arch="mlp")) == cl.NOT_RUN


def test_structure_claims_of_other_runs():
    for key, name, point in (("long_training", p.LONG, None), ("random_coarse", p.RANDOM, None),
                             ("weight_decay_0", p.GRID, (MAIN[0], 0.0)),
                             ("densenet121", p.DENSENET, None)):
        for kw, expected in ((dict(present=True), cl.HOLDS),
                             (dict(present=False, pv=0.001, width=0.005), cl.FAILS),
                             (dict(present=False, width=0.3), cl.UNINFORMATIVE),
                             (dict(present=True, terminal=False), cl.UNINFORMATIVE)):
            ev = FakeEvidence({(name, point) if point else name: run_results(**kw)},
                              archs={p.DENSENET: "densenet121"})
            assert verdict(key, ev) == expected, (key, kw)


def test_grid_counts_only_points_in_the_regime():
    points = [(0.05, 5e-4), (0.05, 0.0), (0.01, 5e-4), (0.01, 0.0)]

    def ev(present, terminal):
        return FakeEvidence({(p.GRID, pt): run_results(a, b, pv=0.0005 if a else 0.001)
                             for pt, a, b in zip(points, present, terminal)}, grid=points)
    assert verdict("lr_wd_grid", ev([1, 1, 1, 0], [1, 1, 1, 1])) == cl.HOLDS
    assert verdict("lr_wd_grid", ev([1, 0, 0, 0], [1, 1, 1, 1])) == cl.FAILS
    # Points outside the regime are not judged: the one in it decides.
    assert verdict("lr_wd_grid", ev([1, 0, 0, 0], [1, 0, 0, 0])) == cl.HOLDS
    assert verdict("lr_wd_grid", ev([1, 1, 1, 1], [0, 0, 0, 0])) == cl.UNINFORMATIVE


def test_cifar100_superclasses_partly():
    def ev(super_present, super_cluster):
        sup = run_results(super_present, num_classes=100, num_labels=20, pv=0.001)
        fs = sup["fine_structure"]
        fs["cluster_effect"] = super_cluster - 0.51
        fs["cluster_effect_ci"] = [fs["cluster_effect"] - 0.01, fs["cluster_effect"] + 0.01]
        return FakeEvidence({p.CIFAR100_COARSE: run_results(True, num_classes=100, num_labels=20),
                             p.CIFAR100_SUPER: sup})
    assert verdict("cifar100", ev(True, 0.65)) == cl.HOLDS  # separated, less than y mod 20
    assert verdict("cifar100", ev(True, 0.85)) == cl.FAILS  # better separated than y mod 20


def test_fine_cifar10_against_random_regrouping():
    pairs = np.repeat(np.arange(10), 2)
    rng = np.random.default_rng(0)

    def noisy(D):
        N = rng.uniform(-0.05, 0.05, D.shape)
        return D + (N + N.T) / 2

    planted = {e: noisy(distance_matrix(pairs, 1.0, 2.0, 3.0)) for e in EPOCHS}
    null = {e: noisy(distance_matrix(pairs, 1.0, 3.0, 3.0)) for e in EPOCHS}
    for D, expected in ((planted, (cl.HOLDS,)), (null, (cl.FAILS, cl.UNINFORMATIVE))):
        ev = FakeEvidence({p.FINE: run_results(True, num_labels=20)}, {p.FINE: (D, pairs)})
        assert verdict("fine_cifar10", ev) in expected


def gm_records(vary, values, level, seeds=3, acc=1.0, noise=0.02, seed=0,
               sigma2s=(0.0, 1.0, 4.0, 16.0)):
    """Fig. 18-20 records: MSDR = level(value, sigma2) x seed noise."""
    rng = np.random.default_rng(seed)
    out = []
    for value in values:
        for s2 in sigma2s:
            per_seed = [float(level(value, s2) * (1 + noise * rng.standard_normal()))
                        for _ in range(seeds)]
            out.append({"vary": vary, "value": value, "sigma2": s2, "tau2": None,
                        "subclasses": "all", "msdr_mean": float(np.mean(per_seed)),
                        "msdr_std": float(np.std(per_seed, ddof=1)) if seeds > 1 else 0.0,
                        "train_acc_min": acc, "train_acc_mean": acc, "msdr_per_seed": per_seed})
    return out


def gm_evidence(name, records, pytorch_records=None):
    return FakeEvidence(records={name: records,
                                 p.pytorch_variant(name): pytorch_records or records})


def test_gm_width_trends_need_an_effect_beyond_the_seed_spread():
    rising = lambda val, s2: 1 + s2 * val / 64
    flat = lambda val, s2: 1 + s2 / 4
    for key, name, vary in (("gm_d_input", p.GM_D_INPUT, "d_input"),
                            ("gm_d_hidden", p.GM_D_HIDDEN, "d_hidden")):
        planted = gm_records(vary, (16, 32, 64), rising)
        assert verdict(key, gm_evidence(name, planted)) == cl.HOLDS
        # No trend, seeds agreeing: the interval of the difference excludes... nothing above
        # 0 beyond noise, so no evidence for the claim.
        null = gm_records(vary, (16, 32, 64), flat, noise=0.05)
        assert verdict(key, gm_evidence(name, null)) in (cl.FAILS, cl.UNINFORMATIVE)
        falling = gm_records(vary, (16, 32, 64), lambda val, s2: 1 + s2 * 64 / val)
        assert verdict(key, gm_evidence(name, falling)) == cl.FAILS
        # One parameterisation without the trend: the claim does not hold.
        assert verdict(key, gm_evidence(name, planted, falling)) == cl.FAILS
        # MLPs that did not learn their labels say nothing.
        assert verdict(key, gm_evidence(name, gm_records(vary, (16, 32, 64), rising, acc=0.3))) \
            == cl.UNINFORMATIVE
        # One seed: no interval, no verdict either way.
        one = gm_records(vary, (16, 32, 64), rising, seeds=1)
        assert verdict(key, gm_evidence(name, one)) == cl.UNINFORMATIVE


def test_a_composite_claim_is_judged_on_the_parts_in_their_regime_and_says_which():
    rising = lambda val, s2: 1 + s2 * val / 64
    untrained = gm_records("d_input", (16, 32, 64), rising, acc=0.3)
    out = outcome("gm_d_input", gm_evidence(p.GM_D_INPUT, gm_records("d_input", (16, 32, 64),
                                                                     rising), untrained))
    assert out.verdict == cl.HOLDS and out.regime["judged"] == ["mup"]
    assert "PyTorch defaults" in out.regime["not_judged"]
    assert all(t["quantity"].startswith("mup: ") for t in out.decided_by)
    ev = FakeEvidence(records={p.GM_D_INPUT: gm_records("d_input", (16, 32), rising)})
    out = outcome("gm_d_input", ev)  # PyTorch defaults not run: judged on mup, said so
    assert out.verdict == cl.HOLDS and "not run" in out.regime["not_judged"]["PyTorch defaults"]


def test_gm_trend_in_rank_order_but_inside_the_seed_noise_is_no_trend():
    # Line means rise 16 < 32 < 64 (rank correlation 1), but the largest minus the smallest
    # width, paired by seed, is +0.03, -0.03, +0.04: well inside its t-interval.
    seeds = {16: [2.0, 4.0, 8.0], 32: [2.01, 4.0, 8.01], 64: [2.06, 3.88, 8.32]}
    records = []
    for value, per_seed in seeds.items():
        for s2 in (4.0, 16.0):
            records.append({"vary": "d_input", "value": value, "sigma2": s2, "tau2": None,
                            "subclasses": "all", "msdr_mean": float(np.mean(per_seed)),
                            "msdr_std": float(np.std(per_seed, ddof=1)), "train_acc_min": 1.0,
                            "train_acc_mean": 1.0, "msdr_per_seed": per_seed})
    out = outcome("gm_d_input", gm_evidence(p.GM_D_INPUT, records))
    assert out.verdict == cl.UNINFORMATIVE
    lo, hi = out.decided_by[0]["interval"]
    assert lo < 0 < hi


def test_gm_sigma2_and_flat_weight_decay_as_an_equivalence_test():
    rising = gm_records("d_input", (16, 32), lambda val, s2: 1 + s2)
    falling = gm_records("d_input", (16, 32), lambda val, s2: 10 - s2 / 2)
    assert verdict("gm_sigma2", gm_evidence(p.GM_D_INPUT, rising)) == cl.HOLDS
    assert verdict("gm_sigma2", gm_evidence(p.GM_D_INPUT, falling)) == cl.FAILS
    values = (0.0, 1e-3, 1e-2)
    flat = gm_records("weight_decay", values, lambda val, s2: 1 + s2, noise=0.01)
    moved = gm_records("weight_decay", values, lambda val, s2: (1 + s2) * (1 + 100 * val))
    noisy = gm_records("weight_decay", values, lambda val, s2: 1 + s2, noise=0.3)
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, flat)) == cl.HOLDS
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, moved)) == cl.FAILS
    # Flatness is not the absence of evidence: a wide interval is uninformative.
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, noisy)) == cl.UNINFORMATIVE
    one = gm_records("weight_decay", values, lambda val, s2: 1 + s2, seeds=1)
    assert verdict("gm_weight_decay", gm_evidence(p.GM_WEIGHT_DECAY, one)) == cl.UNINFORMATIVE


def test_gm_tau2_judged_by_its_trend_not_by_tau2_zero():
    def records(similar, noise=0.02):
        rng = np.random.default_rng(0)
        out = []
        for t, x in zip((0.0, 1.0, 4.0, 16.0), similar):
            for kind, mean in (("similar", x), ("dissimilar", 8.0)):
                per_seed = [mean * (1 + noise * rng.standard_normal()) for _ in range(3)]
                out.append({"tau2": t, "subclasses": kind, "msdr_mean": float(np.mean(per_seed)),
                            "msdr_std": float(np.std(per_seed, ddof=1)), "train_acc_min": 1.0,
                            "train_acc_mean": 1.0, "msdr_per_seed": per_seed})
        return out
    assert verdict("gm_similar_subclasses",
                   gm_evidence(p.GM_TAU2, records((1.0, 1.5, 3.0, 6.0)))) == cl.HOLDS
    # MSDR ~1 at tau^2 = 0 (true by construction) but no separation as tau^2 grows.
    assert verdict("gm_similar_subclasses",
                   gm_evidence(p.GM_TAU2, records((1.0, 1.01, 0.99, 1.0)))) \
        in (cl.FAILS, cl.UNINFORMATIVE)
    assert verdict("gm_similar_subclasses",
                   gm_evidence(p.GM_TAU2, records((6.0, 3.0, 1.5, 1.0)))) == cl.FAILS


def test_every_judged_claim_says_what_decided_it_and_carries_its_regime():
    ev = main_evidence(d_lines=GROWING)
    ev._results[p.VGG] = run_results(True)
    ev._distances[p.VGG] = (d_over_epochs(EARLY, seed=1), COARSE)
    ev._archs[p.VGG] = "vgg16"
    for key in MAIN_CLAIMS + ["diagonal_before_lines", "nc1_falls_msdr_stays",
                              "vgg_lacks_structure"]:
        out = outcome(key, ev)
        assert out.decided_by and out.regime is not None, key
        for t in out.decided_by:
            assert {"quantity", "estimate", "threshold", "side", "result"} <= set(t), (key, t)
            assert t["side"] in ("above", "below", "within")
            assert t["quantity"] == "p" or t["interval"] is None or len(t["interval"]) == 2
        assert out.verdict == cl.decide(out.decided_by)
    out = outcome("msdr_above_1", ev)
    assert out.regime["met"] is True and out.regime["train_accuracy"] == 1.0
    assert out.regime["nc1_drop"] == pytest.approx(20.0) and out.p_value == 0.0005
    out = outcome("clp_close_to_ot", ev)
    assert [g["run"] for g in out.regime["runs"]] == [f"{p.GRID}/lr0.05_wd0.0005", p.OT]
    assert math.isfinite(out.regime["nc1_last"])


def test_the_decision_rule():
    def t(interval, threshold=0.0, side="above"):
        return v.interval_test("x", 0.0, interval, threshold, side, "test")
    assert [t([0.1, 0.2])["result"], t([-0.2, -0.1])["result"], t([-0.1, 0.1])["result"],
            t(None)["result"]] == [cl.HOLDS, cl.FAILS, cl.UNINFORMATIVE, cl.UNINFORMATIVE]
    assert t([-0.2, -0.1], side="below")["result"] == cl.HOLDS
    assert [t([-0.1, 0.1], [-0.2, 0.2], "within")["result"],
            t([0.3, 0.4], [-0.2, 0.2], "within")["result"],
            t([0.1, 0.3], [-0.2, 0.2], "within")["result"]] == [cl.HOLDS, cl.FAILS,
                                                                 cl.UNINFORMATIVE]
    assert v.p_test("m", 0.5, 0.01)["result"] == cl.UNINFORMATIVE  # never "does not hold"
    holds, fails, maybe = t([0.1, 0.2]), t([-0.2, -0.1]), t([-0.1, 0.1])
    assert cl.decide([holds, holds]) == cl.HOLDS
    assert cl.decide([holds, maybe]) == cl.UNINFORMATIVE
    assert cl.decide([maybe, fails, holds]) == cl.FAILS
    assert v.exact_test("r", 12.0, 10.0, "above", "exact")["result"] == cl.HOLDS


def test_holm_adjusts_the_family_and_the_verdicts_follow():
    assert cl.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    outcomes = [outcome("msdr_above_1", main_evidence(pv=0.004)),
                outcome("clusters_find_classes", main_evidence(pv=0.0005)),
                outcome("resnet18", main_evidence(pv=0.004))]
    assert [o.verdict for o in outcomes] == [cl.HOLDS] * 3  # each alone at alpha 0.01
    assert cl.adjust_family(outcomes) == 3
    # Holm: 3 x 0.0005, then 2 x 0.004 = 0.008 <= 0.01 ... both 0.004 get 0.008.
    assert [o.decided_by[0]["adjusted"] for o in outcomes] == pytest.approx(
        [0.008, 0.0015, 0.008])
    assert [o.verdict for o in outcomes] == [cl.HOLDS] * 3
    outcomes = [outcome(k, main_evidence(pv=0.006)) for k in MAIN_CLAIMS]
    cl.adjust_family(outcomes)  # 5 x 0.006 > 0.01: no longer significant
    assert {o.verdict for o in outcomes} == {cl.UNINFORMATIVE}
