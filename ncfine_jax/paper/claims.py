"""Every claim of the paper that the plan checks: its source, criterion and reason, in one
place.

A claim is judged from finished results only (``Evidence``); when what it needs is
missing (a skipped dataset, a failed or unselected run, an item the scale does not
train) the verdict is "not run" with the reason. Thresholds are the module constants
below, each with the reason for its value. The paper's own numbers are quoted only where
this project's README states them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ncfine_jax.paper import measures as m
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.evidence import Evidence, NotRun

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"

# CLP within this of LPO / OT counts as "close": the paper's point is that clustering
# inside a label recovers nearly what supervision on the original labels gives.
CLOSE = 0.10
# Clusters found inside a label must match the classes this much better than chance
# (1 / classes per label): features that carry only the coarse label cluster at random
# inside it, which the best cluster-to-class mapping lifts only a little above chance.
ABOVE_CHANCE = 0.10
# A rising curve ranks its points in x order; 0.8 tolerates one swap of neighbours
# (seed noise) on 4 or more points.
RISING_RANK = 0.8
# "Near 1": at most this above 1 (D's within-pair distance at most 1.5x the within-cluster one).
NEAR_ONE = 0.5
# "Flat": the per-value levels differ by at most this factor.
FLAT_RATIO = 1.25
# The structure should hold at this fraction of the grid points that did not diverge.
GRID_FRACTION = 2 / 3
# Gaussian-mixture lines are compared over sigma^2 >= this: the log panel of Figs. 18-20,
# where the lines part (near sigma^2 = 0 every line starts at MSDR ~ 1).
LARGE_SIGMA2 = 2.0


@dataclass
class Outcome:
    """A claim's verdict with what it was judged on.

    Attributes:
      verdict: "holds", "does not hold" or "not run".
      measured: one line of the numbers (or, for "not run", why).
      values: the numbers, for paper_report.json.
      figures: our figures (paths relative to DIR) beside the paper's.
    """

    verdict: str
    measured: str
    values: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)


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
    return "n/a" if x is None else f"{x:.{digits}f}"


def main_point(ev: Evidence) -> tuple[float, float]:
    """(lr, wd) of the main run: the scale's main setting, a point of the grid."""
    return ev.main_lr, ev.main_wd


def _main(ev: Evidence) -> dict:
    return ev.results(p.GRID, main_point(ev))


def _run_figures(ev: Evidence, name: str, files, point=None) -> list[str]:
    return [f for f in (ev.figure(name, f"figures/{x}", point) for x in files) if f]


def _main_figures(*files):
    def figures(ev: Evidence) -> list[str]:
        return _run_figures(ev, p.GRID, files, (ev.main_lr, ev.main_wd))
    return figures


def _ours(*files):
    """Figures the report draws into DIR/figures (kept when they exist)."""
    def figures(ev: Evidence) -> list[str]:
        return [f"figures/{x}" for x in files if (ev.root / "figures" / x).is_file()]
    return figures


def _both(*getters):
    def figures(ev: Evidence) -> list[str]:
        out = []
        for g in getters:
            out += [f for f in g(ev) if f not in out]
        return out
    return figures


# ------------------------------------------------------------------ CIFAR claims


def _judge_msdr(ev: Evidence) -> Outcome:
    r = _main(ev)
    msdr = m.per_epoch(r, "msdr")
    if not msdr or msdr[-1][1] is None:
        raise NotRun("the main run has no MSDR (see its report.md)")
    epoch, value = msdr[-1]
    return Outcome(HOLDS if value > 1 else FAILS, f"MSDR {value:.3f} at epoch {epoch}",
                   {"msdr": value, "epoch": epoch})


def _judge_clusters(ev: Evidence) -> Outcome:
    r = _main(ev)
    s = m.structure(r, CLOSE, ABOVE_CHANCE)
    if s["clusters"] is None:
        raise NotRun("the main run has no CLP clustering")
    ok = s["clusters"] > s["chance"] + ABOVE_CHANCE
    return Outcome(HOLDS if ok else FAILS,
                   f"clusters inside a label match the classes for {_f(s['clusters'])} of the "
                   f"training samples (chance {_f(s['chance'])}); CLP test accuracy "
                   f"{_f(s['clp'])}", s)


