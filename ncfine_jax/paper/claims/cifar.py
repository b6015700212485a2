"""The judges of the CIFAR claims: each returns an ``Outcome`` decided by its tests
(``verdicts``) on runs in their regime (``gates``), or raises NotRun."""

from __future__ import annotations

import numpy as np

from ncfine_jax.analysis.regime import COLLAPSE_FACTOR, collapse
from ncfine_jax.paper import measures as m
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.claims.gates import (all_gates, decided, early_gate, f3, fine_structure,
                                           label, structure_tests, structure_text,
                                           terminal_gate)
from ncfine_jax.analysis.options import SignificanceOptions
from ncfine_jax.paper.claims.verdicts import (ABOVE_CHANCE, CLOSE, CLP_MARGIN, FAILS,
                                              FINE_MARGIN, GRID_FRACTION, HOLDS,
                                              LINES_PERMUTATIONS, MSDR_MIN_EXCESS,
                                              UNINFORMATIVE, Outcome, decide,
                                              difference_interval, exact_test, interval_test,
                                              p_test, proportion_interval)
from ncfine_jax.paper.evidence import Evidence, NotRun
from ncfine_jax.text import number

BOOTSTRAP = "bootstrap over training samples inside each class"
NULL_SPREAD = "the estimate +- the 95% spread of its permutation null"


def main_point(ev: Evidence):
    return ev.main_lr, ev.main_wd


def structure_claim(name: str, point_of=None, arch: str | None = None):
    """Judge: fine structure (``gates.structure_tests``) on a run in the terminal phase."""
    def judge(ev: Evidence) -> Outcome:
        point = point_of(ev) if point_of else None
        if arch is not None:
            trained = ev.config(name, point).arch
            if not trained.startswith(arch):
                raise NotRun(f"this scale trains {trained} there, not {arch}")
        fs = fine_structure(ev.results(name, point), label(name, point))
        return decided(structure_text(fs), structure_tests(fs), terminal_gate(ev, name, point),
                       fs)
    return judge


def judge_msdr(ev: Evidence) -> Outcome:
    point = main_point(ev)
    fs = fine_structure(ev.results(p.GRID, point), "the main run")
    tests = [p_test("MSDR vs its null", fs["msdr_p_value"], fs["alpha"]),
             interval_test("MSDR excess over its null median", fs["msdr_excess"],
                           fs["msdr_excess_ci"], MSDR_MIN_EXCESS, "above", BOOTSTRAP)]
    text = (f"MSDR {f3(fs['msdr'])} at epoch {fs['epoch']}; null median "
            f"{f3(fs['msdr_null_p50'])}, 99th pct {f3(fs['msdr_null_p99'])}")
    return decided(text, tests, terminal_gate(ev, p.GRID, point), fs)


def judge_clusters(ev: Evidence) -> Outcome:
    point = main_point(ev)
    fs = fine_structure(ev.results(p.GRID, point), "the main run")
    if fs.get("cluster_accuracy") is None:
        raise NotRun("the main run has no CLP clustering")
    tests = [p_test("cluster accuracy vs its null", fs["cluster_accuracy_p_value"], fs["alpha"]),
             interval_test("cluster accuracy over its null median", fs["cluster_effect"],
                           fs["cluster_effect_ci"], ABOVE_CHANCE, "above", BOOTSTRAP)]
    text = (f"clusters inside a label match the classes for {f3(fs['cluster_accuracy'])} of "
            f"the training samples (null median {f3(fs['cluster_accuracy_null_p50'])}, 99th "
            f"pct {f3(fs['cluster_accuracy_null_p99'])})")
    return decided(text, tests, terminal_gate(ev, p.GRID, point), fs)


def _clp_tests(fs: dict, other_test: dict) -> list[dict]:
    if fs.get("clp_train_mapping") is None or fs.get("clp_p_value") is None:
        raise NotRun("the main run has no train-mapped CLP with its null")
    return [p_test("train-mapped CLP vs its null", fs["clp_p_value"], fs["alpha"]),
            interval_test("train-mapped CLP over its null median", fs["clp_effect"],
                          fs["clp_effect_ci"], CLP_MARGIN, "above",
                          "bootstrap over test samples inside each class"),
            other_test]


def judge_lpo(ev: Evidence) -> Outcome:
    point = main_point(ev)
    r = ev.results(p.GRID, point)
    fs = fine_structure(r, "the main run")
    if fs.get("clp_minus_lpo") is None:
        raise NotRun("the main run has no paired CLP - LPO (no test split)")
    tests = _clp_tests(fs, interval_test(
        "CLP - LPO", fs["clp_minus_lpo"], fs["clp_minus_lpo_ci"], -CLOSE, "above",
        "paired bootstrap over the same test samples"))
    text = (f"train-mapped CLP {f3(fs['clp_train_mapping'])} (null median "
            f"{f3(fs['clp_null_p50'])}); LPO {f3(r.get('lpo_accuracy'))}")
    return decided(text, tests, terminal_gate(ev, p.GRID, point), fs)


