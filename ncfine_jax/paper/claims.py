"""Every claim of the paper that the plan checks: its source, criterion and reason, in one
place.

A claim is judged from finished results only (``Evidence``); when what it needs is
missing (a skipped dataset, a failed or unselected run, an item the scale does not
train) the verdict is "not run" with the reason. Thresholds are the module constants
below, each with the reason for its value. The paper's own numbers are quoted only where
this project's README states them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ncfine_jax import workdir as w
from ncfine_jax.analysis.regime import COLLAPSE_FACTOR, EARLY_ACCURACY, TERMINAL_ACCURACY
from ncfine_jax.workdir import FIGURES_DIR
from ncfine_jax.paper import figures as pf
from ncfine_jax.paper import measures as m
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.evidence import Evidence, NotRun
from ncfine_jax.text import number

HOLDS, FAILS, UNINFORMATIVE, NOT_RUN = "holds", "does not hold", "uninformative", "not run"
VERDICTS = (HOLDS, FAILS, UNINFORMATIVE, NOT_RUN)

# --- Regime gates: a claim about trained networks is judged only on networks in the
# regime it is about (``analysis.regime``: TERMINAL_ACCURACY, COLLAPSE_FACTOR,
# EARLY_ACCURACY); otherwise its verdict is "uninformative", with the gate values.

# --- Effect sizes, on top of significance at the analysis' alpha (``fine_structure``).
# MSDR's excess over 1 must be at least this many times its permutation null's (MSDR >= 1
# by construction with two classes per label: only the excess over the null is evidence).
MSDR_EXCESS_RATIO = 2.0
# Cluster accuracy inside a label at least this far above its null median (the best
# cluster-to-class mapping lifts the null itself above 1 / classes per label).
ABOVE_CHANCE = 0.10
# Train-mapped CLP at least this far above its null median (test classes shuffled inside
# their label: the probe then knows the label but not the class).
CLP_MARGIN = 0.05
# CLP within this of LPO / OT counts as "close": the paper's point is that clustering
# inside a label recovers nearly what supervision on the original labels gives.
CLOSE = 0.10
# VGG's D pattern "appears with the diagonal": its line share (lines - 1) / (diagonal - 1)
# at the first early epoch at least this many times ResNet-18's at the same scale.
TIMING_MARGIN = 1.5
# Fine CIFAR-10: line contrast at least 1 + this and above its null's 99th percentile.
FINE_MARGIN = 0.05
LINES_PERMUTATIONS = 2000
# A rising curve ranks its points in x order; 0.8 tolerates one swap of neighbours
# (seed noise) on 4 or more points.
RISING_RANK = 0.8
# A Gaussian-mixture trend is beyond the seed spread when the paired difference of the
# extreme lines is at least this many standard errors.
SEED_SE = 2.0
# "Flat": the per-value levels differ by at most this factor.
FLAT_RATIO = 1.25
# The structure should hold at this fraction of the grid points in the regime.
GRID_FRACTION = 2 / 3
# Gaussian-mixture lines are compared over sigma^2 >= this: the log panel of Figs. 18-20,
# where the lines part (near sigma^2 = 0 every line starts at MSDR ~ 1).
LARGE_SIGMA2 = 2.0


@dataclass
class Outcome:
    """A claim's verdict with what it was judged on.

    Attributes:
      verdict: one of ``VERDICTS``.
      measured: one line of the numbers (or, for "not run", why).
      values: the numbers, for paper_report.json.
      figures: our figures (paths relative to DIR) beside the paper's.
      regime: the gate of the run(s) judged: ``{"met": bool, ...the values}``; None for
        "not run".
      p_value: the claim's p-value against its permutation null, where it has one.
    """

    verdict: str
    measured: str
    values: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    regime: dict | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Attributes:
      key: short id.
      text: what the paper says.
      source: the figure / section / appendix it comes from.
      criterion: how we judge it from our runs.
      reason: one line: why this criterion tests the claim.
      judge: ``Evidence -> Outcome`` (raises NotRun).
      figures: ``Evidence -> [paths]``: our figures to show beside the paper's.
    """

    key: str
    text: str
    source: str
    criterion: str
    reason: str
    judge: Callable
    figures: Callable = lambda ev: []


def _f(x, digits: int = 3) -> str:
    return number(x, f".{digits}f")


def _run_figures(ev: Evidence, name: str, files, point=None) -> list[str]:
    return [f for f in (ev.figure(name, f"{FIGURES_DIR}/{x}", point) for x in files) if f]


def _main_figures(*files):
    def figures(ev: Evidence) -> list[str]:
        return _run_figures(ev, p.GRID, files, (ev.main_lr, ev.main_wd))
    return figures


def _ours(*files):
    """Figures the report draws into DIR/figures (kept when they exist)."""
    def figures(ev: Evidence) -> list[str]:
        return [f"{FIGURES_DIR}/{x}" for x in files if (ev.root / FIGURES_DIR / x).is_file()]
    return figures


def _both(*getters):
    def figures(ev: Evidence) -> list[str]:
        out = []
        for g in getters:
            out += [f for f in g(ev) if f not in out]
        return out
    return figures


# ------------------------------------------------------------------ regime gates


def _label(name: str, point) -> str:
    return name if point is None else f"{name}/lr{point[0]:g}_wd{point[1]:g}"