def _clp_close_to(clp, other, name: str, missing: str) -> Outcome:
    """CLP >= ``other`` - CLOSE, where ``other`` is the LPO or OT accuracy called ``name``."""
    if clp is None or other is None:
        raise NotRun(missing)
    return Outcome(HOLDS if clp >= other - CLOSE else FAILS,
                   f"CLP {_f(clp)}, {name} {_f(other)} (CLP - {name} = {clp - other:+.3f})",
                   {"clp": clp, name.lower(): other})


def _judge_lpo(ev: Evidence) -> Outcome:
    r = _main(ev)
    return _clp_close_to(r.get("clp_accuracy"), r.get("lpo_accuracy"), "LPO",
                         "the main run has no CLP / LPO accuracy")


def _judge_ot(ev: Evidence) -> Outcome:
    r = _main(ev)
    ot_results = ev.results(p.OT)  # NotRun when the baseline is missing
    return _clp_close_to(r.get("clp_accuracy"), ot_results.get("final_test_accuracy"), "OT",
                         "CLP or the OT run's test accuracy is missing")


def _judge_diagonal_first(ev: Evidence) -> Outcome:
    mats, superclass = ev.distances(p.GRID, main_point(ev))
    epochs = sorted(mats)
    if len(epochs) < 2:
        raise NotRun("the main run saved features at fewer than 2 epochs")
    contrasts = {e: m.d_contrasts(mats[e], superclass) for e in epochs}
    (d0, l0), (_, l1) = contrasts[epochs[0]], contrasts[epochs[-1]]
    ok = d0 > l0 and l1 > l0 and l1 > 1
    per = "; ".join(f"epoch {e}: diagonal {d:.2f}, lines {l:.2f}" for e, (d, l) in contrasts.items())
    return Outcome(HOLDS if ok else FAILS, per,
                   {"epochs": epochs, "diagonal": [contrasts[e][0] for e in epochs],
                    "lines": [contrasts[e][1] for e in epochs]})


def _judge_nc1_falls(ev: Evidence) -> Outcome:
    r = _main(ev)
    nc1 = [(e, v) for e, v in m.per_epoch(r, "nc1") if v is not None]
    msdr = m.per_epoch(r, "msdr")
    if len(nc1) < 2 or not msdr or any(v is None for _, v in msdr):
        raise NotRun("the main run lacks NC1 at 2 epochs or MSDR at some epoch")
    falls = nc1[-1][1] < nc1[0][1]
    stays = all(v > 1 for _, v in msdr)
    return Outcome(HOLDS if falls and stays else FAILS,
                   f"NC1 {nc1[0][1]:.3g} (epoch {nc1[0][0]}) -> {nc1[-1][1]:.3g} (epoch "
                   f"{nc1[-1][0]}); MSDR min {min(v for _, v in msdr):.3f} over epochs "
                   f"{[e for e, _ in msdr]}",
                   {"nc1": dict(nc1), "msdr": dict(msdr)})


def _judge_long(ev: Evidence) -> Outcome:
    r = ev.results(p.LONG)
    s = m.structure(r, CLOSE, ABOVE_CHANCE)
    if s["holds"] is None:
        raise NotRun("the long run lacks CLP, clusters, LPO or MSDR")
    nc1 = [(e, v) for e, v in m.per_epoch(r, "nc1") if v is not None]
    return Outcome(HOLDS if s["holds"] else FAILS,
                   f"after {r['analysis']['epochs_trained']} epochs: " + _structure_text(s)
                   + (f"; NC1 {nc1[-1][1]:.3g}" if nc1 else ""), s)


def _structure_text(s: dict) -> str:
    return (f"clusters {_f(s['clusters'])} vs chance {_f(s['chance'])}, CLP {_f(s['clp'])}, "
            f"LPO {_f(s['lpo'])}, MSDR {_f(s['msdr'])}")


def _structure_of(ev: Evidence, name: str, point=None, arch: str | None = None) -> dict:
    if arch is not None:
        trained = ev.config(name, point).arch
        if not trained.startswith(arch):
            raise NotRun(f"this scale trains {trained} there, not {arch}")
    s = m.structure(ev.results(name, point), CLOSE, ABOVE_CHANCE)
    if s["holds"] is None:
        raise NotRun(f"{name} lacks CLP, clusters, LPO or MSDR")
    return s


