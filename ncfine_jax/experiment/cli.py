"""The command line of every experiment script and of ``experiments/grid.py``.

The flags come from the settings' declarations (``config.add_config_flags``) plus the
command's own (``add_run_flags``), in the --help sections of ``settings.FLAG_GROUPS``. This
module and everything it imports are plain Python: ``--help`` and a bad flag answer before
jax, flax or scikit-learn load. Once the flags have parsed, ``main`` / ``grid_main`` import
the run layer (the one place where the project imports itself inside a function, for that
reason).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ncfine_jax.cli import ArgumentParser, flag_groups
from ncfine_jax.distributed import add_distributed_flags
from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment.config import add_config_flags
from ncfine_jax.experiment.registry import EXPERIMENTS, PAPER_LRS, PAPER_WDS, ExperimentSpec
from ncfine_jax.logs import add_verbose_flag
from ncfine_jax.train.layout import MODES, parse_mesh


def add_run_flags(parser, *, workdir_help: str | None = None, workdir_required: bool = False
                  ) -> None:
    """Flags of a command that are not part of the experiment config: where it reads and
    writes, and how it runs (device mesh, processes)."""
    groups = flag_groups(parser)
    groups["data and labels"].add_argument(
        "--data-dir", type=_folder, default=None, metavar="DIR",
        help="folder holding dataset archives, searched for --data NAME (default: "
             "$NCFINE_DATA_DIR, then the download cache)")
    run = groups["run and workdir"].add_argument
    run("--workdir", type=_folder, default=None, required=workdir_required, metavar="DIR",
        help=workdir_help or "output folder (default: runs/EXPERIMENT/lrLR_wdWD_seedS, plus the "
                             "settings that differ from the experiment's defaults and a hash "
                             "of them: each config its own folder; the same command resumes)")
    run("--overwrite", action="store_true", help="start afresh in a workdir holding a run (of "
        "any config, in any state): removes exactly the files its manifest.json lists; a "
        "folder holding no run is never emptied")
    run("--no-progress", action="store_true",
        help="one line per epoch instead of a progress bar (for logs of batch jobs)")
    run("--no-analysis", action="store_true",
        help="train only (e.g. on a cluster); the same command without it analyses the run")
    add_verbose_flag(groups["run and workdir"])
    groups["analysis"].add_argument(
        "--ot-workdir", type=_folder, default=None, metavar="DIR",
        help="workdir of a finished original-label (OT) run on the same data, for the "
             "CLP/LPO/OT bars")
    multi = groups["multi-process"]
    multi.add_argument("--mesh", type=_mesh_layout, default=None, metavar="MxD",
                       help="device layout: M model rows x D data devices over every device "
                            "of every process (default: a single run 1xD; a grid as many "
                            "model rows as divide the points and the devices)")
    add_distributed_flags(multi)


def _folder(text: str) -> str:
    # An empty --workdir / --ot-workdir / --data-dir would silently mean the current folder
    # (or the default one).
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (name a folder)")
    return text


def _mesh_layout(text: str) -> tuple[int, int]:
    return parse_mesh(text)


_mesh_layout.__name__ = "MxD"  # argparse names the expected form with it: "invalid MxD value"


def build_parser(spec: ExperimentSpec) -> ArgumentParser:
    """The parser of ``experiments/<spec.name>.py``."""
    parser = ArgumentParser(prog=f"{spec.name}.py", description=spec.description,
                            usage="%(prog)s [--data NAME|PATH] [--lr LR] [--epochs N] "
                                  "[--workdir DIR] [more options, by group, below]")
    add_config_flags(parser, spec.defaults)
    add_run_flags(parser)
    return parser


def main(spec: ExperimentSpec, argv: Sequence[str] | None = None) -> dict:
    """Entry point of every experiment script (wrapped by ``cli.run_main``)."""
    args = build_parser(spec).parse_args(argv)
    from ncfine_jax.experiment.run import run_from_args  # after parsing: see the docstring

    return run_from_args(spec, args)


def build_grid_parser(spec: ExperimentSpec) -> ArgumentParser:
    """``grid.py EXPERIMENT`` parser: the shared flags with ``spec``'s defaults, ``--lr`` /
    ``--wd`` taking several values, and the grid's own flags."""
    parser = ArgumentParser(
        prog="grid.py", usage="grid.py EXPERIMENT [--lr LR ...] [--wd WD ...] --workdir DIR "
                              "[flags of the experiment scripts] [grid flags]",
        description="Train the lr x wd grid of one experiment (one sub-workdir per point), "
                    "then write DIR/summary.json and the grid figures.")
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS), metavar="EXPERIMENT",
                        help="the experiment to run the grid of, first: "
                             + ", ".join(sorted(EXPERIMENTS)))
    defaults = spec.defaults.replace(lr=PAPER_LRS[0], weight_decay=PAPER_WDS[0])
    add_config_flags(parser, defaults, grid=True)
    parser.set_defaults(lr=list(PAPER_LRS), wd=list(PAPER_WDS))
    add_run_flags(parser, workdir_required=True,
                  workdir_help="grid folder; point (lr, wd) goes to DIR/lrLR_wdWD/")
    grid = parser.add_argument_group("grid")
    mode = grid.add_mutually_exclusive_group()
    mode.add_argument("--vectorize", dest="mode", action="store_const", const="vectorize",
                      help="train the models stacked and vmapped (chunked to fit memory)")
    mode.add_argument("--sequential", dest="mode", action="store_const", const="sequential",
                      help="one normal single run per grid point, one after the other")
    mode.add_argument("--grid-mode", dest="mode", choices=("auto",) + MODES,
                      help="auto = time a few steps of each mode on these devices, print the "
                           "timings and train the faster way; --vectorize and --sequential "
                           "are short for the other two (default: auto)")
    parser.set_defaults(mode="auto")
    grid.add_argument("--chunk-size", type=int, default=None, metavar="K",
                      help="vectorized: at most K models at once (default: as many as fit "
                           "in memory)")
    grid.add_argument("--heatmap-epochs", type=int, nargs="+", default=None, metavar="EPOCH",
                      help="epochs of the per-epoch grid heatmaps (default: every saved epoch)")
    return parser


def grid_main(argv: Sequence[str] | None = None) -> dict:
    """``experiments/grid.py`` (wrapped by ``cli.run_main``); returns the summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXPERIMENTS:
        spec = EXPERIMENTS[argv[0]]
    elif argv and argv[0] in ("-h", "--help"):
        spec = EXPERIMENTS["coarse_cifar10"]
    else:
        got = repr(argv[0]) if argv else "nothing"
        raise ConfigError(f"EXPERIMENT: the first argument must name an experiment "
                          f"({', '.join(sorted(EXPERIMENTS))}); got {got}")
    args = build_grid_parser(spec).parse_args(argv)
    from ncfine_jax.experiment.grid import run_grid_from_args  # after parsing: see above

    return run_grid_from_args(spec, args)
