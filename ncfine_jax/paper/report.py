"""``DIR/paper_report.md`` and ``DIR/paper_report.json``: each claim beside our evidence.

The report is written from the disk alone (finished workdirs and ``paper_status.json``),
so it describes whatever part of the plan has run, at the scale stated on top.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

from ncfine_jax.io import atomic_write_json, atomic_write_text
from ncfine_jax import workdir as wdir
from ncfine_jax.workdir import FIGURES_DIR
from ncfine_jax.paper import claims as cl
from ncfine_jax.analysis.regime import per_epoch
from ncfine_jax.paper import measures as m
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.evidence import Evidence, NotRun
from ncfine_jax.paper import figures as pf
from ncfine_jax.paper.figures import plot_epoch_curves, plot_structure_bars, remove_stale
from ncfine_jax.paper.plan import PlanItem, describe_configs

VERDICTS = cl.VERDICTS


def _try(fn, *args):
    try:
        return fn(*args)
    except NotRun:
        return None


def _coarse_runs(ev: Evidence) -> list[tuple[str, str, tuple | None]]:
    """(label, item, point) of every coarsening run the structure bars show."""
    main = (ev.main_lr, ev.main_wd)
    runs = [("main", p.GRID, main), ("wd 0", p.GRID, (ev.main_lr, 0.0)),
            ("long", p.LONG, None), ("random coarse", p.RANDOM, None)]
    for name in (p.DENSENET, p.VGG, p.CIFAR100_COARSE, p.CIFAR100_SUPER):
        runs.append((name.replace("coarse_cifar10_", ""), name, None))
    return runs


# The structure claim each run of the structure figure answers (its verdict is marked there).
STRUCTURE_CLAIM_OF_RUN = {"main": "resnet18", "wd 0": "weight_decay_0", "long": "long_training",
                          "random coarse": "random_coarse", "densenet121": "densenet121",
                          "coarse_cifar100": "cifar100"}


def draw_figures(ev: Evidence, verdicts: dict | None = None) -> list[Path]:
    """The comparison figures of DIR/figures (see ``figures.py``); returns those drawn.
    ``verdicts``: claim key -> verdict, marked on the structure figure's runs."""
    fig_dir = ev.root / FIGURES_DIR
    drawn = []
    curves, contrasts, nulls = {}, {}, {}
    for label, name, point in (("main run", p.GRID, (ev.main_lr, ev.main_wd)),
                               ("long run", p.LONG, None)):
        r = _try(ev.results, name, point) if name in ev.items else None
        if r is None:
            continue
        arch = ev.config(name, point).arch
        curves[f"{label} ({arch})"] = {k: per_epoch(r, k) for k in ("nc1", "msdr")}
        nulls[f"{label} ({arch})"] = {"msdr": m.msdr_null_band(r)}
        dist = _try(ev.distances, name, point)
        if dist is not None:
            mats, superclass = dist
            pairs = {e: m.d_contrasts(mats[e], superclass) for e in sorted(mats)}
            contrasts[f"{label} ({arch})"] = {
                "diagonal": [(e, d) for e, (d, _) in pairs.items()],
                "lines": [(e, x) for e, (_, x) in pairs.items()]}
    where = f"{ev.scale} scale, {ev.root.name}"
    if curves:
        drawn.append(plot_epoch_curves(
            curves, fig_dir / pf.NC1_MSDR_FIGURE,
            panels=(("nc1", "NC1 on the training labels", "NC1", True),
                    ("msdr", "MSDR over the original classes", "MSDR", False)),
            hline={"msdr": 1.0}, bands=nulls,
            title="NC1 falls while MSDR stays above its permutation null",
            caption=f"{where}; training samples at each saved epoch; shaded: the 95% range "
                    "of MSDR's permutation null (the classes shuffled inside each label)"))
    if contrasts:
        drawn.append(plot_epoch_curves(
            contrasts, fig_dir / pf.D_CONTRAST_FIGURE,
            panels=(("diagonal", "diagonal: mean D_ij (i != j) / mean D_ii", "diagonal contrast",
                     True),
                    ("lines", "lines: mean D across labels / mean D within a label (i != j)",
                     "line contrast", False)),
            hline={"diagonal": 1.0, "lines": 1.0},
            title="When the diagonal and the within-superclass lines of D appear",
            caption=f"{where}; D over the original classes, training samples"))
    rows = []
    for label, name, point in _coarse_runs(ev):
        if name not in ev.items:
            continue
        r = _try(ev.results, name, point)
        if r is None or r.get("clp_accuracy") is None:
            continue
        fs = r.get("fine_structure") or {}
        row = {"label": f"{label} ({ev.config(name, point).arch})",
               "clp": fs.get("clp_train_mapping"), "lpo": r.get("lpo_accuracy"),
               "clusters": fs.get("cluster_accuracy"),
               "chance": fs.get("cluster_accuracy_null_p50"),
               "verdict": (verdicts or {}).get(STRUCTURE_CLAIM_OF_RUN.get(label))}
        if label == "main":
            ot = _try(ev.results, p.OT, None) if p.OT in ev.items else None
            row["ot"] = None if ot is None else ot.get("final_test_accuracy")
        rows.append(row)
    if rows:
        drawn.append(plot_structure_bars(
            rows, fig_dir / pf.STRUCTURE_FIGURE,
            title="CLP / LPO and the clusters inside a label, per run",
            caption=f"{where}; CLP (clusters mapped to classes on the training set), LPO, OT on "
                    "test samples; clusters = training samples whose cluster inside their label maps "
                    "to their class; chance = median of the cluster accuracy's permutation null; "
                    "above each run: the verdict of its structure claim"))
    remove_stale(fig_dir, drawn)
    return drawn