def _judge_arch(name: str, arch: str, expect: bool, point_of=None):
    def judge(ev: Evidence) -> Outcome:
        s = _structure_of(ev, name, point_of(ev) if point_of else None, arch)
        return Outcome(HOLDS if s["holds"] == expect else FAILS,
                       f"{arch}: structure {'present' if s['holds'] else 'absent'} ("
                       f"{_structure_text(s)})", s)
    return judge


def _judge_fine(ev: Evidence) -> Outcome:
    mats, superclass = ev.distances(p.FINE)
    epoch = max(mats)
    _, lines = m.d_contrasts(mats[epoch], superclass)
    r = ev.results(p.FINE)
    return Outcome(HOLDS if lines > 1 else FAILS,
                   f"epoch {epoch}: labels of different classes / the two labels of one class "
                   f"= {lines:.3f}; LPO {_f(r.get('lpo_accuracy'))}",
                   {"epoch": epoch, "lines": lines, "lpo": r.get("lpo_accuracy")})


def _judge_random(ev: Evidence) -> Outcome:
    s = _structure_of(ev, p.RANDOM)
    return Outcome(FAILS if s["holds"] else HOLDS,
                   f"structure {'present' if s['holds'] else 'absent'} ({_structure_text(s)})", s)


def _judge_cifar100(ev: Evidence) -> Outcome:
    found, missing = {}, []
    for name in (p.CIFAR100_COARSE, p.CIFAR100_SUPER):
        try:
            found[name] = _structure_of(ev, name)
        except NotRun as e:
            missing.append(str(e))
    if missing:
        raise NotRun("; ".join(missing))
    ok = all(s["holds"] for s in found.values())
    return Outcome(HOLDS if ok else FAILS, "; ".join(
        f"{n}: {_structure_text(s)}" for n, s in found.items()), found)


def _judge_wd0(ev: Evidence) -> Outcome:
    s = _structure_of(ev, p.GRID, (ev.main_lr, 0.0))
    return Outcome(HOLDS if s["holds"] else FAILS,
                   f"lr {ev.main_lr:g}, wd 0: structure {'present' if s['holds'] else 'absent'} "
                   f"({_structure_text(s)})", s)


def _judge_grid(ev: Evidence) -> Outcome:
    item = ev.item(p.GRID)
    present, absent, missing = [], [], []
    for c in item.configs:
        label = f"lr{c.lr:g}_wd{c.weight_decay:g}"
        try:
            s = _structure_of(ev, p.GRID, (c.lr, c.weight_decay))
        except NotRun as e:
            missing.append(f"{label} ({e})")
            continue
        (present if s["holds"] else absent).append(label)
    judged = len(present) + len(absent)
    if judged == 0:
        raise NotRun("no grid point finished: " + "; ".join(missing))
    ok = len(present) >= GRID_FRACTION * judged
    text = f"structure at {len(present)} of {judged} points (absent: {', '.join(absent) or 'none'})"
    if missing:
        text += f"; not judged: {'; '.join(missing)}"
    return Outcome(HOLDS if ok else FAILS, text,
                   {"present": present, "absent": absent, "not_judged": missing})


# ------------------------------------------------------------------ Gaussian mixtures


def _gm_figure(name: str, vary: str):
    def figures(ev: Evidence) -> list[str]:
        f = ev.figure(name, f"gaussian_mixture_{vary}.png")
        return [f] if f else []
    return figures


def _judge_sigma2(ev: Evidence) -> Outcome:
    lines = m.gm_lines(ev.records(p.GM_D_INPUT))
    rhos = {v: m.spearman([s for s, _, _ in pts], [x for _, x, _ in pts])
            for v, pts in lines.items()}
    if not rhos:
        raise NotRun("every seed diverged at every point of Fig. 18")
    ok = all(r is not None and r >= RISING_RANK for r in rhos.values())
    return Outcome(HOLDS if ok else FAILS, "rank correlation of MSDR with sigma^2 per d_input: "
                   + ", ".join(f"{v:g}: {_f(r, 2)}" for v, r in rhos.items()),
                   {"spearman": {str(v): r for v, r in rhos.items()}})