def judge_ot(ev: Evidence) -> Outcome:
    point = main_point(ev)
    fs = fine_structure(ev.results(p.GRID, point), "the main run")
    ot_results = ev.results(p.OT)
    ot = ot_results.get("final_test_accuracy")
    if ot is None or fs.get("clp_train_mapping") is None:
        raise NotRun("no OT test accuracy or no train-mapped CLP")
    inputs = (ot_results.get("analysis") or {}).get("inputs") or {}
    n_ot = max((v.get("n_test") or 0 for v in inputs.values()), default=0)
    clp = fs["clp_train_mapping"]
    interval = difference_interval(clp, proportion_interval(clp, fs.get("test_samples")),
                                   ot, proportion_interval(ot, n_ot))
    tests = _clp_tests(fs, interval_test(
        "CLP - OT", clp - ot, interval, -CLOSE, "above",
        "normal intervals of the two accuracies, combined as if independent (conservative: "
        "both are measured on the same test images)"))
    text = f"train-mapped CLP {f3(clp)}, OT {f3(ot)} (CLP - OT = {clp - ot:+.3f})"
    return decided(text, tests, all_gates(terminal_gate(ev, p.GRID, point),
                                          terminal_gate(ev, p.OT)), {**fs, "ot": ot})


def line_contrast(D: np.ndarray, superclass, epoch: int) -> dict:
    """The line contrast of D (``measures.d_contrasts``: mean D between classes of
    different groups / between classes of one group) against its null, the groups of the
    classes regrouped at random (``measures.lines_null``, seeded by the epoch).

    Returns:
      {"lines", "diagonal" (contrasts), "null_p50", "p_value", "excess" (lines - null
      median), "interval" (the excess +- the null's 95% spread)}.
    """
    diagonal, lines = m.d_contrasts(D, superclass)
    null = m.lines_null(D, superclass, LINES_PERMUTATIONS, seed=epoch)
    lo, mid, hi = np.percentile(null, [2.5, 50, 97.5])
    return {"lines": lines, "diagonal": diagonal, "null_p50": float(mid),
            "p_value": (1 + int((null >= lines).sum())) / (1 + null.size),
            "excess": lines - float(mid), "interval": [lines - float(hi), lines - float(lo)]}


REGROUPED = NULL_SPREAD + " (the classes regrouped at random)"


def _lines_at(ev: Evidence, name: str, point=None) -> tuple[dict, dict[int, dict]]:
    """(early gate, {epoch: ``line_contrast``} at the first early epoch and the last saved
    one) of a run's D matrices."""
    gate = early_gate(ev, name, point)
    mats, superclass = ev.distances(name, point)
    if not mats:
        raise NotRun(f"{label(name, point)} has no saved D matrices")
    chosen = sorted({e for e in (gate["epoch"], max(mats)) if e is not None and e in mats})
    return gate, {e: line_contrast(mats[e], superclass, e) for e in chosen}


def _lines_text(lines: dict[int, dict]) -> str:
    return "; ".join(f"epoch {e}: diagonal {v['diagonal']:.2f}, lines {v['lines']:.2f} (null "
                     f"median {v['null_p50']:.2f})" for e, v in sorted(lines.items()))


def judge_diagonal_first(ev: Evidence) -> Outcome:
    point = main_point(ev)
    gate, lines = _lines_at(ev, p.GRID, point)
    first, last = min(lines), max(lines)
    early, late = lines[first], lines[last]
    tests = [exact_test(f"diagonal minus line contrast at epoch {first}",
                        early["diagonal"] - early["lines"], 0.0, "above",
                        "D over the whole training set"),
             interval_test(f"line contrast over its null median, epoch {last} minus epoch "
                           f"{first}", late["excess"] - early["excess"],
                           difference_interval(late["excess"], late["interval"],
                                               early["excess"], early["interval"]),
                           0.0, "above", REGROUPED)]
    return decided(_lines_text(lines), tests, all_gates(gate, terminal_gate(ev, p.GRID, point)),
                   {"lines": {e: v["lines"] for e, v in lines.items()},
                    "diagonal": {e: v["diagonal"] for e, v in lines.items()}})


