"""The claims of the paper that the plan checks: each one's text, source, criterion,
reason, judge and figures, in one table (``CLAIMS``), and ``judge``."""

from __future__ import annotations

from ncfine_jax import workdir as w
from ncfine_jax.analysis.regime import COLLAPSE_FACTOR, EARLY_ACCURACY, TERMINAL_ACCURACY
from ncfine_jax.paper import figures as pf
from ncfine_jax.paper import plan as p
from ncfine_jax.paper.claims import cifar as c
from ncfine_jax.paper.claims import gaussian as g
from ncfine_jax.paper.claims.verdicts import (ABOVE_CHANCE, CLOSE, CLP_MARGIN, FINE_MARGIN,
                                              FLAT_RATIO, GRID_FRACTION, LARGE_SIGMA2,
                                              LINES_PERMUTATIONS, MSDR_MIN_EXCESS, NOT_RUN,
                                              Claim, Outcome)
from ncfine_jax.paper.evidence import Evidence, NotRun
from ncfine_jax.workdir import FIGURES_DIR


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
        for get in getters:
            out += [f for f in get(ev) if f not in out]
        return out
    return figures


def _gm_figure(name: str, vary: str):
    def figures(ev: Evidence) -> list[str]:
        return [f for f in (ev.figure(n, pf.study_figure(vary))
                            for n in (name, p.pytorch_variant(name))) if f]
    return figures


_STRUCTURE = (f"structure = MSDR and the cluster accuracy inside the labels beyond their "
              f"permutation nulls (the larger p <= alpha), with 95% intervals of the excess "
              f"over the null medians above {MSDR_MIN_EXCESS:g} (MSDR) and "
              f"{ABOVE_CHANCE:.2f} (clusters), at the last saved epoch")
_TERMINAL = (f"judged only in the terminal phase (training accuracy >= {TERMINAL_ACCURACY:g}, "
             f"NC1 >= {COLLAPSE_FACTOR:g}x below its peak)")
_NULL = ("null: the original classes of the samples shuffled inside each label, labels and "
         "counts kept")
_SEEDS = "95% t-intervals over seeds, paired by seed"