def _judge_width(name: str, vary: str):
    def judge(ev: Evidence) -> Outcome:
        lines = m.gm_lines(ev.records(name))
        levels = {v: m.gm_level(pts, LARGE_SIGMA2) for v, pts in lines.items()}
        levels = {v: x for v, x in levels.items() if x is not None}
        if len(levels) < 2:
            raise NotRun(f"fewer than 2 {vary} values with MSDR at sigma^2 >= {LARGE_SIGMA2:g}")
        rho = m.spearman(list(levels), list(levels.values()))
        ok = rho is not None and rho >= RISING_RANK
        return Outcome(HOLDS if ok else FAILS,
                       f"mean log MSDR at sigma^2 >= {LARGE_SIGMA2:g} per {vary}: "
                       + ", ".join(f"{v:g}: {x:.2f}" for v, x in levels.items())
                       + f"; rank correlation {_f(rho, 2)}",
                       {"levels": {str(v): x for v, x in levels.items()}, "spearman": rho})
    return judge


def _judge_weight_decay(ev: Evidence) -> Outcome:
    import math

    lines = m.gm_lines(ev.records(p.GM_WEIGHT_DECAY))
    levels = {v: m.gm_level(pts, LARGE_SIGMA2) for v, pts in lines.items()}
    levels = {v: x for v, x in levels.items() if x is not None}
    if len(levels) < 2:
        raise NotRun(f"fewer than 2 weight decays with MSDR at sigma^2 >= {LARGE_SIGMA2:g}")
    ratio = math.exp(max(levels.values()) - min(levels.values()))
    return Outcome(HOLDS if ratio <= FLAT_RATIO else FAILS,
                   "geometric-mean MSDR at sigma^2 >= 2 per weight decay: "
                   + ", ".join(f"{v:g}: {math.exp(x):.2f}" for v, x in levels.items())
                   + f"; max / min {ratio:.2f}",
                   {"levels": {str(v): math.exp(x) for v, x in levels.items()}, "ratio": ratio})


def _judge_tau2(ev: Evidence) -> Outcome:
    curves = m.gm_tau2_curves(ev.records(p.GM_TAU2))
    sim, dis = curves.get("similar"), curves.get("dissimilar")
    if not sim or not dis:
        raise NotRun("Fig. 21 has no similar / dissimilar curve (every seed diverged)")
    tau0, s0 = sim[0]
    d0 = dict(dis).get(tau0)
    ok = abs(s0 - 1) <= NEAR_ONE and d0 is not None and s0 < d0
    return Outcome(HOLDS if ok else FAILS,
                   f"at tau^2 = {tau0:g}: similar {s0:.2f}, dissimilar {_f(d0, 2)}; similar "
                   "over tau^2: " + ", ".join(f"{t:g}: {x:.2f}" for t, x in sim),
                   {"tau2": tau0, "similar": s0, "dissimilar": d0, "similar_curve": sim})


_STRUCTURE = (f"structure = clusters inside each label match the classes for > chance + "
              f"{ABOVE_CHANCE:.2f} of the training samples, CLP >= LPO - {CLOSE:.2f}, and MSDR "
              "> 1 at the last saved epoch")