def judge_nc1_falls(ev: Evidence) -> Outcome:
    point = main_point(ev)
    r = ev.results(p.GRID, point)
    fs = fine_structure(r, "the main run")
    c = collapse(r)
    gate = early_gate(ev, p.GRID, point)
    by_epoch = {int(e): v for e, v in (fs.get("by_epoch") or {}).items()}
    judged = [e for e in sorted(by_epoch) if gate["epoch"] is not None and e >= gate["epoch"]]
    if c["nc1_drop"] is None or c["nc2_last"] is None or not judged:
        raise NotRun("the main run lacks NC1 / NC2 or MSDR significance at the saved epochs")
    ps = [(by_epoch[e] or {}).get("msdr_p_value") for e in judged]
    tests = [exact_test("NC1 peak / last", c["nc1_drop"], COLLAPSE_FACTOR, "above",
                        "over the whole training set"),
             exact_test("NC2 last - first", c["nc2_last"] - c["nc2_first"], 0.0, "below",
                        "over the whole training set"),
             p_test(f"MSDR vs its null at every epoch from {judged[0]} (largest p)",
                    None if None in ps else max(ps), fs["alpha"])]
    text = (f"NC1 {c['nc1_peak']:.3g} (peak, epoch {c['nc1_peak_epoch']}) -> {c['nc1_last']:.3g}"
            f" ({c['nc1_drop']:.1f}x); NC2 {c['nc2_first']:.3g} -> {c['nc2_last']:.3g}; MSDR "
            f"p-values at epochs {judged}: " + ", ".join(number(x, ".2g") for x in ps))
    return decided(text, tests, all_gates(terminal_gate(ev, p.GRID, point,
                                                        collapse_required=False), gate),
                   {**c, "msdr_p_by_epoch": dict(zip(judged, ps))})


def judge_fine(ev: Evidence) -> Outcome:
    gate = early_gate(ev, p.FINE)
    mats, superclass = ev.distances(p.FINE)
    epochs = [e for e in (gate["epoch"], max(mats)) if e is not None]
    tests, per = [], {}
    for e in epochs:
        per[e] = line_contrast(mats[e], superclass, e)
        tests.append(interval_test(f"line contrast over its null median, epoch {e}",
                                   per[e]["excess"], per[e]["interval"], FINE_MARGIN, "above",
                                   NULL_SPREAD + " (labels regrouped at random)"))
    r = ev.results(p.FINE)
    alpha = (r.get("fine_structure") or {}).get("alpha") or SignificanceOptions.alpha
    tests.insert(0, p_test("line contrast vs its null (largest p over the epochs)",
                           max(v["p_value"] for v in per.values()), alpha))
    lpo = r.get("lpo_accuracy")
    text = "; ".join(f"epoch {e}: labels of different classes / the two labels of one class = "
                     f"{v['lines']:.3f} (null median {v['null_p50']:.3f}, p "
                     f"{v['p_value']:.2g})" for e, v in per.items()) + f"; LPO {f3(lpo)}"
    return decided(text, tests, all_gates(terminal_gate(ev, p.FINE), gate),
                   {"by_epoch": {e: {k: v[k] for k in ("lines", "null_p50", "p_value")}
                                 for e, v in per.items()}, "lpo": lpo})


def judge_vgg(ev: Evidence) -> Outcome:
    trained = ev.config(p.VGG).arch
    if not trained.startswith("vgg"):
        raise NotRun(f"this scale trains {trained} there, not vgg")
    g_vgg, vgg = _lines_at(ev, p.VGG)
    g_res, res = _lines_at(ev, p.GRID, main_point(ev))
    v_epoch, r_epoch = min(vgg), min(res)
    v, r = vgg[v_epoch], res[r_epoch]
    tests = [interval_test("early line contrast over its null median, VGG minus ResNet-18",
                           v["excess"] - r["excess"],
                           difference_interval(v["excess"], v["interval"], r["excess"],
                                               r["interval"]), 0.0, "above", REGROUPED)]
    text = (f"line contrast at the first epoch with training accuracy >= 0.5: VGG "
            f"{v['lines']:.2f} (null median {v['null_p50']:.2f}, epoch {v_epoch}), ResNet-18 "
            f"{r['lines']:.2f} (null median {r['null_p50']:.2f}, epoch {r_epoch})")
    return decided(text, tests, all_gates(g_vgg, g_res),
                   {"vgg": v["excess"], "resnet": r["excess"]})


