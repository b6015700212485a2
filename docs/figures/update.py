"""Redraw the figures the documentation shows, with the commands the pages name.

``docs/figures/sources.json`` maps each figure (a path in the repository) to the command
that produces it (as a page names it, in a bash block), the file that command writes, and
the commands that must run before it. This script runs each command once, in order, from
the repository root, then copies every output over its figure.

  python docs/figures/update.py [--only SUBSTRING ...] [--runs DIR] [--cifar10 PATH] [--dry-run]

``--runs DIR`` stands for the ``runs/`` folder the commands write to (e.g. a folder that
already holds finished runs, which then resume at once); ``--cifar10 PATH`` replaces the
data name ``cifar10`` in the commands by an archive or class-folder set on disk.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = Path(__file__).with_name("sources.json")


def rewrite(words: list[str], runs: str | None, cifar10: str | None) -> list[str]:
    """The command with ``runs/`` moved to ``runs`` and the data name cifar10 replaced."""
    out = []
    for i, w in enumerate(words):
        if runs and (w == "runs" or w.startswith("runs/")):
            w = runs + w[len("runs"):]
        if cifar10 and w == "cifar10" and i and words[i - 1] in ("--data", "--cifar10"):
            w = cifar10
        out.append(w)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, metavar="SUBSTRING",
                   help="only the figures whose path contains one of these")
    p.add_argument("--runs", default=None, metavar="DIR", help="folder standing for runs/")
    p.add_argument("--cifar10", default=None, metavar="PATH",
                   help="CIFAR-10 archive or class-folder set for the data name cifar10")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    sources = json.loads(SOURCES.read_text())
    chosen = {f: s for f, s in sources.items()
              if args.only is None or any(o in f for o in args.only)}
    done: set[str] = set()
    for figure, source in chosen.items():
        for command in [*source.get("after", []), source["command"]]:
            if command in done:
                continue
            done.add(command)
            words = rewrite(shlex.split(command), args.runs, args.cifar10)
            if words[0] == "python":
                words[0] = sys.executable
            print("$", shlex.join(words), flush=True)
            if not args.dry_run:
                subprocess.run(words, cwd=REPO, check=True)
        output = REPO / rewrite([source["output"]], args.runs, None)[0]
        if output.resolve() == (REPO / figure).resolve():
            continue  # the command writes the figure in place (e.g. a --replot)
        print(f"  {output} -> {figure}")
        if not args.dry_run:
            shutil.copyfile(output, REPO / figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
