"""``python -m ncfine_jax.adopt DIR``: make a workdir written without a manifest (by an
older version of ncfine_jax) a run of this project again.

It writes ``DIR/manifest.json`` listing, with their sizes and checksums, the files this
project writes that are present: those of a run (``experiment.json``), of a grid
(``grid.json``, and each of its point folders), of a paper plan (``paper.json``, and each of
its runs, grids and Gaussian-mixture sweeps), of the training engine alone
(``config.json``) or of an analysis (``python -m ncfine_jax.analyze --out DIR``: its
``results.json``, ``report.md``, distance matrices and figures); the files of a folder
that is a link to another disk (``workdir.LINKABLE_DIRS``) too. A damaged manifest is
rebuilt the same way. Nothing else is changed; the files then resume, verify and
``--overwrite`` like those of a new run. Only adopt a folder whose files you trust: they
are taken as written by this project.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ncfine_jax import manifest, workdir as wdir
from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.errors import WorkdirError

# A Gaussian-mixture sweep's folder: its results.json (which holds a "study") and figure.
_STUDY_FILES = (wdir.RESULTS_FILE,)
_STUDY_FIGURE_PREFIX = "gaussian_mixture_"


def _paper_files() -> tuple[str, ...]:
    return (wdir.PAPER_FILE, wdir.PAPER_STATUS_FILE, wdir.PAPER_REPORT_JSON, wdir.PAPER_REPORT_MD,
            wdir.CALIBRATION_FILE,
            wdir.FIGURES_DIR)


def _is_study(root: Path) -> bool:
    try:
        data = wdir.read_json_file(wdir.RunDir(root).results, "results")
    except WorkdirError:
        return False
    return isinstance(data, dict) and isinstance(data.get("study"), dict)


def _is_analysis(root: Path) -> bool:
    """Whether ``root`` holds the results.json of ``python -m ncfine_jax.analyze``."""
    try:
        data = wdir.read_json_file(wdir.RunDir(root).results, "results")
    except WorkdirError:
        return False
    return isinstance(data, dict) and isinstance(data.get("analysis"), dict)


def adopt_tree(root: Path) -> list[tuple[Path, str, int]]:
    """Adopt ``root`` and the runs it holds; returns (folder, kind, files recorded) each.

    Raises:
      WorkdirError: ``root`` holds no header of this project (nothing is written then).
    """
    root = Path(root)
    if wdir.RunDir(root).experiment.is_file():
        kind, names, children = "run", wdir.RUN_FILES, []
    elif wdir.GridDir(root).record.is_file():
        record = wdir.read_json_file(wdir.GridDir(root).record, "grid", {"points": list})
        kind, names = "grid", wdir.GRID_FILES
        children = [p.get("workdir") for p in record.get("points", []) if isinstance(p, dict)]
    elif (root / _paper_files()[0]).is_file():
        kind, names = "paper plan", _paper_files()
        children = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                          and p.name != wdir.FIGURES_DIR)
    elif wdir.RunDir(root).results.is_file() and _is_study(root):
        kind, children = "Gaussian-mixture sweep", []
        names = _STUDY_FILES + tuple(sorted(p.name for p in root.iterdir()
                                            if p.name.startswith(_STUDY_FIGURE_PREFIX)))
    elif wdir.RunDir(root).config.is_file():
        kind, names, children = "training workdir", wdir.ENGINE_FILES, []
    elif wdir.RunDir(root).results.is_file() and _is_analysis(root):
        kind, names, children = "analysis", wdir.ANALYSIS_FILES, []
    else:
        raise WorkdirError(f"{root}: holds no {wdir.EXPERIMENT_FILE}, {wdir.GRID_FILE}, "
                           f"{_paper_files()[0]}, {wdir.CONFIG_FILE} or analysis "
                           f"{wdir.RESULTS_FILE}: not a workdir of this project; nothing was "
                           "changed")
    done = []
    with wdir.lock(root, flag=str(root)):
        for name in children:
            sub = wdir.point_folder(root, name)
            if sub is not None and sub.is_dir():
                try:
                    done += adopt_tree(sub)
                except WorkdirError:
                    if kind == "grid":
                        raise
        done.append((root, kind, manifest.adopt(root, names, linked=wdir.LINKABLE_DIRS)))
    return done


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ncfine_jax.adopt",
                            description="Make a folder written without a manifest (by an older "
                                        "version of ncfine_jax) a run of this project again: "
                                        "record the project's files found there, with their "
                                        "checksums, in DIR/manifest.json; nothing else changes.")
    parser.add_argument("workdir", metavar="DIR", help="a run, grid or paper-plan folder")
    return parser


def main(argv: Sequence[str] | None = None) -> list:
    args = build_parser().parse_args(argv)
    root = Path(args.workdir)
    if not root.is_dir():
        raise WorkdirError(f"{root}: not a directory")
    done = adopt_tree(root)
    for folder, kind, count in done:
        print(f"{folder}: adopted as a {kind} ({count} files in {manifest.MANIFEST_FILE})")
    return done


if __name__ == "__main__":
    sys.exit(run_main(main))