def _link(path: str) -> str:
    return f"[{Path(path).name}]({path})"


def build_report(root: Path, plan: Sequence[PlanItem], statuses: dict, scale) -> dict:
    """Judge every claim, draw the comparison figures, write the report files.

    Returns:
      The paper_report.json content.
    """
    root = Path(root)
    ev = Evidence(root, plan, statuses, scale)
    outcomes = [cl.judge(claim, ev) for claim in cl.CLAIMS]
    family = cl.adjust_family(outcomes)
    figures = draw_figures(ev, {c.key: o.verdict for c, o in zip(cl.CLAIMS, outcomes)})
    for claim, outcome in zip(cl.CLAIMS, outcomes):  # figures drawn now may be theirs
        outcome.figures = claim.figures(ev)
    claims = [{"key": claim.key, "claim": claim.text, "source": claim.source,
               "criterion": claim.criterion, "reason": claim.reason,
               "verdict": outcome.verdict, "measured": outcome.measured,
               "decided_by": outcome.decided_by, "regime": outcome.regime,
               "p_value": outcome.p_value, "p_value_holm": next(
                   (t.get("adjusted") for t in outcome.decided_by if t["quantity"] == "p"),
                   None),
               "values": outcome.values, "figures": outcome.figures}
              for claim, outcome in zip(cl.CLAIMS, outcomes)]
    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    items = []
    for item in plan:
        status = statuses.get(item.name) or {"state": "not run yet", "reason": None}
        items.append({"name": item.name, "kind": item.kind, "workdir": item.name,
                      "what": describe_configs(item), "purpose": item.purpose,
                      "cost_images": item.cost_images, "state": status.get("state"),
                      "reason": status.get("reason"), "seconds": status.get("seconds")})
    report = {
        "scale": scale.name, "scale_description": scale.description,
        "generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "counts": counts, "claims": claims, "items": items,
        "family": {"tests": family, "adjustment": "Holm", "note": (
            "the p-values of the claims judged in their regime form one family; each claim's "
            "verdict uses its Holm-adjusted p-value")},
        "figures": [str(Path(f).relative_to(root)) for f in figures],
        "thresholds": {"terminal_accuracy": cl.TERMINAL_ACCURACY,
                       "collapse_factor": cl.COLLAPSE_FACTOR,
                       "early_accuracy": cl.EARLY_ACCURACY,
                       "msdr_min_excess": cl.MSDR_MIN_EXCESS,
                       "above_chance": cl.ABOVE_CHANCE, "clp_margin": cl.CLP_MARGIN,
                       "close": cl.CLOSE, "fine_margin": cl.FINE_MARGIN,
                       "flat_ratio": cl.FLAT_RATIO, "grid_fraction": cl.GRID_FRACTION,
                       "large_sigma2": cl.LARGE_SIGMA2},
    }
    atomic_write_json(root / wdir.PAPER_REPORT_JSON, report)
    atomic_write_text(root / wdir.PAPER_REPORT_MD, report_markdown(report))
    return report


