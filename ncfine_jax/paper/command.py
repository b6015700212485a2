"""``experiments/paper.py``: the whole paper at one scale, resumable, ending in a report.

  python experiments/paper.py --scale {tiny,cpu,full} --workdir DIR [--cifar10 PATH]
      [--cifar100 PATH] [--only NAME ...] [--dry-run] [--no-progress] [--verbose]

``--dry-run`` prints every item (its runs, workdir and cost in training images, and for
``cpu`` the estimated hours) and writes nothing. Otherwise every selected item is run or
resumed in plan order, then ``DIR/paper_report.md`` / ``.json`` are written. Items that
failed are listed in one ``error:`` line at the end (exit status 2) after the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ncfine_jax import workdir as wdir
from ncfine_jax.cli import ArgumentParser
from ncfine_jax.errors import ConfigError, NcfineError
from ncfine_jax.logs import add_verbose_flag
from ncfine_jax.paper.plan import build_plan, get_scale, plan_table, select
from ncfine_jax.paper.scales import SCALES


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="paper.py", usage="paper.py --scale {tiny,cpu,full} --workdir DIR [options]",
        description="Run every experiment of the paper at one scale (resumable) and write "
                    "DIR/paper_report.md: each claim beside our measurement and a verdict.")
    a = parser.add_argument
    a("--scale", required=True, choices=tuple(SCALES),
      help="; ".join(f"{s.name}: {s.summary}" for s in SCALES.values())
      + " (--dry-run prints the scale's plan and cost)")
    a("--workdir", required=True, metavar="DIR",
      help="where every item's workdir and the report go (DIR/ITEM/)")
    data = parser.add_argument_group("data")
    data.add_argument("--cifar10", default="cifar10", metavar="PATH",
                      help="CIFAR-10: official archive or folder, a class-folder set (.tar.gz "
                           "or folder), or the name cifar10 (looked up in $NCFINE_DATA_DIR, "
                           "the cache, else downloaded) (default: cifar10)")
    data.add_argument("--cifar100", default=None, metavar="PATH",
                      help="CIFAR-100 archive or folder, or the name cifar100 (default: none; "
                           "the CIFAR-100 items are then skipped)")
    run = parser.add_argument_group("what to run")
    run.add_argument("--only", nargs="+", default=None, metavar="NAME",
                     help="run only these items (names as --dry-run prints them, comma- or "
                          "space-separated; gm = every Gaussian-mixture sweep); the report "
                          "still covers every claim (default: every item)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan and its cost; write nothing")
    run.add_argument("--calibrate", action="store_true",
                     help="instead of the plan: time 1- and 2-epoch runs of each backbone and "
                          "one Gaussian-mixture sweep in CPU seconds, write "
                          "DIR/calibration.json (used by the time estimate of --dry-run and "
                          "the progress lines)")
    run.add_argument("--no-progress", action="store_true",
                     help="one line per epoch inside runs instead of progress bars")
    add_verbose_flag(run)
    return parser


def _data_name(value: str | None, flag: str) -> str | None:
    """A path that exists, made absolute (workdirs record it); the names cifar10 and
    cifar100 stay names; anything else is one ConfigError line."""
    from ncfine_jax.paper.runner import DATASET_NAMES

    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{flag} {value!r}: empty")
    path = Path(value).expanduser()
    if path.exists():
        return str(path.resolve())
    if value.lower() in DATASET_NAMES:
        return value.lower()
    raise ConfigError(f"{flag} {value}: no such file or folder (give an official CIFAR "
                      "archive or folder, a class-folder set train/CLASS/*.png, "
                      f"test/CLASS/*.png, or the name {flag.lstrip('-')})")


def main(argv: Sequence[str] | None = None) -> dict:
    """Entry point of ``experiments/paper.py`` (wrapped by ``cli.run_main``); returns the
    report (or, with --dry-run, {"plan": text})."""
    args = build_parser().parse_args(argv)
    # The heavy part of the project only once the flags have parsed (fast --help).
    from ncfine_jax.paper.estimate import calibrate, estimator
    from ncfine_jax.paper.report import build_report
    from ncfine_jax.paper.runner import (DATA_FLAGS, claimed_root, data_source,
                                         dataset_not_given, header, run_plan)

    scale = get_scale(args.scale)
    cifar10 = _data_name(args.cifar10, "--cifar10")
    cifar100 = _data_name(args.cifar100, "--cifar100")
    only = None if args.only is None else [n for part in args.only for n in part.split(",") if n]
    if args.only is not None and not only:
        raise ConfigError("--only: no item named")
    plan = build_plan(scale, cifar10, cifar100 or "cifar100")
    selected = select(plan, only)
    root = Path(args.workdir).expanduser().resolve()
    estimate = estimator(scale.name, root)
    if args.dry_run and args.calibrate:
        raise ConfigError("--dry-run and --calibrate: choose one")
    if args.dry_run:
        data = {"cifar10": cifar10, "cifar100": cifar100}
        text = plan_table(selected, root, estimate, skipped=lambda item: None if item.dataset is None
                          else dataset_not_given(data[item.dataset], DATA_FLAGS[item.dataset]))
        print(f"scale {scale.name}: {scale.description}")
        used = {item.dataset for item in selected if item.dataset is not None}
        for dataset in sorted(used):
            line = data_source(dataset, data[dataset])
            if line is not None:
                print(f"data {line}")
        print(text)
        print("(dry run: nothing was written)")
        return {"plan": text}

    if args.calibrate:
        with claimed_root(root, header(scale.name, cifar10)):
            result = calibrate(selected, root, scale.name)
        print(plan_table(selected, root, estimator(scale.name, root)))
        return result

    print(f"scale {scale.name}: {len(selected)} of {len(plan)} items -> {root}", flush=True)
    report = {}

    def finish(statuses: dict) -> None:
        report.update(build_report(root, plan, statuses, scale))

    statuses = run_plan(plan, selected, root, scale.name,
                        {"cifar10": cifar10, "cifar100": cifar100},
                        progress=not args.no_progress, estimate=estimate, on_done=finish)
    for claim in report["claims"]:
        print(f"{claim['verdict']:>13}  {claim['key']}: {claim['measured']}")
    print(f"report: {root / wdir.PAPER_REPORT_MD}")
    failed = [n for n, s in statuses.items() if s.get("state") == "failed"
              and n in {i.name for i in selected}]
    if failed:
        raise NcfineError(f"{len(failed)} item(s) failed: {', '.join(failed)} (reasons in "
                          f"{root / wdir.PAPER_REPORT_MD}; the others ran)")
    return report