CLAIMS: tuple[Claim, ...] = (
    Claim("msdr_above_1",
          "Features of one coarse label keep its original classes apart: MSDR > 1",
          "Sec. 4, D heatmaps (Figs. 5-6); MSDR as defined in App. B",
          "MSDR > 1 at the last saved epoch of the main run",
          "MSDR > 1: two classes sharing a label are farther apart than two samples of one class",
          _judge_msdr, _both(_main_figures("distance_heatmaps.png"), _ours("nc1_msdr.png"))),
    Claim("clusters_find_classes",
          "Clustering inside each coarse label recovers the original classes",
          "Sec. 4.3 (CLP step 1); t-SNE per label (Figs. 7-8)",
          f"training samples whose cluster (KMeans inside their label) maps to their class "
          f"> 1 / classes per label + {ABOVE_CHANCE:.2f}, on the main run",
          "features carrying only the coarse label would cluster at random inside it",
          _judge_clusters, _both(_main_figures("tsne_superclasses.png", "accuracy_bars.png"),
                                 _ours("structure_by_run.png"))),
    Claim("clp_close_to_lpo",
          "CLP is close to LPO (paper: 93% CLP for ResNet-18 on Coarse CIFAR-10)",
          "Sec. 4.3, Figs. 11-12",
          f"CLP >= LPO - {CLOSE:.2f} on the main run",
          "clustering without the original labels recovers nearly what a probe trained on them does",
          _judge_lpo, _main_figures("accuracy_bars.png")),
    Claim("clp_close_to_ot",
          "CLP is close to OT, a network trained on the original labels",
          "Sec. 4.3, Figs. 11-12",
          f"CLP of the main run >= OT test accuracy - {CLOSE:.2f}",
          "the coarse-trained features lose little of what training on the classes gives",
          _judge_ot, _main_figures("accuracy_bars.png")),
    Claim("diagonal_before_lines",
          "In D, the diagonal appears before the within-superclass lines",
          "Sec. 4, D heatmaps over epochs (Figs. 5-6)",
          "at the first saved epoch diagonal contrast > line contrast; line contrast grows "
          "from the first to the last saved epoch and ends > 1",
          "diagonal = mean D_ij (i != j) / mean D_ii, lines = mean D across labels / mean D "
          "within a label (i != j): the pattern that shows first must be the stronger early",
          _judge_diagonal_first, _both(_main_figures("distance_heatmaps.png"),
                                       _ours("d_contrast.png"))),
    Claim("nc1_falls_msdr_stays",
          "NC1 falls during training while MSDR stays above 1",
          "Sec. 4, NC1/NC2 curves (Fig. 3)",
          "NC1 at the last saved epoch < NC1 at the first, and MSDR > 1 at every saved epoch",
          "collapse on the training labels progresses, yet the classes inside a label never merge",
          _judge_nc1_falls, _both(_main_figures("nc_curves.png"), _ours("nc1_msdr.png"))),
    Claim("long_training",
          "The structure survives very long training (the 1,000-epoch run)",
          "the paper's 1,000-epoch run",
          f"{_STRUCTURE}, on the long run",
          "if training long enough erased the structure, the clusters would fall to chance",
          _judge_long, _both(lambda ev: _run_figures(ev, p.LONG, ("nc_curves.png",
                                                                   "distance_heatmaps.png")),
                             _ours("nc1_msdr.png"))),
    Claim("resnet18",
          "ResNet-18 shows the structure",
          "Sec. 4 (main run); App. G/H compare backbones",
          f"{_STRUCTURE}, on the main run, trained with ResNet-18",
          "one definition of 'structure' for every backbone and label set",
          _judge_arch(p.GRID, "resnet18", True, lambda ev: (ev.main_lr, ev.main_wd)),
          _ours("structure_by_run.png")),
    Claim("densenet121",
          "DenseNet-121 shows the structure",
          "App. G",
          f"{_STRUCTURE}, on the DenseNet-121 run",
          "one definition of 'structure' for every backbone and label set",
          _judge_arch(p.DENSENET, "densenet121", True),
          _both(lambda ev: _run_figures(ev, p.DENSENET, ("distance_heatmaps.png",
                                                          "accuracy_bars.png")),
                _ours("structure_by_run.png"))),
    Claim("vgg_lacks_structure",
          "VGG does not show the structure",
          "App. H",
          f"the structure test fails on the VGG run ({_STRUCTURE})",
          "one definition of 'structure' for every backbone and label set",
          _judge_arch(p.VGG, "vgg", False),
          _both(lambda ev: _run_figures(ev, p.VGG, ("distance_heatmaps.png", "accuracy_bars.png")),
                _ours("structure_by_run.png"))),
    Claim("fine_cifar10",
          "Fine CIFAR-10: the original classes stay visible when each is split in two labels",
          "Sec. 4 (Fine CIFAR-10, eq. 5)",
          "at the last saved epoch, mean D between labels of different classes / mean D "
          "between the two labels of one class > 1",
          "the network is never told which labels share a class; if their features are "
          "closer than the rest, they reflect the original classes",
          _judge_fine, lambda ev: _run_figures(ev, p.FINE, ("distance_heatmaps.png",
                                                            "tsne_superclasses.png"))),
    Claim("random_coarse",
          "Random coarse labels do not show the structure",
          "App. F",
          f"the structure test fails on the random-coarse run ({_STRUCTURE})",
          "one definition of 'structure' for every backbone and label set",
          _judge_random, _both(lambda ev: _run_figures(ev, p.RANDOM, ("distance_heatmaps.png",
                                                                      "accuracy_bars.png")),
                               _ours("structure_by_run.png"))),
    Claim("cifar100",
          "CIFAR-100 (coarse y mod 20 and the official superclasses) shows the structure",
          "Sec. 4 / appendix CIFAR-100 experiments",
          f"{_STRUCTURE}, on both CIFAR-100 runs (5 classes per label)",
          "one definition of 'structure' for every backbone and label set",
          _judge_cifar100, _both(lambda ev: _run_figures(ev, p.CIFAR100_COARSE,
                                                         ("distance_heatmaps.png",)),
                                 lambda ev: _run_figures(ev, p.CIFAR100_SUPER,
                                                         ("distance_heatmaps.png",)),
                                 _ours("structure_by_run.png"))),
    Claim("weight_decay_0",
          "Without weight decay the structure is still there",
          "App. A (the wd = 0 runs)",
          f"{_STRUCTURE}, on the grid point (main lr, wd 0)",
          "if weight decay alone made the classes separate, wd 0 would lose the structure",
          _judge_wd0, lambda ev: _run_figures(ev, p.GRID, ("distance_heatmaps.png",
                                                           "accuracy_bars.png"),
                                              (ev.main_lr, 0.0))),
    Claim("lr_wd_grid",
          "The structure is found across the lr x weight-decay grid",
          "Figs. 24-27 (D per grid point), Fig. 31 (CLP / LPO per grid point)",
          f"{_STRUCTURE}, at >= {GRID_FRACTION:.0%} of the grid points that did not diverge",
          "a finding that held at one setting only would not be a property of training",
          _judge_grid, lambda ev: [f for f in (ev.figure(p.GRID, "figures/grid_clp_lpo.png"),
                                               ev.figure(p.GRID, "figures/grid_distance_heatmaps.png"))
                                   if f]),
    Claim("gm_sigma2",
          "Gaussian mixtures: MSDR of the hidden layer rises with sigma^2",
          "App. B, Figs. 18-20",
          f"rank correlation of MSDR with sigma^2 >= {RISING_RANK} on every line of Fig. 18",
          "a rising curve ranks its points in sigma^2 order",
          _judge_sigma2, _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_input",
          "Gaussian mixtures: MSDR rises with the input dimension",
          "App. B, Fig. 18",
          f"rank correlation of d_input with its line's mean log MSDR at sigma^2 >= "
          f"{LARGE_SIGMA2:g} >= {RISING_RANK}",
          "the lines part at large sigma^2; a rising trend orders them by d_input",
          _judge_width(p.GM_D_INPUT, "d_input"), _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_hidden",
          "Gaussian mixtures: MSDR rises with the hidden width",
          "App. B, Fig. 19",
          f"rank correlation of d_hidden with its line's mean log MSDR at sigma^2 >= "
          f"{LARGE_SIGMA2:g} >= {RISING_RANK}",
          "the lines part at large sigma^2; a rising trend orders them by d_hidden",
          _judge_width(p.GM_D_HIDDEN, "d_hidden"), _gm_figure(p.GM_D_HIDDEN, "d_hidden")),
    Claim("gm_weight_decay",
          "Gaussian mixtures: MSDR is flat in the weight decay",
          "App. B, Fig. 20",
          f"geometric-mean MSDR at sigma^2 >= {LARGE_SIGMA2:g} differs by at most "
          f"{FLAT_RATIO}x across weight decays",
          "flat = no weight decay moves the lines by more than a quarter",
          _judge_weight_decay, _gm_figure(p.GM_WEIGHT_DECAY, "weight_decay")),
    Claim("gm_similar_subclasses",
          "Gaussian mixtures: similar subclasses have MSDR near 1 at small tau^2",
          "App. B.1, Fig. 21",
          f"at the smallest tau^2, MSDR of the similar subclasses <= 1 + {NEAR_ONE} and below "
          "the dissimilar ones",
          "at tau^2 = 0 the two clusters of a similar superclass share their mean: nothing can "
          "separate them",
          _judge_tau2, _gm_figure(p.GM_TAU2, "tau2")),
)


def judge(claim: Claim, ev: Evidence) -> Outcome:
    """The claim's outcome; "not run" with the reason when its evidence is missing."""
    try:
        outcome = claim.judge(ev)
    except NotRun as e:
        outcome = Outcome(NOT_RUN, str(e))
    outcome.figures = claim.figures(ev)
    return outcome