def _num(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if abs(x) >= 10 else f"{x:.{digits}f}"


def _p(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def regime_cells(regime: dict | None) -> str:
    """'train acc / test acc / NC1 | met' cells of a claim's regime (its first run)."""
    if not regime:
        return "- | -"
    values = " / ".join(_num(regime.get(k)) for k in ("train_accuracy", "test_accuracy",
                                                       "nc1_last"))
    return f"{values} | {'yes' if regime.get('met') else 'no'}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_markdown(report: dict) -> str:
    """paper_report.md from the paper_report.json content."""
    c = report["counts"]
    family = report.get("family") or {}
    lines = [
        f"# The paper's claims, checked at scale `{report['scale']}`",
        "",
        f"Scale `{report['scale']}`: {report['scale_description']}.",
        "",
        f"Verdicts: {c[cl.HOLDS]} hold, {c[cl.FAILS]} do not hold, {c[cl.UNINFORMATIVE]} "
        f"uninformative (outside the regime the claim is about, or an interval that contains "
        f"the threshold: too little data), {c[cl.NOT_RUN]} not run (of "
        f"{len(report['claims'])} claims). Written {report['generated']}.",
        "",
        "A claim holds when every test it is decided by holds: each 95% interval on the "
        "claimed side of its threshold, each p-value at or below alpha; it does not hold when "
        "an interval lies on the other side; otherwise it is uninformative. "
        f"{family.get('tests', 0)} claims were tested against permutation nulls: their "
        "p-values form one family and the verdicts use the Holm-adjusted values (shown "
        "beside the raw ones).",
        "",
        "| # | claim | paper source | our figures | measured | train acc / test acc / NC1 "
        "| regime met | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, claim in enumerate(report["claims"], 1):
        figs = "<br>".join(_link(f) for f in claim["figures"]) or "-"
        holm = claim.get("p_value_holm")
        p = _p(claim.get("p_value")) + ("" if holm is None else f" ({_p(holm)})")
        lines.append(f"| {n} | {_cell(claim['claim'])} | {_cell(claim['source'])} | {figs} | "
                     f"{_cell(claim['measured'])} | {regime_cells(claim.get('regime'))} | "
                     f"{p} | **{claim['verdict']}** |")
    lines += ["", "## Decided by", ""]
    for n, claim in enumerate(report["claims"], 1):
        tests = claim.get("decided_by") or []
        lines.append(f"{n}. `{claim['key']}` **{claim['verdict']}**: "
                     + ("; ".join(cl.test_text(t) for t in tests) if tests else
                        _cell(claim["measured"])) + ".")
    lines += ["", "## Criteria, and why", ""]
    lines += [f"{n}. `{claim['key']}`: {claim['criterion']}. Why: {claim['reason']}."
              for n, claim in enumerate(report["claims"], 1)]
    lines += ["", "## Runs", "", "| item | what | state | seconds | why |", "|---|---|---|---|---|"]
    for item in report["items"]:
        state = item["state"] + (f": {item['reason']}" if item["reason"] else "")
        link = (f"[{item['name']}]({item['workdir']}/report.md)" if item["kind"] == "run"
                else f"[{item['name']}]({item['workdir']}/)") if item["state"] == "done" \
            else item["name"]
        seconds = "-" if item["seconds"] is None else f"{item['seconds']:.0f}"
        lines.append(f"| {link} | {_cell(item['what'])} | {_cell(state)} | {seconds} | "
                     f"{_cell(item['purpose'])} |")
    if report["figures"]:
        lines += ["", "## Comparison figures", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in report["figures"]]
    lines.append("")
    return "\n".join(lines)