def judge_cifar100(ev: Evidence) -> Outcome:
    found, missing = {}, []
    for name in (p.CIFAR100_COARSE, p.CIFAR100_SUPER):
        try:
            found[name] = (fine_structure(ev.results(name), name), terminal_gate(ev, name))
        except NotRun as e:
            missing.append(str(e))
    if missing:
        raise NotRun("; ".join(missing))
    (mod, g_mod), (sup, g_sup) = found[p.CIFAR100_COARSE], found[p.CIFAR100_SUPER]
    # "Partly": the superclasses' classes separate (significant MSDR), but less well than
    # arbitrary groups of classes (semantic neighbours share a superclass).
    tests = structure_tests(mod, "y mod 20") + [
        p_test("superclasses: MSDR vs its null", sup["msdr_p_value"], sup["alpha"]),
        interval_test("cluster effect, y mod 20 minus superclasses",
                      None if None in (mod.get("cluster_effect"), sup.get("cluster_effect"))
                      else mod["cluster_effect"] - sup["cluster_effect"],
                      None if None in (mod.get("cluster_effect"), sup.get("cluster_effect"))
                      else difference_interval(mod["cluster_effect"], mod["cluster_effect_ci"],
                                               sup["cluster_effect"], sup["cluster_effect_ci"]),
                      0.0, "above", BOOTSTRAP + ", two runs combined")]
    # One p-value per claim in the family: the largest (all must be significant).
    ps = [t for t in tests if t["quantity"] == "p"]
    tests = [p_test("MSDR and clusters vs their nulls, both label sets (largest p)",
                    max(t["estimate"] for t in ps), mod["alpha"])] + [
        t for t in tests if t["quantity"] != "p"]
    per = (ev.results(p.CIFAR100_SUPER).get("clp_details") or {}).get("per_superclass") or []
    hardest = sorted(per, key=lambda x: x.get("cluster_accuracy_train", 1))[:3]
    text = (f"y mod 20: {structure_text(mod)}; superclasses: {structure_text(sup)}; least "
            "separated superclasses (label: cluster accuracy): " + ", ".join(
                f"{x['label']}: {x['cluster_accuracy_train']:.2f}" for x in hardest))
    return decided(text, tests, all_gates(g_mod, g_sup),
                   {"coarse": mod, "superclasses": sup, "least_separated": hardest})


def judge_grid(ev: Evidence) -> Outcome:
    """Structure at >= GRID_FRACTION of the points in the terminal phase. Each point is
    decided by its own tests (p-values at alpha / points: Bonferroni inside the grid); the
    fraction's interval runs from the points that hold to those that hold or may."""
    item = ev.item(p.GRID)
    verdicts, outside, missing = {}, [], []
    for c in item.configs:
        point = (c.lr, c.weight_decay)
        name = f"lr{c.lr:g}_wd{c.weight_decay:g}"
        try:
            fs = fine_structure(ev.results(p.GRID, point), name)
            gate = terminal_gate(ev, p.GRID, point)
        except NotRun as e:
            missing.append(f"{name} ({e})")
            continue
        if not gate["met"]:
            outside.append(name)
            continue
        verdicts[name] = fs
    judged = len(verdicts)
    if judged + len(outside) == 0:
        raise NotRun("no grid point finished: " + "; ".join(missing))
    decisions = {name: decide(structure_tests(dict(fs, alpha=fs["alpha"] / judged)))
                 for name, fs in verdicts.items()}
    holds = [n for n, v in decisions.items() if v == HOLDS]
    fails = [n for n, v in decisions.items() if v == FAILS]
    maybe = [n for n, v in decisions.items() if v == UNINFORMATIVE]
    share = None if judged == 0 else len(holds) / judged
    interval = None if judged == 0 else [len(holds) / judged, (len(holds) + len(maybe)) / judged]
    # "At least" GRID_FRACTION: the rule's comparison is strict.
    tests = [interval_test("share of the points in the regime with structure", share,
                           interval, GRID_FRACTION - 1e-9, "above",
                           "from the points that hold to those that hold or may")]
    text = (f"structure at {len(holds)} of the {judged} points in the terminal phase (does not "
            f"hold: {', '.join(fails) or 'none'}; uninformative: {', '.join(maybe) or 'none'}; "
            f"outside the regime: {', '.join(outside) or 'none'})")
    if missing:
        text += f"; not judged: {'; '.join(missing)}"
    regime = {"met": judged > 0, "points_in_regime": judged, "points_outside": len(outside),
              "requires": "at least one point in the terminal phase"}
    return decided(text, tests, regime, {"holds": holds, "does_not_hold": fails,
                                         "uninformative": maybe, "outside_regime": outside,
                                         "not_judged": missing})


__all__ = ["judge_clusters", "judge_cifar100", "judge_diagonal_first", "judge_fine",
           "judge_grid", "judge_lpo", "judge_msdr", "judge_nc1_falls", "judge_ot",
           "judge_vgg", "line_contrast", "main_point", "structure_claim"]
