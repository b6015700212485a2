"""The judges of the Gaussian-mixture claims (App. B, Figs. 18-21), decided by 95%
t-intervals over seeds.

Every seed draws the same data on every line of a sweep, so a line's comparison with
another is paired by seed. A line's level is its mean log MSDR over sigma^2 >=
LARGE_SIGMA2 (the log panel, where the lines part). Fewer than two seeds give no interval:
the claim is then uninformative. Each sweep also runs under PyTorch's defaults; a claim is
judged on the sweeps whose MLPs learned their labels and says which.
"""

from __future__ import annotations

import math

import numpy as np

from ncfine_jax.analysis.regime import EARLY_ACCURACY
from ncfine_jax.paper import measures as m
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.claims.gates import decided, f3
from ncfine_jax.paper.claims.verdicts import (FLAT_RATIO, LARGE_SIGMA2, NOT_RUN,
                                              UNINFORMATIVE, Outcome, decide, interval_test,
                                              t_interval)
from ncfine_jax.paper.evidence import Evidence, NotRun

SEEDS = "95% t-interval over seeds, paired by seed"


def gm_gate(records, name: str) -> dict:
    """The MLPs learned their training labels: mean training accuracy over seeds >=
    EARLY_ACCURACY at every point judged (a point where GD has not fitted the labels says
    nothing about what training does to the representation)."""
    accs = [r["train_acc_mean"] for r in records if r.get("train_acc_mean") is not None]
    low = min(accs) if accs else None
    return {"met": low is not None and low >= EARLY_ACCURACY, "phase": "trained", "run": name,
            "requires": f"mean training accuracy >= {EARLY_ACCURACY:g} at every point",
            "train_accuracy": low, "test_accuracy": None, "nc1_last": None}


def per_seed_log(record) -> np.ndarray:
    """[seeds] log MSDR of one record (NaN for a diverged seed)."""
    return np.log(np.array([np.nan if v is None or v <= 0 else v
                            for v in record["msdr_per_seed"]], np.float64))


def per_seed_levels(records, value) -> np.ndarray:
    """[seeds] mean log MSDR over sigma^2 >= LARGE_SIGMA2 of one line, per seed."""
    rows = [per_seed_log(r) for r in records
            if r["value"] == value and r["sigma2"] >= LARGE_SIGMA2 and r.get("msdr_per_seed")]
    if not rows:
        return np.array([])
    with np.errstate(all="ignore"):
        return np.nanmean(np.array(rows), axis=0)


def paired_test(quantity: str, differences: np.ndarray, threshold, side: str) -> dict:
    d = differences[np.isfinite(differences)] if differences.size else differences
    return interval_test(quantity, float(d.mean()) if d.size else None, t_interval(d.tolist()),
                         threshold, side, SEEDS)


def judge_sigma2_one(ev: Evidence, name: str) -> Outcome:
    """Each line rises with sigma^2: log MSDR at the largest sigma^2 minus at the smallest,
    per seed, above 0."""
    records = ev.records(name)
    tests, text = [], []
    for value in sorted({r["value"] for r in records}):
        line = sorted((r for r in records if r["value"] == value and r.get("msdr_per_seed")),
                      key=lambda r: r["sigma2"])
        if len(line) < 2:
            continue
        rise = per_seed_log(line[-1]) - per_seed_log(line[0])
        tests.append(paired_test(f"d_input {value:g}: log MSDR at sigma^2 {line[-1]['sigma2']:g}"
                                 f" minus at {line[0]['sigma2']:g}", rise, 0.0, "above"))
        text.append(f"{value:g}: MSDR {f3(line[0]['msdr_mean'], 2)} -> "
                    f"{f3(line[-1]['msdr_mean'], 2)}")
    if not tests:
        raise NotRun(f"{name}: no line with two sigma^2 points")
    return decided("MSDR from the smallest to the largest sigma^2 per d_input: "
                   + ", ".join(text), tests, gm_gate(records, name))


