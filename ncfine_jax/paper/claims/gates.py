"""The regime each claim is about, and the tests of fine structure every structure claim
shares.

A claim about trained networks is judged only on runs in the regime it is about
(``analysis.regime``: the terminal phase, or the early phase for claims about when a
pattern appears); otherwise it is "uninformative", with the gate's values. "Structure" is
one test for every backbone and label set (``structure_tests``).
"""

from __future__ import annotations

from ncfine_jax.analysis.regime import EARLY_ACCURACY, collapse, per_epoch, terminal_phase
from ncfine_jax.paper import measures as m
from ncfine_jax.paper.claims.verdicts import (ABOVE_CHANCE, MSDR_MIN_EXCESS, UNINFORMATIVE,
                                              Outcome, decide, interval_test, p_test)
from ncfine_jax.paper.evidence import Evidence, NotRun
from ncfine_jax.text import number


def label(name: str, point) -> str:
    return name if point is None else f"{name}/lr{point[0]:g}_wd{point[1]:g}"


def f3(x, digits: int = 3) -> str:
    return number(x, f".{digits}f")


def terminal_gate(ev: Evidence, name: str, point=None, collapse_required: bool = True) -> dict:
    """Is the run in the terminal phase? ``regime.terminal_phase`` of its results.json
    (training accuracy >= TERMINAL_ACCURACY and, with ``collapse_required``, NC1 fallen
    >= COLLAPSE_FACTOR from its peak), labelled with the run."""
    phase = terminal_phase(ev.results(name, point), collapse_required)
    return {"met": phase.pop("met"), "phase": "terminal", "run": label(name, point), **phase}


def early_gate(ev: Evidence, name: str, point=None) -> dict:
    """The early phase: the first saved feature epoch whose training accuracy is >=
    EARLY_ACCURACY (``epoch``), before the last saved epoch."""
    r = ev.results(name, point)
    epochs = [e for e, _ in per_epoch(r, "msdr")]
    accuracy = ev.train_accuracy(name, point)
    first = m.first_epoch_reaching(accuracy, epochs, EARLY_ACCURACY)
    c = collapse(r)
    return {"met": first is not None and first < max(epochs), "phase": "early",
            "run": label(name, point), "epoch": first,
            "requires": f"a saved epoch before the last with training accuracy >= "
                        f"{EARLY_ACCURACY:g}",
            "train_accuracy_at_epoch": None if first is None else accuracy.get(first),
            "train_accuracy": r.get("final_train_accuracy"),
            "test_accuracy": r.get("final_test_accuracy"), "nc1_last": c["nc1_last"],
            "train_accuracy_by_epoch": {e: accuracy.get(e) for e in epochs}}


def all_gates(*gates: dict) -> dict:
    """One regime of several runs: met when every run's is; the first run's values on top
    (the report table shows them)."""
    if len(gates) == 1:
        return gates[0]
    top = {k: gates[0].get(k) for k in ("train_accuracy", "test_accuracy", "nc1_last")}
    return {"met": all(g["met"] for g in gates), **top, "runs": list(gates)}


def gate_text(g: dict) -> str:
    if "run" not in g and not g.get("runs"):  # a regime over several points (the grid)
        return f"needs {g.get('requires')}"
    runs = g.get("runs") or [g]
    return "; ".join(
        f"{x['run']}: train acc {f3(x.get('train_accuracy'))}"
        + (f", NC1 drop {f3(x.get('nc1_drop'), 1)}x" if x.get("phase") == "terminal" else
           f", first epoch >= {EARLY_ACCURACY:g}: {x.get('epoch')}"
           if x.get("phase") == "early" else "")
        + ("" if x["met"] else f" (needs {x['requires']})") for x in runs)


def decided(measured: str, tests: list, regime: dict, values: dict | None = None) -> Outcome:
    """The outcome of ``tests`` (``verdicts.decide``) on runs in ``regime``; uninformative,
    with the gate's values, when the regime is not met."""
    out = Outcome(decide(tests), measured, values or {}, regime=regime, decided_by=tests)
    if not regime["met"]:
        out.verdict = UNINFORMATIVE
        out.measured = f"regime not met ({gate_text(regime)}); {measured}"
    return out


def fine_structure(results: dict, what: str) -> dict:
    """The fine-structure block of a coarsening run's results.json (NotRun without one or
    without the effect sizes this version of the analysis writes)."""
    fs = m.fine_structure(results)
    if fs is None or fs.get("msdr_p_value") is None:
        raise NotRun(f"{what} has no fine-structure significance (rerun its analysis)")
    if "msdr_excess_ci" not in fs:
        raise NotRun(f"{what}: its analysis predates the effect sizes (rerun it)")
    return fs


def structure_tests(fs: dict, what: str = "") -> list[dict]:
    """Fine structure: MSDR and the cluster accuracy inside the labels beyond their
    permutation nulls (one p-value: the larger, as both must be significant), with
    effects of at least MSDR_MIN_EXCESS and ABOVE_CHANCE over the nulls' medians."""
    prefix = f"{what}: " if what else ""
    ps = [fs["msdr_p_value"]] + ([fs["cluster_accuracy_p_value"]]
                                 if fs.get("cluster_accuracy") is not None else [])
    tests = [p_test(f"{prefix}MSDR and clusters vs their nulls (larger p)" if len(ps) > 1
                    else f"{prefix}MSDR vs its null", max(ps), fs["alpha"]),
             interval_test(f"{prefix}MSDR excess over its null median", fs.get("msdr_excess"),
                           fs.get("msdr_excess_ci"), MSDR_MIN_EXCESS, "above",
                           "bootstrap over training samples inside each class")]
    tests.append(interval_test(f"{prefix}cluster accuracy over its null median",
                               fs.get("cluster_effect"), fs.get("cluster_effect_ci"),
                               ABOVE_CHANCE, "above",
                               "bootstrap over training samples inside each class"))
    return tests


def structure_text(fs: dict) -> str:
    return (f"MSDR {f3(fs['msdr'])} (null median {f3(fs['msdr_null_p50'])}, p "
            f"{number(fs['msdr_p_value'], '.3g')}); clusters {f3(fs.get('cluster_accuracy'))} "
            f"(null median {f3(fs.get('cluster_accuracy_null_p50'))}, p "
            f"{number(fs.get('cluster_accuracy_p_value'), '.3g')})")