CLAIMS: tuple[Claim, ...] = (
    Claim("msdr_above_1",
          "Features of one coarse label keep its original classes apart (MSDR, App. B)",
          "Sec. 4, D heatmaps (Figs. 5-6); MSDR as defined in App. B",
          f"main run: MSDR p-value <= alpha, and the 95% interval of MSDR - its null median "
          f"above {MSDR_MIN_EXCESS:g}; {_TERMINAL}",
          f"MSDR >= 1 for any features with two classes per label: only MSDR beyond its "
          f"permutation null is evidence ({_NULL})",
          c.judge_msdr, _both(_main_figures(w.HEATMAPS_FIGURE), _ours(pf.NC1_MSDR_FIGURE))),
    Claim("clusters_find_classes",
          "Clustering inside each coarse label recovers the original classes",
          "Sec. 4.3 (CLP step 1); t-SNE per label (Figs. 7-8)",
          f"main run: cluster accuracy p-value <= alpha, and the 95% interval of its excess "
          f"over the null median above {ABOVE_CHANCE:.2f}; {_TERMINAL}",
          f"the best cluster-to-class mapping lifts even random clusters above 1 / classes "
          f"per label; the clusters are kept and the classes shuffled ({_NULL})",
          c.judge_clusters, _both(_main_figures(w.TSNE_FIGURE, w.ACCURACY_FIGURE),
                                  _ours(pf.STRUCTURE_FIGURE))),
    Claim("clp_close_to_lpo",
          "CLP is close to LPO (paper: 93% CLP for ResNet-18 on Coarse CIFAR-10)",
          "Sec. 4.3, Figs. 11-12",
          f"main run: train-mapped CLP beyond its null (p <= alpha; interval of the excess "
          f"above {CLP_MARGIN:.2f}) and the paired 95% interval of CLP - LPO above "
          f"-{CLOSE:.2f}; {_TERMINAL}",
          "features carrying only the coarse label give CLP near half the coarse accuracy, "
          "and so does LPO; the test-chosen mapping flatters CLP, the train-chosen one is "
          "honest",
          c.judge_lpo, _main_figures(w.ACCURACY_FIGURE)),
    Claim("clp_close_to_ot",
          "CLP is close to OT, a network trained on the original labels",
          "Sec. 4.3, Figs. 11-12",
          f"train-mapped CLP of the main run beyond its null, and the 95% interval of CLP - "
          f"OT test accuracy above -{CLOSE:.2f}; both runs in the terminal phase",
          "the coarse-trained features lose little of what training on the classes gives",
          c.judge_ot, _main_figures(w.ACCURACY_FIGURE)),
    Claim("diagonal_before_lines",
          "In D, the diagonal appears before the within-superclass lines",
          "Sec. 4, D heatmaps over epochs (Figs. 5-6)",
          f"main run, at the first saved epoch with training accuracy >= {EARLY_ACCURACY:g}: "
          "the diagonal contrast (mean D between classes / mean D within a class) exceeds the "
          "line contrast (mean D across labels / mean D between the classes of one label); "
          "then the line contrast's excess over its null (classes regrouped at random) grows "
          "to the last saved epoch (95% interval of the increase above 0)",
          "before the labels are learned D shows the inputs' classes (the diagonal); the "
          "lines are what training on the coarse labels adds, beyond any grouping of classes",
          c.judge_diagonal_first, _both(_main_figures(w.HEATMAPS_FIGURE),
                                        _ours(pf.D_CONTRAST_FIGURE))),
    Claim("nc1_falls_msdr_stays",
          "The features collapse (NC1, NC2 fall) while the classes inside a label stay apart",
          "Sec. 4, NC1/NC2 curves (Fig. 3)",
          f"main run with training accuracy >= {TERMINAL_ACCURACY:g}: NC1 peak / last > "
          f"{COLLAPSE_FACTOR:g}, NC2 last < first, and MSDR significant (p <= alpha) at every "
          f"saved epoch from the first with training accuracy >= {EARLY_ACCURACY:g}",
          "collapse on the training labels progresses, yet the classes inside a label never "
          "merge to their null",
          c.judge_nc1_falls, _both(_main_figures(w.NC_CURVES_FIGURE),
                                   _ours(pf.NC1_MSDR_FIGURE))),
    Claim("long_training",
          "The structure survives very long training (the 1,000-epoch run)",
          "the paper's 1,000-epoch run (config #2: lr 0.01, wd 5e-5)",
          f"{_STRUCTURE}, on the long run; {_TERMINAL}",
          "if training long enough erased the structure, MSDR and the clusters would fall "
          "to their nulls",
          c.structure_claim(p.LONG),
          _both(lambda ev: _run_figures(ev, p.LONG, (w.NC_CURVES_FIGURE, w.HEATMAPS_FIGURE)),
                _ours(pf.NC1_MSDR_FIGURE))),
    Claim("resnet18",
          "ResNet-18 shows the structure",
          "Sec. 4 (main run); App. G/H compare backbones",
          f"{_STRUCTURE}, on the main run, trained with ResNet-18; {_TERMINAL}",
          "one definition of 'structure' for every backbone and label set",
          c.structure_claim(p.GRID, c.main_point, "resnet18"), _ours(pf.STRUCTURE_FIGURE)),
    Claim("densenet121",
          "DenseNet-121 shows the structure",
          "App. G",
          f"{_STRUCTURE}, on the DenseNet-121 run; {_TERMINAL}",
          "one definition of 'structure' for every backbone and label set",
          c.structure_claim(p.DENSENET, arch="densenet121"),
          _both(lambda ev: _run_figures(ev, p.DENSENET, (w.HEATMAPS_FIGURE,
                                                          w.ACCURACY_FIGURE)),
                _ours(pf.STRUCTURE_FIGURE))),
    Claim("vgg_lacks_structure",
          "VGG: the within-superclass lines of D appear together with the diagonal, not "
          "after it as for ResNet",
          "App. H",
          f"at the first saved epoch with training accuracy >= {EARLY_ACCURACY:g}, VGG's "
          "line contrast's excess over its null (classes regrouped at random) exceeds "
          "ResNet-18's (main run, same scale): 95% interval of the difference above 0",
          "App. H is about when the D pattern appears; a static structure test cannot "
          "tell the two backbones apart",
          c.judge_vgg,
          _both(lambda ev: _run_figures(ev, p.VGG, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE)),
                _ours(pf.D_CONTRAST_FIGURE))),
    Claim("fine_cifar10",
          "Fine CIFAR-10: the original classes stay visible when each is split in two labels",
          "Sec. 4 (Fine CIFAR-10, eq. 5)",
          f"at the first saved epoch with training accuracy >= {EARLY_ACCURACY:g} and at the "
          f"last: mean D between labels of different classes / mean D between the two labels "
          f"of one class beyond its null (labels regrouped at random, {LINES_PERMUTATIONS} "
          f"permutations; p <= alpha) with its excess over the null median above "
          f"{FINE_MARGIN:g}; in the terminal phase",
          "the network is never told which labels share a class; if their features are "
          "closer than random pairs of labels, they reflect the original classes",
          c.judge_fine, lambda ev: _run_figures(ev, p.FINE, (w.HEATMAPS_FIGURE,
                                                             w.TSNE_FIGURE))),
    Claim("random_coarse",
          "Random coarse labels (classes shuffled, then merged) show the same structure",
          "App. F",
          f"{_STRUCTURE}, on the random-coarse run; {_TERMINAL}",
          "App. F: 'the same observations in Section 4 can still be made' with the classes "
          "merged at random",
          c.structure_claim(p.RANDOM), _both(lambda ev: _run_figures(
              ev, p.RANDOM, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE)),
              _ours(pf.STRUCTURE_FIGURE))),
    Claim("cifar100",
          "CIFAR-100: y mod 20 shows the structure; the official superclasses only partly",
          "Sec. 4 / 5, CIFAR-100 experiments",
          f"{_STRUCTURE} on y mod 20; on the superclasses MSDR significant and the cluster "
          "effect smaller than on y mod 20 (interval of the difference above 0; the least "
          "separated superclasses named); both in the terminal phase",
          "Sec. 5: semantically similar classes share an official superclass, so their "
          "features are harder to separate than arbitrary groups",
          c.judge_cifar100, _both(lambda ev: _run_figures(ev, p.CIFAR100_COARSE,
                                                          (w.HEATMAPS_FIGURE,)),
                                  lambda ev: _run_figures(ev, p.CIFAR100_SUPER,
                                                          (w.HEATMAPS_FIGURE,)),
                                  _ours(pf.STRUCTURE_FIGURE))),
    Claim("weight_decay_0",
          "Without weight decay the structure is still there",
          "App. A (the wd = 0 runs)",
          f"{_STRUCTURE}, on the grid point (main lr, wd 0); {_TERMINAL}",
          "if weight decay alone made the classes separate, wd 0 would lose the structure",
          c.structure_claim(p.GRID, lambda ev: (ev.main_lr, 0.0)),
          lambda ev: _run_figures(ev, p.GRID, (w.HEATMAPS_FIGURE, w.ACCURACY_FIGURE),
                                  (ev.main_lr, 0.0))),
    Claim("lr_wd_grid",
          "The structure is found across the lr x weight-decay grid",
          "Figs. 24-27 (D per grid point), Fig. 31 (CLP / LPO per grid point)",
          f"{_STRUCTURE} (alpha divided by the points), at >= {GRID_FRACTION:.0%} of the grid "
          "points in the terminal phase (points outside it are listed, not judged)",
          "a finding that held at one setting only would not be a property of training",
          c.judge_grid, lambda ev: [f for f in (
              ev.figure(p.GRID, f"{FIGURES_DIR}/{w.GRID_BARS_FIGURE}"),
              ev.figure(p.GRID, f"{FIGURES_DIR}/{w.GRID_HEATMAPS_FIGURE}")) if f]),
    Claim("gm_sigma2",
          "Gaussian mixtures: MSDR of the hidden layer rises with sigma^2",
          "App. B, Figs. 18-20",
          f"on every line of Fig. 18, log MSDR at the largest sigma^2 minus at the smallest "
          f"above 0 ({_SEEDS}); under mup and PyTorch's defaults where the MLPs learned",
          "a rising curve ends above where it starts, beyond the seeds' spread",
          g.gm(g.judge_sigma2_one, p.GM_D_INPUT), _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_input",
          "Gaussian mixtures: MSDR rises with the input dimension",
          "App. B, Fig. 18",
          f"line level (mean log MSDR at sigma^2 >= {LARGE_SIGMA2:g}) of the largest d_input "
          f"minus the smallest's above 0 ({_SEEDS}); under both parameterisations where the "
          "MLPs learned",
          "the lines part at large sigma^2; a trend inside the seed noise is no trend",
          g.gm(g.judge_trend_one, p.GM_D_INPUT, "d_input", True),
          _gm_figure(p.GM_D_INPUT, "d_input")),
    Claim("gm_d_hidden",
          "Gaussian mixtures: MSDR rises with the hidden width",
          "App. B, Fig. 19",
          "as for d_input, with d_hidden; under both parameterisations where the MLPs learned",
          "the lines part at large sigma^2; a trend inside the seed noise is no trend",
          g.gm(g.judge_trend_one, p.GM_D_HIDDEN, "d_hidden", True),
          _gm_figure(p.GM_D_HIDDEN, "d_hidden")),
    Claim("gm_weight_decay",
          "Gaussian mixtures: MSDR is flat in the weight decay",
          "App. B, Fig. 20",
          f"every weight decay's line level within {FLAT_RATIO}x of the smallest weight "
          f"decay's: the 95% interval of the log ratio inside +-log {FLAT_RATIO} ({_SEEDS}; an "
          "equivalence test); under both parameterisations where the MLPs learned",
          "flat = no weight decay moves the lines by more than a quarter; a missing "
          "difference is not flatness unless its interval is narrow",
          g.gm(g.judge_trend_one, p.GM_WEIGHT_DECAY, "weight decay", False),
          _gm_figure(p.GM_WEIGHT_DECAY, "weight_decay")),
    Claim("gm_similar_subclasses",
          "Gaussian mixtures: similar subclasses separate as tau^2 grows",
          "App. B.1, Fig. 21",
          f"log MSDR of the similar subclasses at the largest tau^2 minus at the smallest "
          f"above 0, and below the dissimilar subclasses' at the smallest tau^2 ({_SEEDS}); "
          "under both parameterisations where the MLPs learned",
          "at tau^2 = 0 the two subclasses share one distribution, so MSDR near 1 there is "
          "true by construction: the evidence is the trend in tau^2",
          g.gm(g.judge_tau2_one, p.GM_TAU2), _gm_figure(p.GM_TAU2, "tau2")),
)


def judge(claim: Claim, ev: Evidence) -> Outcome:
    """The claim's outcome; "not run" with the reason when its evidence is missing."""
    try:
        outcome = claim.judge(ev)
    except NotRun as e:
        outcome = Outcome(NOT_RUN, str(e))
    outcome.figures = claim.figures(ev)
    return outcome
