"""``python -m ncfine_jax.analyze FEATURES [FEATURES ...] --out DIR``: the paper's analysis
of any network's saved features.

FEATURES are ``.npz`` files (one per epoch or checkpoint), ``.npy`` files named
``<prefix><key>.npy`` (the files sharing a prefix form one set), or folders of either;
see ``ncfine_jax.analysis.inputs`` for the keys. The label structure comes from
``--label-mapping`` (a ``label_mapping.json``), ``--num-coarse C~`` (labels = class mod
C~), or the files' own ``train_labels``/``train_classes`` pairs. Writes
``DIR/results.json``, ``DIR/report.md``, ``DIR/distance_matrices.npz`` and
``DIR/figures/*.png``; bad input gives one ``error:`` line, exit status 2, and writes
nothing. DIR is locked as a training workdir is (a second command into it is refused
with the holder's PID) and its ``manifest.json`` records the outputs; outputs of the same
names that no manifest lists (a user's own, or an analysis written before manifests) are
never replaced.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ncfine_jax import console, workdir as wdir
from ncfine_jax.analysis.inputs import open_feature_sources
from ncfine_jax.analysis.options import (MIN_TSNE_POINTS, REDUCTIONS, AnalysisOptions,
                                         SignificanceOptions)
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import ConfigError, DataError, WorkdirError
from ncfine_jax.experiment.config import check_int_range, check_nonempty
from ncfine_jax.logs import add_verbose_flag
from ncfine_jax.metrics.registry import EPOCH_METRICS
from ncfine_jax.settings import INT32_MAX, SEED_MAX
from ncfine_jax.text import number


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ncfine_jax.analyze",
        usage="python -m ncfine_jax.analyze FEATURES [FEATURES ...] --out DIR [options]",
        description="The paper's analysis (CLP, LPO, NC1-NC4, D, MSDR, the fine-structure "
                    "test, figures, report) of any network's saved features.")
    a = parser.add_argument
    a("features", nargs="+", metavar="FEATURES",
      help=".npz / .npy files or folders; several = several epochs or checkpoints")
    a("--out", required=True, metavar="DIR",
      help="output folder (results.json, report.md, figures/)")
    labels = parser.add_argument_group(
        "labels and epochs", "how the training labels relate to the original classes "
        "(default: read from the files' train_labels / train_classes pairs)")
    which = labels.add_mutually_exclusive_group()
    which.add_argument("--num-coarse", type=int, default=None, metavar="C",
                       help="training labels are class mod C (train_labels may then be absent)")
    which.add_argument("--label-mapping", default=None, metavar="FILE",
                       help="label_mapping.json of the training labels (as every run writes)")
    labels.add_argument("--epochs", type=int, nargs="+", default=None, metavar="EPOCH",
                        help="epoch (or checkpoint) number of each feature set, in the order "
                             "given (default: the files' epoch arrays, else 1, 2, ...)")
    labels.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                        help="names of the original classes, or one text file with one name "
                             "per line (default: class indices)")
    analysis = parser.add_argument_group("analysis")
    b = analysis.add_argument
    b("--clp-reduce", choices=REDUCTIONS, default="tsne",
      help="reduction before KMeans inside each training label (default: tsne, as the paper)")
    b("--clp-max-tsne-points", type=int, default=None, metavar="N",
      help="t-SNE on at most N points per label, the rest joined by their 10 nearest "
           "neighbours (default: every point)")
    b("--tsne-backend", choices=("opentsne", "sklearn"), default=None,
      help="t-SNE library (default: openTSNE when installed, else scikit-learn)")
    b("--probe-solver", choices=("jax", "sklearn"), default="jax",
      help="linear-probe solver for CLP and LPO: jax (optax L-BFGS) or sklearn (float64 "
           "reference) (default: jax)")
    b("--seed", type=int, default=0,
      help="seeds t-SNE, KMeans, PCA, subsampling and the permutations (default: 0)")
    b("--chunk-rows", type=int, default=None, metavar="N",
      help="rows per chunk of the streamed NC metrics (default: about 8M values per chunk)")
    b("--no-figures", action="store_true", help="write results.json, report.md and D only")
    test = parser.add_argument_group("fine-structure test")
    c = test.add_argument
    c("--alpha", type=float, default=SignificanceOptions.alpha,
      help=f"level of the verdict (default: {SignificanceOptions.alpha:g})")
    c("--permutations", type=int, default=SignificanceOptions.permutations, metavar="N",
      help=f"permutation-null draws (default: {SignificanceOptions.permutations})")
    c("--bootstrap", type=int, default=SignificanceOptions.bootstrap, metavar="N",
      help=f"bootstrap resamples of the 95%% intervals, 0 for none (default: "
           f"{SignificanceOptions.bootstrap})")
    c("--no-significance", action="store_true",
      help="skip the test (needed when a label holds a single class)")
    add_verbose_flag(parser)
    return parser


def _class_names(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    if len(values) == 1 and Path(values[0]).is_file():
        try:
            names = [line.strip() for line in Path(values[0]).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"--class-names {values[0]}: unreadable ({e})") from None
        return [n for n in names if n]
    return list(values)


def _epochs(sources, given: Sequence[int] | None) -> list[int]:
    if given is not None:
        if len(given) != len(sources):
            raise ConfigError(f"--epochs: {len(given)} epochs for {len(sources)} feature sets "
                              f"({', '.join(s.name for s in sources)})")
        if len(set(given)) != len(given):
            raise ConfigError(f"--epochs: {list(given)} are not distinct")
        return list(given)
    stored = [s.stored_epoch() for s in sources]
    if all(e is not None for e in stored) and len(set(stored)) == len(stored):
        return stored
    return list(range(1, len(sources) + 1))


def check_flags(args) -> None:
    """One ConfigError line naming the first bad flag: an integer out of range, an empty
    --out, or an --out that is a training workdir (its analysis files would be replaced)."""
    check_nonempty("--out", args.out)
    check_int_range("--num-coarse", args.num_coarse, 1, INT32_MAX)
    for epoch in args.epochs or ():
        check_int_range("--epochs", epoch, 0, INT32_MAX)
    check_int_range("--seed", args.seed, 0, SEED_MAX)
    check_int_range("--chunk-rows", args.chunk_rows, 1, INT32_MAX)
    check_int_range("--clp-max-tsne-points", args.clp_max_tsne_points, MIN_TSNE_POINTS,
                    INT32_MAX)
    out = Path(args.out)
    held = [n for n in (wdir.EXPERIMENT_FILE, wdir.CONFIG_FILE, wdir.LOG_FILE,
                        wdir.CHECKPOINT_DIR, wdir.GRID_FILE) if (out / n).exists()]
    if out.is_dir() and held:
        raise ConfigError(f"--out {out}: is a training workdir (holds {', '.join(held)}); "
                          "its results.json, report.md and figures would be replaced, so "
                          "choose another folder")


def check_out(out: Path) -> None:
    """WorkdirError when ``--out`` is in use by another command, or holds outputs of the
    analysis that its manifest does not list (they would be replaced)."""
    wdir.check_not_in_use(out, "--out")
    foreign = wdir.unrecorded(out, wdir.ANALYSIS_FILES)
    if foreign:
        raise WorkdirError(
            f"--out {out}: holds {', '.join(foreign)}, which no {wdir.MANIFEST_FILE} records "
            "as this project's (your own files, or an analysis written by an older version); "
            f"nothing was changed; adopt them with `{wdir.ADOPT_COMMAND} {out}` if they are an "
            "analysis, or pick another --out")


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    check_flags(args)
    # The analysis (jax, scikit-learn) only once the flags are good: --help stays fast.
    from ncfine_jax.analysis.pipeline import analyze, write_analysis
    options = SignificanceOptions(alpha=args.alpha, permutations=args.permutations,
                                  bootstrap=args.bootstrap, seed=args.seed).validate()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if args.label_mapping is not None and not Path(args.label_mapping).is_file():
        raise ConfigError(f"--label-mapping {args.label_mapping}: file not found")
    console.enable()
    sources = open_feature_sources(args.features)
    epochs = _epochs(sources, args.epochs)
    names = ", ".join(s.name for s in sources)
    analysis = AnalysisOptions(
        reduce=args.clp_reduce, seed=args.seed, max_tsne_points=args.clp_max_tsne_points,
        tsne_backend=args.tsne_backend, probe_kwargs={"solver": args.probe_solver},
        make_figures=not args.no_figures, chunk_rows=args.chunk_rows,
        significance=False if args.no_significance else options)
    check_out(out)  # before the analysis runs: a folder in use or holding others' files
    class_names = _class_names(args.class_names)
    done = analyze(dict(zip(epochs, sources)), args.label_mapping, analysis.validate(),
                   num_coarse=args.num_coarse, class_names=class_names,
                   source=names if len(sources) <= 3 else
                   f"{len(sources)} feature sets ({sources[0].name} ... {sources[-1].name})")
    with wdir.lock(out, flag="--out"):
        check_out(out)  # again, now that it is ours: another command may have written
        results = write_analysis(done, out, analysis, class_names=class_names)
    print(summary(results))
    print(f"{wdir.RunDir(out).results}, {wdir.RunDir(out).report}"
          + (f", {len(results['figures'])} figures in {wdir.RunDir(out).figures}"
             if results["figures"] else ""))
    return results


def summary(results: dict) -> str:
    """A few lines of the headline numbers."""
    def fmt(v):
        return number(v, ".4g")

    last = results["analysis"]["epoch"]
    lines = [f"CLP {fmt(results['clp_accuracy'])}  LPO {fmt(results['lpo_accuracy'])}  "
             f"ARI {fmt(results['ari'])}  NMI {fmt(results['nmi'])}  (epoch {last})"]
    for e in results["analysis"]["inputs"]:
        lines.append(f"epoch {e}: " + "  ".join(f"{m.title} {fmt(results[k].get(e))}"
                                                for k, m in EPOCH_METRICS.items()))
    fs = results.get("fine_structure")
    if fs and fs["verdict"] is not None:
        lines.append(f"fine structure: {fs['verdict']} at alpha {fs['alpha']:g} (p = {fmt(fs['p_value'])}; "
                     f"MSDR {fmt(fs['msdr'])}, null 99th pct {fmt(fs['msdr_null_p99'])})")
    for s in results["skipped"]:
        lines.append(f"skipped: {s['step']}: {s['reason']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))