def terminal_gate(ev: Evidence, name: str, point=None, collapse: bool = True) -> dict:
    """Is the run in the terminal phase? Training accuracy (last epoch, training labels)
    >= TERMINAL_ACCURACY and, with ``collapse``, NC1 fallen >= COLLAPSE_FACTOR from its
    peak over the saved epochs."""
    r = ev.results(name, point)
    c = m.collapse(r)
    acc = r.get("final_train_accuracy")
    met = acc is not None and acc >= TERMINAL_ACCURACY
    if collapse:
        met = met and c["nc1_drop"] is not None and c["nc1_drop"] >= COLLAPSE_FACTOR
    need = f"training accuracy >= {TERMINAL_ACCURACY:g}" + (
        f" and NC1 peak / last >= {COLLAPSE_FACTOR:g}" if collapse else "")
    return {"met": bool(met), "phase": "terminal", "run": _label(name, point), "requires": need,
            "train_accuracy": acc, "test_accuracy": r.get("final_test_accuracy"),
            "nc1_peak": c["nc1_peak"], "nc1_last": c["nc1_last"], "nc1_drop": c["nc1_drop"]}


def early_gate(ev: Evidence, name: str, point=None) -> dict:
    """The early phase: the first saved feature epoch whose training accuracy is >=
    EARLY_ACCURACY (``epoch``), before the last saved epoch."""
    r = ev.results(name, point)
    epochs = [e for e, _ in m.per_epoch(r, "msdr")]
    accuracy = ev.train_accuracy(name, point)
    first = m.first_epoch_reaching(accuracy, epochs, EARLY_ACCURACY)
    c = m.collapse(r)
    return {"met": first is not None and first < max(epochs), "phase": "early",
            "run": _label(name, point), "epoch": first,
            "requires": f"a saved epoch before the last with training accuracy >= "
                        f"{EARLY_ACCURACY:g}",
            "train_accuracy_at_epoch": None if first is None else accuracy.get(first),
            "train_accuracy": r.get("final_train_accuracy"),
            "test_accuracy": r.get("final_test_accuracy"), "nc1_last": c["nc1_last"],
            "train_accuracy_by_epoch": {e: accuracy.get(e) for e in epochs}}


def _all_gates(*gates: dict) -> dict:
    """One regime of several runs: met when every run's is; the first run's values on top
    (the report table shows them)."""
    if len(gates) == 1:
        return gates[0]
    top = {k: gates[0].get(k) for k in ("train_accuracy", "test_accuracy", "nc1_last")}
    return {"met": all(g["met"] for g in gates), **top, "runs": list(gates)}


def _gate_text(g: dict) -> str:
    runs = g.get("runs") or [g]
    return "; ".join(
        f"{x['run']}: train acc {_f(x.get('train_accuracy'))}"
        + (f", NC1 drop {_f(x.get('nc1_drop'), 1)}x" if x["phase"] == "terminal" else
           f", first epoch >= {EARLY_ACCURACY:g}: {x.get('epoch')}" if x["phase"] == "early"
           else "")
        + ("" if x["met"] else f" (needs {x['requires']})") for x in runs)


def _gated(outcome: Outcome, regime: dict) -> Outcome:
    """``outcome`` with its regime; "uninformative" when the regime is not met."""
    outcome.regime = regime
    if not regime["met"]:
        outcome.verdict = UNINFORMATIVE
        outcome.measured = f"regime not met ({_gate_text(regime)}); {outcome.measured}"
    return outcome


# ------------------------------------------------------------------ significance


def significance(results: dict, what: str) -> dict:
    """The fine-structure numbers of a coarsening run with their effect sizes.

    Returns:
      the ``fine_structure`` block plus msdr_excess_ratio ((MSDR - 1) / (null median - 1)),
      cluster_effect (cluster accuracy - null median), clp_effect (train-mapped CLP - null
      median) and present (significant MSDR and cluster accuracy, both with effect size).
    """
    fs = m.fine_structure(results)
    if fs is None or fs.get("msdr_p_value") is None:
        raise NotRun(f"{what} has no fine-structure significance (rerun its analysis)")
    alpha = fs["alpha"]
    excess_null = fs["msdr_null_p50"] - 1
    ratio = (fs["msdr"] - 1) / excess_null if excess_null > 0 else math.inf
    out = dict(fs, msdr_excess_ratio=ratio)
    out["cluster_effect"] = (None if fs.get("cluster_accuracy") is None else
                             fs["cluster_accuracy"] - fs["cluster_accuracy_null_p50"])
    out["clp_effect"] = (None if fs.get("clp_train_mapping") is None else
                         fs["clp_train_mapping"] - fs["clp_null_p50"])
    msdr_ok = fs["msdr_p_value"] <= alpha and ratio >= MSDR_EXCESS_RATIO
    cluster_ok = (out["cluster_effect"] is not None and fs["cluster_accuracy_p_value"] <= alpha
                  and out["cluster_effect"] >= ABOVE_CHANCE)
    out["msdr_ok"], out["cluster_ok"] = bool(msdr_ok), bool(cluster_ok)
    out["present"] = bool(msdr_ok and cluster_ok)
    return out


def _sig_text(s: dict) -> str:
    return (f"MSDR {_f(s['msdr'])} (null p50 {_f(s['msdr_null_p50'])}, p99 "
            f"{_f(s['msdr_null_p99'])}, p {_fp(s['msdr_p_value'])}, excess ratio "
            f"{_f(s['msdr_excess_ratio'], 1)}); clusters {_f(s.get('cluster_accuracy'))} (null "
            f"p50 {_f(s.get('cluster_accuracy_null_p50'))}, p "
            f"{_fp(s.get('cluster_accuracy_p_value'))})")


def _fp(x) -> str:
    return number(x, ".3g")


