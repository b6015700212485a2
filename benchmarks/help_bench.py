"""How long every command takes to answer ``--help``, in a fresh Python process each time.

  python benchmarks/help_bench.py [--repeats 5]

Prints one row per command (mean and spread of the wall time, and whether jax was imported
before the help was printed), then the Python start-up alone as the floor.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    *(["experiments/" + p.name] for p in sorted((REPO / "experiments").glob("*.py"))),
    ["-m", "ncfine_jax.analyze"], ["-m", "ncfine_jax.launch"], ["-m", "ncfine_jax.adopt"],
    ["-m", "ncfine_jax.data"],
]
# Prints whether jax was loaded by the time the command exited after --help.
_PROBE = ("import runpy, sys; sys.argv = [{target!r}, '--help']\n"
          "try:\n    runpy.{run}({target!r}, run_name='__main__')\n"
          "except SystemExit:\n    pass\n"
          "print('jax imported' if 'jax' in sys.modules else 'no jax', file=sys.stderr)")


def wall(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def imports_jax(command: list[str]) -> bool:
    run, target = (("run_module", command[1]) if command[0] == "-m"
                   else ("run_path", command[0]))
    out = subprocess.run([sys.executable, "-c", _PROBE.format(run=run, target=target)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return out.stderr.strip().endswith("jax imported")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args(argv)
    print(f"| command | --help wall s (mean ± std of {args.repeats}) | jax imported |")
    print("|---|---|---|")
    for command in COMMANDS:
        times = [wall([*command, "--help"]) for _ in range(args.repeats)]
        print(f"| {' '.join(command)} | {statistics.mean(times):.2f} ± "
              f"{statistics.stdev(times) if len(times) > 1 else 0.0:.2f} | "
              f"{'yes' if imports_jax(command) else 'no'} |", flush=True)
    floor = [wall(["-c", "pass"]) for _ in range(args.repeats)]
    print(f"| python -c pass (start-up alone) | {statistics.mean(floor):.2f} | no |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
