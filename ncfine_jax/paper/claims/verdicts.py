"""How a claim is decided: the tests it rests on, the one rule that turns them into a
verdict, the family adjustment of its p-values, and every threshold with its reason.

A judged claim lists the tests it is decided by (``Outcome.decided_by``), each a dict:

  {"quantity", "estimate", "interval": [lo, hi] | None, "threshold", "side", "how", "result"}

``side`` is "above" or "below" (the claimed side of ``threshold``) or "within"
(``threshold`` is [a, b]: an equivalence test). A p-value is the test
``{"quantity": "p", "estimate": p, "threshold": alpha, "side": "below", "adjusted": ...}``.

The rule: an interval on the claimed side holds, one on the other side does not hold, one
that straddles the threshold (or is missing: too little data) is uninformative. A p-value
at or below alpha (after the family adjustment) holds; above it is uninformative, never
"does not hold": only an interval that excludes the claimed effect says no. A claim holds
when every test holds, does not hold when any test does not, and is uninformative
otherwise; a claim whose runs are outside the regime it is about is uninformative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ncfine_jax.text import number

HOLDS, FAILS, UNINFORMATIVE, NOT_RUN = "holds", "does not hold", "uninformative", "not run"
VERDICTS = (HOLDS, FAILS, UNINFORMATIVE, NOT_RUN)
CI_LEVEL = 0.95  # every interval of a decision

# --- Effect sizes: what a claim needs beyond significance, each a fixed effect of interest.
# MSDR's excess over the median of its permutation null (MSDR - 1 is the squared distance
# of a label's two class means in units of twice the within-class variance, so 0.01 is a
# mean distance of about 1/7 of the within-class RMS radius beyond a random split of the
# label: a fixed size that does not shrink with the sample size, unlike a ratio to the
# null's own excess, which is about 1/n).
MSDR_MIN_EXCESS = 0.01
# Cluster accuracy inside a label at least this far above its null median (the best
# cluster-to-class mapping lifts the null itself above 1 / classes per label).
ABOVE_CHANCE = 0.10
# Train-mapped CLP at least this far above its null median (test classes shuffled inside
# their label: the probe then knows the label but not the class).
CLP_MARGIN = 0.05
# CLP within this of LPO / OT counts as "close": the paper's point is that clustering
# inside a label recovers nearly what supervision on the original labels gives.
CLOSE = 0.10
# Fine CIFAR-10: the line contrast at least this far above its null's median.
FINE_MARGIN = 0.05
LINES_PERMUTATIONS = 2000
# "Flat": every level within this factor of the reference line (an equivalence margin).
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
      decided_by: the tests the verdict follows from (module docstring).
    """

    verdict: str
    measured: str
    values: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    regime: dict | None = None
    decided_by: list = field(default_factory=list)

    @property
    def p_value(self) -> float | None:
        """The claim's p-value (raw), where it has one."""
        return next((t["estimate"] for t in self.decided_by if t["quantity"] == "p"), None)


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


# ------------------------------------------------------------------ tests


def interval_test(quantity: str, estimate: float | None, interval: Sequence[float] | None,
                  threshold, side: str, how: str) -> dict:
    """A test on an estimate's 95% interval (``how`` says how the interval was made)."""
    test = {"quantity": quantity, "estimate": estimate,
            "interval": None if interval is None else [float(interval[0]), float(interval[1])],
            "threshold": threshold, "side": side, "how": how}
    test["result"] = _interval_result(test)
    return test


def exact_test(quantity: str, value: float | None, threshold, side: str, how: str) -> dict:
    """A test on a number measured without sampling error (over the whole training set of
    a run): its interval is the point itself."""
    interval = None if value is None or not math.isfinite(value) else [value, value]
    return interval_test(quantity, value, interval, threshold, side, how)


def p_test(what: str, p: float | None, alpha: float) -> dict:
    """A permutation test: holds at p <= alpha (after adjustment), never fails."""
    test = {"quantity": "p", "what": what, "estimate": p, "threshold": alpha,
            "side": "below", "adjusted": None}
    test["result"] = _p_result(test)
    return test