def _structure_claim(name: str, point_of=None, arch: str | None = None):
    """Judge: significant fine structure (``significance(...)["present"]``) on a run in
    the terminal phase."""
    def judge(ev: Evidence) -> Outcome:
        point = point_of(ev) if point_of else None
        if arch is not None:
            trained = ev.config(name, point).arch
            if not trained.startswith(arch):
                raise NotRun(f"this scale trains {trained} there, not {arch}")
        s = significance(ev.results(name, point), _label(name, point))
        out = Outcome(HOLDS if s["present"] else FAILS,
                      f"structure {'present' if s['present'] else 'absent'}: {_sig_text(s)}",
                      s, p_value=s["p_value"])
        return _gated(out, terminal_gate(ev, name, point))
    return judge


# ------------------------------------------------------------------ CIFAR claims


def _main_point(ev: Evidence):
    return ev.main_lr, ev.main_wd


def _judge_msdr(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    s = significance(ev.results(p.GRID, point), "the main run")
    ok = s["msdr_ok"]
    out = Outcome(HOLDS if ok else FAILS,
                  f"MSDR {_f(s['msdr'])} at epoch {s['epoch']}; null p50 {_f(s['msdr_null_p50'])}"
                  f", p99 {_f(s['msdr_null_p99'])}; p {_fp(s['msdr_p_value'])}; excess ratio "
                  f"{_f(s['msdr_excess_ratio'], 1)}; 95% CI {s.get('msdr_ci')}",
                  s, p_value=s["msdr_p_value"])
    return _gated(out, terminal_gate(ev, p.GRID, point))


def _judge_clusters(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    s = significance(ev.results(p.GRID, point), "the main run")
    if s.get("cluster_accuracy") is None:
        raise NotRun("the main run has no CLP clustering")
    out = Outcome(HOLDS if s["cluster_ok"] else FAILS,
                  f"clusters inside a label match the classes for {_f(s['cluster_accuracy'])} "
                  f"of the training samples (null p50 {_f(s['cluster_accuracy_null_p50'])}, p99 "
                  f"{_f(s['cluster_accuracy_null_p99'])}, p {_fp(s['cluster_accuracy_p_value'])})",
                  s, p_value=s["cluster_accuracy_p_value"])
    return _gated(out, terminal_gate(ev, p.GRID, point))


def _clp_against(s: dict, other, name: str) -> Outcome:
    """Train-mapped CLP above its null by CLP_MARGIN (significant) and >= other - CLOSE."""
    clp = s.get("clp_train_mapping")
    if clp is None or other is None or s.get("clp_p_value") is None:
        raise NotRun(f"the main run has no train-mapped CLP with its null, or no {name}")
    above = s["clp_p_value"] <= s["alpha"] and s["clp_effect"] >= CLP_MARGIN
    close = clp >= other - CLOSE
    values = dict(s, **{name.lower(): other, "above_null": bool(above), "close": bool(close)})
    return Outcome(HOLDS if above and close else FAILS,
                   f"train-mapped CLP {_f(clp)} (null p50 {_f(s['clp_null_p50'])}, p99 "
                   f"{_f(s['clp_null_p99'])}, p {_fp(s['clp_p_value'])}, 95% CI "
                   f"{s.get('clp_ci')}); {name} {_f(other)} (CLP - {name} = {clp - other:+.3f})",
                   values, p_value=s["clp_p_value"])


def _judge_lpo(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    r = ev.results(p.GRID, point)
    out = _clp_against(significance(r, "the main run"), r.get("lpo_accuracy"), "LPO")
    return _gated(out, terminal_gate(ev, p.GRID, point))


def _judge_ot(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    s = significance(ev.results(p.GRID, point), "the main run")
    ot = ev.results(p.OT).get("final_test_accuracy")
    out = _clp_against(s, ot, "OT")
    return _gated(out, _all_gates(terminal_gate(ev, p.GRID, point), terminal_gate(ev, p.OT)))


def _early_late_contrasts(ev: Evidence, name: str, point=None):
    """(gate, {epoch: (diagonal, lines)} at the first early epoch and the last, superclass,
    D of those epochs)."""
    gate = early_gate(ev, name, point)
    mats, superclass = ev.distances(name, point)
    epochs = [e for e in (gate["epoch"], max(mats)) if e is not None]
    return gate, {e: m.d_contrasts(mats[e], superclass) for e in epochs}, superclass, mats


def _judge_diagonal_first(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    gate, c, _, _ = _early_late_contrasts(ev, p.GRID, point)
    last = max(c)
    first = gate["epoch"] if gate["epoch"] is not None else last
    (d0, l0), (_, l1) = c[first], c[last]
    ok = d0 > l0 and l1 > l0 and l1 > 1
    per = "; ".join(f"epoch {e}: diagonal {d:.2f}, lines {x:.2f}" for e, (d, x) in c.items())
    out = Outcome(HOLDS if ok else FAILS, per,
                  {"epochs": list(c), "diagonal": [v[0] for v in c.values()],
                   "lines": [v[1] for v in c.values()]})
    return _gated(out, _all_gates(gate, terminal_gate(ev, p.GRID, point)))


def _judge_nc1_falls(ev: Evidence) -> Outcome:
    point = _main_point(ev)
    r = ev.results(p.GRID, point)
    s = significance(r, "the main run")
    c = m.collapse(r)
    gate = early_gate(ev, p.GRID, point)
    by_epoch = {int(e): v for e, v in (s.get("by_epoch") or {}).items()}
    judged = [e for e in sorted(by_epoch) if gate["epoch"] is not None and e >= gate["epoch"]]
    if c["nc1_drop"] is None or c["nc2_last"] is None or not judged:
        raise NotRun("the main run lacks NC1 / NC2 or MSDR significance at the saved epochs")
    stays = all(by_epoch[e] is not None and by_epoch[e]["msdr_p_value"] <= s["alpha"]
                for e in judged)
    falls = c["nc1_drop"] >= COLLAPSE_FACTOR and c["nc2_last"] < c["nc2_first"]
    out = Outcome(HOLDS if falls and stays else FAILS,
                  f"NC1 {c['nc1_peak']:.3g} (peak, epoch {c['nc1_peak_epoch']}) -> "
                  f"{c['nc1_last']:.3g} ({c['nc1_drop']:.1f}x); NC2 {c['nc2_first']:.3g} -> "
                  f"{c['nc2_last']:.3g}; MSDR p-values at epochs {judged}: "
                  + ", ".join(_fp((by_epoch[e] or {}).get("msdr_p_value")) for e in judged),
                  {**c, "msdr_by_epoch": {e: by_epoch[e] for e in judged}})
    return _gated(out, _all_gates(terminal_gate(ev, p.GRID, point, collapse=False), gate))


def _judge_fine(ev: Evidence) -> Outcome:
    gate, c, superclass, mats = _early_late_contrasts(ev, p.FINE)
    per, ok = {}, True
    for e, (_, lines) in c.items():
        null = m.lines_null(mats[e], superclass, LINES_PERMUTATIONS, seed=e)
        p_value = (1 + int((null >= lines).sum())) / (1 + null.size)
        p99 = float(np.percentile(null, 99))
        per[e] = {"lines": lines, "null_p99": p99, "p_value": p_value}
        ok = ok and lines >= 1 + FINE_MARGIN and lines > p99
    lpo = ev.results(p.FINE).get("lpo_accuracy")
    out = Outcome(HOLDS if ok else FAILS, "; ".join(
        f"epoch {e}: labels of different classes / the two labels of one class = "
        f"{v['lines']:.3f} (null p99 {v['null_p99']:.3f}, p {_fp(v['p_value'])})"
        for e, v in per.items()) + f"; LPO {_f(lpo)}",
        {"by_epoch": per, "lpo": lpo}, p_value=max(v["p_value"] for v in per.values()))
    return _gated(out, _all_gates(terminal_gate(ev, p.FINE), gate))


def _line_share(contrast: tuple[float, float]) -> float:
    """(lines - 1) / (diagonal - 1): how far the within-label lines of D have come
    relative to the diagonal (0: only the diagonal shows; 1: both equally)."""
    diagonal, lines = contrast
    return (lines - 1) / (diagonal - 1) if diagonal > 1 else math.inf


def _judge_vgg(ev: Evidence) -> Outcome:
    trained = ev.config(p.VGG).arch
    if not trained.startswith("vgg"):
        raise NotRun(f"this scale trains {trained} there, not vgg")
    point = _main_point(ev)
    g_vgg, c_vgg, _, _ = _early_late_contrasts(ev, p.VGG)
    g_res, c_res, _, _ = _early_late_contrasts(ev, p.GRID, point)
    gate = _all_gates(g_vgg, g_res)
    share_vgg = _line_share(c_vgg[g_vgg["epoch"] or max(c_vgg)])
    share_res = _line_share(c_res[g_res["epoch"] or max(c_res)])
    ok = share_vgg >= TIMING_MARGIN * share_res
    out = Outcome(HOLDS if ok else FAILS,
                  f"line share (lines - 1) / (diagonal - 1) at the first epoch >= "
                  f"{EARLY_ACCURACY:g} training accuracy: VGG {share_vgg:.2f} (epoch "
                  f"{g_vgg['epoch']}), ResNet-18 {share_res:.2f} (epoch {g_res['epoch']})",
                  {"vgg_share": share_vgg, "resnet_share": share_res,
                   "vgg_contrasts": c_vgg, "resnet_contrasts": c_res})
    return _gated(out, gate)


def _judge_cifar100(ev: Evidence) -> Outcome:
    found, missing = {}, []
    for name in (p.CIFAR100_COARSE, p.CIFAR100_SUPER):
        try:
            found[name] = (significance(ev.results(name), name), terminal_gate(ev, name))
        except NotRun as e:
            missing.append(str(e))
    if missing:
        raise NotRun("; ".join(missing))
    (mod, g_mod), (sup, g_sup) = found[p.CIFAR100_COARSE], found[p.CIFAR100_SUPER]
    # "Partly": the superclasses' classes separate (significant MSDR), but less well
    # than arbitrary groups of classes (semantic neighbours share a superclass).
    partly = sup["msdr_ok"] and sup["cluster_effect"] is not None and \
        mod["cluster_effect"] is not None and sup["cluster_effect"] < mod["cluster_effect"]
    per = (ev.results(p.CIFAR100_SUPER).get("clp_details") or {}).get("per_superclass") or []
    hardest = sorted(per, key=lambda x: x.get("cluster_accuracy_train", 1))[:3]
    ok = mod["present"] and partly
    out = Outcome(HOLDS if ok else FAILS,
                  f"y mod 20: {_sig_text(mod)}; superclasses: {_sig_text(sup)}; least "
                  "separated superclasses (label: cluster accuracy): " + ", ".join(
                      f"{x['label']}: {x['cluster_accuracy_train']:.2f}" for x in hardest),
                  {"coarse": mod, "superclasses": sup, "least_separated": hardest},
                  p_value=max(mod["p_value"], sup["msdr_p_value"]))
    return _gated(out, _all_gates(g_mod, g_sup))


def _judge_grid(ev: Evidence) -> Outcome:
    item = ev.item(p.GRID)
    present, absent, outside, missing = [], [], [], []
    for c in item.configs:
        point = (c.lr, c.weight_decay)
        label = f"lr{c.lr:g}_wd{c.weight_decay:g}"
        try:
            s = significance(ev.results(p.GRID, point), label)
            gate = terminal_gate(ev, p.GRID, point)
        except NotRun as e:
            missing.append(f"{label} ({e})")
            continue
        if not gate["met"]:
            outside.append(label)
            continue
        (present if s["present"] else absent).append(label)
    judged = len(present) + len(absent)
    if judged + len(outside) == 0:
        raise NotRun("no grid point finished: " + "; ".join(missing))
    ok = judged > 0 and len(present) >= GRID_FRACTION * judged
    text = (f"structure at {len(present)} of the {judged} points in the terminal phase "
            f"(absent: {', '.join(absent) or 'none'}; outside the regime: "
            f"{', '.join(outside) or 'none'})")
    if missing:
        text += f"; not judged: {'; '.join(missing)}"
    out = Outcome(HOLDS if ok else FAILS, text,
                  {"present": present, "absent": absent, "outside_regime": outside,
                   "not_judged": missing})
    out.regime = {"met": judged > 0, "points_in_regime": judged,
                  "points_outside": len(outside),
                  "requires": f"at least one point with training accuracy >= "
                              f"{TERMINAL_ACCURACY:g} and NC1 drop >= {COLLAPSE_FACTOR:g}"}
    if judged == 0:
        out.verdict = UNINFORMATIVE
    return out


# ------------------------------------------------------------------ Gaussian mixtures


def _gm_figure(name: str, vary: str):
    def figures(ev: Evidence) -> list[str]:
        out = []
        for n in (name, p.pytorch_variant(name)):
            f = ev.figure(n, pf.study_figure(vary))
            if f:
                out.append(f)
        return out
    return figures


def _gm_gate(records, name: str) -> dict:
    """The MLPs learned their training labels: mean training accuracy over seeds >=
    EARLY_ACCURACY at every point judged (a point where GD has not fitted the labels says
    nothing about what training does to the representation)."""
    accs = [r["train_acc_mean"] for r in records if r.get("train_acc_mean") is not None]
    low = min(accs) if accs else None
    return {"met": low is not None and low >= EARLY_ACCURACY, "phase": "trained", "run": name,
            "requires": f"mean training accuracy >= {EARLY_ACCURACY:g} at every point",
            "train_accuracy": low, "test_accuracy": None, "nc1_last": None}


def _per_seed_levels(records, value) -> np.ndarray:
    """[seeds] mean log MSDR over sigma^2 >= LARGE_SIGMA2 of one line, per seed (NaN
    where a seed diverged at every such point). Same seed = same data on every line."""
    rows = [r["msdr_per_seed"] for r in records
            if r["value"] == value and r["sigma2"] >= LARGE_SIGMA2]
    if not rows:
        return np.array([])
    logs = np.log(np.array([[np.nan if v is None or v <= 0 else v for v in row] for row in rows],
                           np.float64))
    with np.errstate(all="ignore"):
        return np.nanmean(logs, axis=0)


def _paired_effect(records, low, high) -> tuple[float | None, float | None]:
    """(mean, standard error) over seeds of level(high) - level(low)."""
    d = _per_seed_levels(records, high) - _per_seed_levels(records, low)
    d = d[np.isfinite(d)] if d.size else d
    if d.size < 2:
        return (float(d.mean()) if d.size else None), None
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def _judge_sigma2_one(ev: Evidence, name: str) -> Outcome:
    records = ev.records(name)
    lines = m.gm_lines(records)
    rhos = {v: m.spearman([s for s, _, _ in pts], [x for _, x, _ in pts])
            for v, pts in lines.items()}
    if not rhos:
        raise NotRun(f"{name}: every seed diverged at every point")
    ok = all(r is not None and r >= RISING_RANK for r in rhos.values())
    out = Outcome(HOLDS if ok else FAILS, "rank correlation of MSDR with sigma^2 per d_input: "
                  + ", ".join(f"{v:g}: {_f(r, 2)}" for v, r in rhos.items()),
                  {"spearman": {str(v): r for v, r in rhos.items()}})
    return _gated(out, _gm_gate(records, name))


def _judge_trend_one(ev: Evidence, name: str, vary: str, rising: bool) -> Outcome:
    """A trend in the varied parameter: rising (rank order of the line levels and the
    extreme lines' paired difference beyond SEED_SE standard errors) or flat (levels
    within FLAT_RATIO, or no difference beyond the seed spread)."""
    records = ev.records(name)
    lines = m.gm_lines(records)
    levels = {v: m.gm_level(pts, LARGE_SIGMA2) for v, pts in lines.items()}
    levels = {v: x for v, x in levels.items() if x is not None}
    if len(levels) < 2:
        raise NotRun(f"{name}: fewer than 2 {vary} values with MSDR at sigma^2 >= "
                     f"{LARGE_SIGMA2:g}")
    rho = m.spearman(list(levels), list(levels.values()))
    diff, se = _paired_effect(records, min(levels), max(levels))
    beyond = diff is not None and se is not None and abs(diff) >= SEED_SE * max(se, 1e-12)
    ratio = math.exp(max(levels.values()) - min(levels.values()))
    if rising:
        ok = rho is not None and rho >= RISING_RANK and beyond and diff > 0
    else:
        ok = ratio <= FLAT_RATIO or not beyond
    out = Outcome(HOLDS if ok else FAILS,
                  f"geometric-mean MSDR at sigma^2 >= {LARGE_SIGMA2:g} per {vary}: "
                  + ", ".join(f"{v:g}: {math.exp(x):.2f}" for v, x in levels.items())
                  + f"; rank correlation {_f(rho, 2)}; log level {max(levels):g} - "
                  f"{min(levels):g} = {_f(diff, 3)} (seed SE {_f(se, 3)}); max / min {ratio:.2f}",
                  {"levels": {str(v): math.exp(x) for v, x in levels.items()}, "spearman": rho,
                   "paired_log_difference": diff, "seed_se": se, "ratio": ratio})
    return _gated(out, _gm_gate(records, name))


def _judge_tau2_one(ev: Evidence, name: str) -> Outcome:
    """Similar subclasses: MSDR rises with tau^2 (their means part) beyond the seed
    spread, and stays below the dissimilar subclasses' at the smallest tau^2."""
    records = ev.records(name)
    curves = m.gm_tau2_curves(records)
    sim, dis = curves.get("similar"), curves.get("dissimilar")
    if not sim or not dis or len(sim) < 2:
        raise NotRun(f"{name}: no similar / dissimilar curve (every seed diverged)")
    rho = m.spearman([t for t, _ in sim], [x for _, x in sim])
    by_tau = {r["tau2"]: r for r in records if r["subclasses"] == "similar"}
    lo, hi = by_tau[sim[0][0]], by_tau[sim[-1][0]]
    spread = math.hypot(lo.get("msdr_std") or 0.0, hi.get("msdr_std") or 0.0)
    rise = sim[-1][1] - sim[0][1]
    d0 = dict(dis).get(sim[0][0])
    ok = (rho is not None and rho >= RISING_RANK and rise > SEED_SE * spread
          and d0 is not None and sim[0][1] < d0)
    out = Outcome(HOLDS if ok else FAILS,
                  "similar subclasses' MSDR over tau^2: " + ", ".join(
                      f"{t:g}: {x:.2f}" for t, x in sim)
                  + f" (rank {_f(rho, 2)}, rise {rise:.2f} vs seed spread {spread:.2f}); "
                  f"dissimilar at tau^2 = {sim[0][0]:g}: {_f(d0, 2)}",
                  {"similar_curve": sim, "spearman": rho, "rise": rise, "seed_spread": spread,
                   "dissimilar_at_smallest": d0})
    return _gated(out, _gm_gate(records, name))


def _both_parameterisations(one):
    """Judge a sweep under the default parameterisation and under PyTorch's defaults
    (``plan.pytorch_variant``): holds when both hold; both are reported."""
    def judge(ev: Evidence, name: str) -> Outcome:
        parts = {}
        for label, n in (("mup", name), ("PyTorch defaults", p.pytorch_variant(name))):
            try:
                parts[label] = one(ev, n)
            except NotRun as e:
                parts[label] = Outcome(NOT_RUN, str(e))
        verdicts = [o.verdict for o in parts.values()]
        if all(v == NOT_RUN for v in verdicts):
            raise NotRun("; ".join(o.measured for o in parts.values()))
        verdict = (HOLDS if all(v == HOLDS for v in verdicts) else
                   FAILS if FAILS in verdicts else
                   UNINFORMATIVE if UNINFORMATIVE in verdicts else NOT_RUN)
        regimes = [o.regime for o in parts.values() if o.regime is not None]
        out = Outcome(verdict, "; ".join(f"{k}: {o.verdict}: {o.measured}"
                                         for k, o in parts.items()),
                      {k: {"verdict": o.verdict, **o.values} for k, o in parts.items()})
        out.regime = _all_gates(*regimes) if regimes else None
        return out
    return judge


def _gm(one, name: str, *args):
    both = _both_parameterisations(lambda ev, n: one(ev, n, *args))
    return lambda ev: both(ev, name)


_STRUCTURE = (f"structure = MSDR above its permutation null (p <= alpha, excess over 1 >= "
              f"{MSDR_EXCESS_RATIO:g}x the null's) and cluster accuracy inside the labels above "
              f"its null (p <= alpha, >= {ABOVE_CHANCE:.2f} above the null median), at the last "
              "saved epoch")
_TERMINAL = (f"judged only in the terminal phase (training accuracy >= {TERMINAL_ACCURACY:g}, "
             f"NC1 >= {COLLAPSE_FACTOR:g}x below its peak)")
_NULL = ("null: the original classes of the samples shuffled inside each label, labels and "
         "counts kept")

CLAIMS: tuple[Claim, ...] = (
    Claim("msdr_above_1",
          "Features of one coarse label keep its original classes apart (MSDR, App. B)",
          "Sec. 4, D heatmaps (Figs. 5-6); MSDR as defined in App. B",
          f"main run: MSDR p-value <= alpha and (MSDR - 1) >= {MSDR_EXCESS_RATIO:g} x (null "
          f"median - 1); {_TERMINAL}",
          f"MSDR >= 1 for any features with two classes per label: only MSDR beyond its "
          f"permutation null is evidence ({_NULL})",
          _judge_msdr, _both(_main_figures(w.HEATMAPS_FIGURE), _ours(pf.NC1_MSDR_FIGURE))),
    Claim("clusters_find_classes",
          "Clustering inside each coarse label recovers the original classes",
          "Sec. 4.3 (CLP step 1); t-SNE per label (Figs. 7-8)",
          f"main run: cluster accuracy p-value <= alpha and >= null median + "
          f"{ABOVE_CHANCE:.2f}; {_TERMINAL}",
          f"the best cluster-to-class mapping lifts even random clusters above 1 / classes "
          f"per label; the clusters are kept and the classes shuffled ({_NULL})",
          _judge_clusters, _both(_main_figures(w.TSNE_FIGURE, w.ACCURACY_FIGURE),
                                 _ours(pf.STRUCTURE_FIGURE))),
    Claim("clp_close_to_lpo",
          "CLP is close to LPO (paper: 93% CLP for ResNet-18 on Coarse CIFAR-10)",
          "Sec. 4.3, Figs. 11-12",
          f"main run: train-mapped CLP above its null (p <= alpha, >= null median + "
          f"{CLP_MARGIN:.2f}) and >= LPO - {CLOSE:.2f}; {_TERMINAL}",
          "features carrying only the coarse label give CLP near half the coarse accuracy, "
          "and so does LPO; the test-chosen mapping flatters CLP, the train-chosen one is "
          "honest",
          _judge_lpo, _main_figures(w.ACCURACY_FIGURE)),
    Claim("clp_close_to_ot",
          "CLP is close to OT, a network trained on the original labels",
          "Sec. 4.3, Figs. 11-12",
          f"train-mapped CLP of the main run above its null and >= OT test accuracy - "
          f"{CLOSE:.2f}; both runs in the terminal phase",
          "the coarse-trained features lose little of what training on the classes gives",
          _judge_ot, _main_figures(w.ACCURACY_FIGURE)),
    Claim("diagonal_before_lines",
          "In D, the diagonal appears before the within-superclass lines",
          "Sec. 4, D heatmaps over epochs (Figs. 5-6)",
          f"main run, at the first saved epoch with training accuracy >= {EARLY_ACCURACY:g}: "
          "diagonal contrast > line contrast; the line contrast then grows to the last saved "
          "epoch and ends > 1 (the run reaching the terminal phase)",
          "diagonal = mean D_ij (i != j) / mean D_ii, lines = mean D across labels / mean D "
          "within a label (i != j); before the labels are learned D shows the inputs, not "
          "what training made of them",
          _judge_diagonal_first, _both(_main_figures(w.HEATMAPS_FIGURE),
                                       _ours(pf.D_CONTRAST_FIGURE))),
    Claim("nc1_falls_msdr_stays",
          "The features collapse (NC1, NC2 fall) while the classes inside a label stay apart",
          "Sec. 4, NC1/NC2 curves (Fig. 3)",
          f"main run with training accuracy >= {TERMINAL_ACCURACY:g}: NC1 peak / last >= "
          f"{COLLAPSE_FACTOR:g}, NC2 last < first, and MSDR significant (p <= alpha) at every "
          f"saved epoch from the first with training accuracy >= {EARLY_ACCURACY:g}",
          "collapse on the training labels progresses, yet the classes inside a label never "
          "merge to their null",
          _judge_nc1_falls, _both(_main_figures(w.NC_CURVES_FIGURE), _ours(pf.NC1_MSDR_FIGURE))),
    Claim("long_training",
          "The structure survives very long training (the 1,000-epoch run)",
          "the paper's 1,000-epoch run (config #2: lr 0.01, wd 5e-5)",
          f"{_STRUCTURE}, on the long run; {_TERMINAL}",
          "if training long enough erased the structure, MSDR and the clusters would fall "
          "to their nulls",
          _structure_claim(p.LONG),
          _both(lambda ev: _run_figures(ev, p.LONG, (w.NC_CURVES_FIGURE, w.HEATMAPS_FIGURE)),
                _ours(pf.NC1_MSDR_FIGURE))),
    Claim("resnet18",
          "ResNet-18 shows the structure",
          "Sec. 4 (main run); App. G/H compare backbones",
          f"{_STRUCTURE}, on the main run, trained with ResNet-18; {_TERMINAL}",
          "one definition of 'structure' for every backbone and label set",
          _structure_claim(p.GRID, _main_point, "resnet18"), _ours(pf.STRUCTURE_FIGURE)),
    Claim("densenet121",
          "DenseNet-121 shows the structure",
          "App. G",
          f"{_STRUCTURE}, on the DenseNet-121 run; {_TERMINAL}",
          "one definition of 'structure' for every backbone and label set",
          _structure_claim(p.DENSENET, arch="densenet121"),
          _both(lambda ev: _run_figures(ev, p.DENSENET, (w.HEATMAPS_FIGURE,
                                                          w.ACCURACY_FIGURE)),
                _ours(pf.STRUCTURE_FIGURE))),
    Claim("vgg_lacks_structure",
          "VGG: the within-superclass lines of D appear together with the diagonal, not "
          "after it as for ResNet",
          "App. H",
          f"line share (lines - 1) / (diagonal - 1) at the first saved epoch with training "
          f"accuracy >= {EARLY_ACCURACY:g}: VGG's >= {TIMING_MARGIN:g} x ResNet-18's (main "
          "run, same scale)",
          "App. H is about when the D pattern appears; a static structure test cannot "
          "tell the two backbones apart",
          _judge_vgg,
          _both(lambda ev: _run_figures(ev, p.VGG, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE)),
                _ours(pf.D_CONTRAST_FIGURE))),
    Claim("fine_cifar10",
          "Fine CIFAR-10: the original classes stay visible when each is split in two labels",
          "Sec. 4 (Fine CIFAR-10, eq. 5)",
          f"at the first saved epoch with training accuracy >= {EARLY_ACCURACY:g} (early) and "
          f"at the last (late, terminal phase): mean D between labels of different classes / "
          f"mean D between the two labels of one class >= 1 + {FINE_MARGIN:g} and above the "
          f"99th percentile of its null (labels regrouped at random, "
          f"{LINES_PERMUTATIONS} permutations)",
          "the network is never told which labels share a class; if their features are "
          "closer than random pairs of labels, they reflect the original classes",
          _judge_fine, lambda ev: _run_figures(ev, p.FINE, (w.HEATMAPS_FIGURE,
                                                            w.TSNE_FIGURE))),
    Claim("random_coarse",
          "Random coarse labels (classes shuffled, then merged) show the same structure",
          "App. F",
          f"{_STRUCTURE}, on the random-coarse run; {_TERMINAL}",
          "App. F: 'the same observations in Section 4 can still be made' with the classes "
          "merged at random",
          _structure_claim(p.RANDOM), _both(lambda ev: _run_figures(
              ev, p.RANDOM, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE)),
              _ours(pf.STRUCTURE_FIGURE))),
    Claim("cifar100",
          "CIFAR-100: y mod 20 shows the structure; the official superclasses only partly",
          "Sec. 4 / 5, CIFAR-100 experiments",
          f"{_STRUCTURE} on y mod 20; on the superclasses MSDR significant but the cluster "
          "effect smaller than on y mod 20 (the least separated superclasses named); both "
          "in the terminal phase",
          "Sec. 5: semantically similar classes share an official superclass, so their "
          "features are harder to separate than arbitrary groups",
          _judge_cifar100, _both(lambda ev: _run_figures(ev, p.CIFAR100_COARSE,
                                                         (w.HEATMAPS_FIGURE,)),
                                 lambda ev: _run_figures(ev, p.CIFAR100_SUPER,
                                                         (w.HEATMAPS_FIGURE,)),
                                 _ours(pf.STRUCTURE_FIGURE))),
    Claim("weight_decay_0",
          "Without weight decay the structure is still there",
          "App. A (the wd = 0 runs)",
          f"{_STRUCTURE}, on the grid point (main lr, wd 0); {_TERMINAL}",
          "if weight decay alone made the classes separate, wd 0 would lose the structure",
          _structure_claim(p.GRID, lambda ev: (ev.main_lr, 0.0)),
          lambda ev: _run_figures(ev, p.GRID, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE),
                                  (ev.main_lr, 0.0))),
    Claim("lr_wd_grid",
          "The structure is found across the lr x weight-decay grid",
          "Figs. 24-27 (D per grid point), Fig. 31 (CLP / LPO per grid point)",
          f"{_STRUCTURE}, at >= {GRID_FRACTION:.0%} of the grid points in the terminal phase "
          "(points outside it are listed, not judged)",
          "a finding that held at one setting only would not be a property of training",
          _judge_grid, lambda ev: [f for f in (ev.figure(p.GRID, f"{FIGURES_DIR}/{w.GRID_BARS_FIGURE}"),
                                               ev.figure(p.GRID, f"{FIGURES_DIR}/{w.GRID_HEATMAPS_FIGURE}"))
                                   if f]),
    Claim("gm_sigma2",
          "Gaussian mixtures: MSDR of the hidden layer rises with sigma^2",
          "App. B, Figs. 18-20",
          f"rank correlation of MSDR with sigma^2 >= {RISING_RANK} on every line of Fig. 18, "
          "under mup and under PyTorch's defaults",
          "a rising curve ranks its points in sigma^2 order",
          _gm(_judge_sigma2_one, p.GM_D_INPUT), _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_input",
          "Gaussian mixtures: MSDR rises with the input dimension",
          "App. B, Fig. 18",
          f"line levels (mean log MSDR at sigma^2 >= {LARGE_SIGMA2:g}) rank with d_input "
          f"(>= {RISING_RANK}) and the largest minus the smallest d_input, paired by seed, is "
          f"> 0 by >= {SEED_SE:g} standard errors; under both parameterisations",
          "the lines part at large sigma^2; a trend inside the seed noise is no trend",
          _gm(_judge_trend_one, p.GM_D_INPUT, "d_input", True),
          _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_hidden",
          "Gaussian mixtures: MSDR rises with the hidden width",
          "App. B, Fig. 19",
          "as for d_input, with d_hidden; under both parameterisations",
          "the lines part at large sigma^2; a trend inside the seed noise is no trend",
          _gm(_judge_trend_one, p.GM_D_HIDDEN, "d_hidden", True),
          _gm_figure(p.GM_D_HIDDEN, "d_hidden")),
    Claim("gm_weight_decay",
          "Gaussian mixtures: MSDR is flat in the weight decay",
          "App. B, Fig. 20",
          f"geometric-mean MSDR at sigma^2 >= {LARGE_SIGMA2:g} within {FLAT_RATIO}x across "
          f"weight decays, or the extreme weight decays' paired difference within "
          f"{SEED_SE:g} standard errors; under both parameterisations",
          "flat = no weight decay moves the lines by more than a quarter, or beyond the seed "
          "noise",
          _gm(_judge_trend_one, p.GM_WEIGHT_DECAY, "weight decay", False),
          _gm_figure(p.GM_WEIGHT_DECAY, "weight_decay")),
    Claim("gm_similar_subclasses",
          "Gaussian mixtures: similar subclasses separate as tau^2 grows",
          "App. B.1, Fig. 21",
          f"MSDR of the similar subclasses ranks with tau^2 (>= {RISING_RANK}), rises from "
          f"the smallest to the largest tau^2 by > {SEED_SE:g} x the seed spread, and is "
          "below the dissimilar subclasses' at the smallest tau^2; under both "
          "parameterisations",
          "at tau^2 = 0 the two subclasses share one distribution, so MSDR near 1 there is "
          "true by construction: the evidence is the trend in tau^2",
          _gm(_judge_tau2_one, p.GM_TAU2), _gm_figure(p.GM_TAU2, "tau2")),
)


def judge(claim: Claim, ev: Evidence) -> Outcome:
    """The claim's outcome; "not run" with the reason when its evidence is missing."""
    try:
        outcome = claim.judge(ev)
    except NotRun as e:
        outcome = Outcome(NOT_RUN, str(e))
    outcome.figures = claim.figures(ev)
    return outcome