def judge_trend_one(ev: Evidence, name: str, vary: str, rising: bool) -> Outcome:
    """A trend in the varied parameter. Rising: the level of the largest value minus the
    smallest's, per seed, above 0. Flat: every value's level minus the smallest value's
    within +-log FLAT_RATIO (an equivalence test)."""
    records = ev.records(name)
    lines = m.gm_lines(records)
    levels = {v: m.gm_level(pts, LARGE_SIGMA2) for v, pts in lines.items()}
    levels = {v: x for v, x in levels.items() if x is not None}
    if len(levels) < 2:
        raise NotRun(f"{name}: fewer than 2 {vary} values with MSDR at sigma^2 >= "
                     f"{LARGE_SIGMA2:g}")
    low, high = min(levels), max(levels)
    base = per_seed_levels(records, low)
    if rising:
        tests = [paired_test(f"log level, {vary} {high:g} minus {low:g}",
                             per_seed_levels(records, high) - base, 0.0, "above")]
    else:
        margin = [-math.log(FLAT_RATIO), math.log(FLAT_RATIO)]
        tests = [paired_test(f"log level, {vary} {v:g} minus {low:g}",
                             per_seed_levels(records, v) - base, margin, "within")
                 for v in sorted(levels) if v != low]
    text = (f"geometric-mean MSDR at sigma^2 >= {LARGE_SIGMA2:g} per {vary}: "
            + ", ".join(f"{v:g}: {math.exp(x):.2f}" for v, x in levels.items())
            + f"; rank correlation {f3(m.spearman(list(levels), list(levels.values())), 2)}")
    return decided(text, tests, gm_gate(records, name),
                   {"levels": {str(v): math.exp(x) for v, x in levels.items()}})


def judge_tau2_one(ev: Evidence, name: str) -> Outcome:
    """Similar subclasses separate as tau^2 grows (log MSDR at the largest tau^2 minus at
    the smallest, per seed, above 0) and start below the dissimilar ones (dissimilar minus
    similar log MSDR at the smallest tau^2, per seed, above 0)."""
    records = ev.records(name)
    similar = sorted((r for r in records if r["subclasses"] == "similar"
                      and r.get("msdr_per_seed")), key=lambda r: r["tau2"])
    dissimilar = {r["tau2"]: r for r in records if r["subclasses"] == "dissimilar"
                  and r.get("msdr_per_seed")}
    if len(similar) < 2 or similar[0]["tau2"] not in dissimilar:
        raise NotRun(f"{name}: no similar / dissimilar curve (every seed diverged)")
    lo, hi = similar[0], similar[-1]
    tests = [paired_test(f"similar subclasses: log MSDR at tau^2 {hi['tau2']:g} minus at "
                         f"{lo['tau2']:g}", per_seed_log(hi) - per_seed_log(lo), 0.0, "above"),
             paired_test(f"at tau^2 {lo['tau2']:g}: dissimilar minus similar log MSDR",
                         per_seed_log(dissimilar[lo["tau2"]]) - per_seed_log(lo), 0.0, "above")]
    text = ("similar subclasses' MSDR over tau^2: " + ", ".join(
        f"{r['tau2']:g}: {f3(r['msdr_mean'], 2)}" for r in similar)
        + f"; dissimilar at tau^2 = {lo['tau2']:g}: {f3(dissimilar[lo['tau2']]['msdr_mean'], 2)}")
    return decided(text, tests, gm_gate(records, name))


def both_parameterisations(one):
    """Judge a sweep under the default parameterisation and under PyTorch's defaults
    (``plan.pytorch_variant``) on the parts whose MLPs learned their labels: the claim is
    decided by the tests of those parts (the regime lists them, and those left out);
    uninformative when none learned."""
    def judge(ev: Evidence, name: str) -> Outcome:
        parts = {}
        for part, n in (("mup", name), ("PyTorch defaults", p.pytorch_variant(name))):
            try:
                parts[part] = one(ev, n)
            except NotRun as e:
                parts[part] = Outcome(NOT_RUN, str(e))
        if all(o.verdict == NOT_RUN for o in parts.values()):
            raise NotRun("; ".join(o.measured for o in parts.values()))
        judged = {k: o for k, o in parts.items() if o.regime and o.regime["met"]}
        tests = [dict(t, quantity=f"{k}: {t['quantity']}") for k, o in judged.items()
                 for t in o.decided_by]
        gates = [o.regime for o in (judged or parts).values() if o.regime]
        regime = {"met": bool(judged), "judged": list(judged), "runs": gates,
                  "not_judged": {k: o.measured if o.verdict == NOT_RUN else
                                 f"outside its regime (needs {o.regime['requires']})"
                                 for k, o in parts.items() if k not in judged},
                  "train_accuracy": gates[0]["train_accuracy"] if gates else None,
                  "test_accuracy": None, "nc1_last": None}
        return Outcome(decide(tests) if judged else UNINFORMATIVE,
                       "; ".join(f"{k}: {o.measured}" for k, o in parts.items()),
                       {k: o.values for k, o in parts.items()}, regime=regime,
                       decided_by=tests)
    return judge


def gm(one, name: str, *args):
    both = both_parameterisations(lambda ev, n: one(ev, n, *args))
    return lambda ev: both(ev, name)