def _interval_result(t: dict) -> str:
    if t["interval"] is None:
        return UNINFORMATIVE
    lo, hi = t["interval"]
    if t["side"] == "within":
        a, b = t["threshold"]
        return HOLDS if a < lo and hi < b else FAILS if hi < a or lo > b else UNINFORMATIVE
    above = t["side"] == "above"
    if (lo > t["threshold"]) if above else (hi < t["threshold"]):
        return HOLDS
    if (hi < t["threshold"]) if above else (lo > t["threshold"]):
        return FAILS
    return UNINFORMATIVE


def _p_result(t: dict) -> str:
    p = t["adjusted"] if t.get("adjusted") is not None else t["estimate"]
    return HOLDS if p is not None and p <= t["threshold"] else UNINFORMATIVE


def decide(tests: Sequence[dict]) -> str:
    """The verdict of a claim's tests (the module's rule)."""
    results = [t["result"] for t in tests]
    if not results:
        return UNINFORMATIVE
    if FAILS in results:
        return FAILS
    return HOLDS if all(r == HOLDS for r in results) else UNINFORMATIVE


def test_text(t: dict) -> str:
    """One test in words: 'MSDR excess 0.189 [0.170, 0.205] > 0.01: holds'."""
    if t["quantity"] == "p":
        adjusted = "" if t.get("adjusted") is None else f" (Holm {_g(t['adjusted'])})"
        return (f"{t['what']} p = {_g(t['estimate'])}{adjusted} <= {t['threshold']:g}: "
                f"{t['result']}")
    if t["side"] == "within":
        goal = f"within [{_g(t['threshold'][0])}, {_g(t['threshold'][1])}]"
    else:
        goal = f"{'>' if t['side'] == 'above' else '<'} {_g(t['threshold'])}"
    if t["interval"] is None:
        where = "no interval (too little data)"
    elif t["interval"][0] == t["interval"][1]:
        where = "exact"
    else:
        where = f"[{_g(t['interval'][0])}, {_g(t['interval'][1])}]"
    text = f"{t['quantity']} {_g(t['estimate'])} {where} {goal}: {t['result']}"
    if t["result"] == UNINFORMATIVE and t["interval"] is not None:
        text += " (too little data: the interval contains the threshold)"
    return text


def _g(x) -> str:
    return number(x, ".3g")


# ------------------------------------------------------------------ intervals


def t_interval(values: Sequence[float]) -> list[float] | None:
    """95% t-interval of the mean of ``values`` (seeds; None for fewer than 2)."""
    from scipy.stats import t as student

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if x.size < 2:
        return None
    half = student.ppf((1 + CI_LEVEL) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return [float(x.mean() - half), float(x.mean() + half)]


def difference_interval(a: float, a_ci, b: float, b_ci) -> list[float] | None:
    """Interval of a - b from the intervals of two independent estimates (half-widths
    added in quadrature; conservative when the two share data and correlate positively)."""
    if a_ci is None or b_ci is None:
        return None
    half_a, half_b = (a_ci[1] - a_ci[0]) / 2, (b_ci[1] - b_ci[0]) / 2
    half = math.hypot(half_a, half_b)
    return [a - b - half, a - b + half]


def proportion_interval(p: float, n: int) -> list[float] | None:
    """Normal-approximation 95% interval of an accuracy p measured on n samples."""
    from scipy.stats import norm

    if n is None or n < 1:
        return None
    half = norm.ppf((1 + CI_LEVEL) / 2) * math.sqrt(max(p * (1 - p), 0.0) / n)
    return [p - half, p + half]


# ------------------------------------------------------------------ the family


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (same order): family-wise error at most
    alpha over the family when each adjusted p-value is compared with alpha."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def adjust_family(outcomes: Sequence[Outcome]) -> int:
    """Holm-adjust the p-value tests of every claim judged in its regime, and decide those
    claims again with the adjusted p-values. Returns the family size (tests adjusted)."""
    family = [t for o in outcomes if o.verdict != NOT_RUN and o.regime and o.regime.get("met")
              for t in o.decided_by if t["quantity"] == "p" and t["estimate"] is not None]
    for t, adjusted in zip(family, holm([t["estimate"] for t in family])):
        t["adjusted"] = adjusted
        t["result"] = _p_result(t)
    for o in outcomes:
        if o.verdict != NOT_RUN and o.regime and o.regime.get("met") and o.decided_by:
            o.verdict = decide(o.decided_by)
    return len(family)
