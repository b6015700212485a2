"""The whole paper in one command: every experiment at a chosen scale, resumable, ending in
DIR/paper_report.md (each claim of the paper, our figure and number, the criterion and a
verdict).

Usage:
  python experiments/paper.py --scale {tiny,cpu,full} --workdir DIR [--cifar10 PATH]
      [--cifar100 PATH] [--only NAME ...] [--dry-run] [--calibrate] [--no-progress]

Scales, items and claims: ncfine_jax.paper (scales.py, plan.py, claims/).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.paper.command import main

if __name__ == "__main__":
    sys.exit(run_main(main))
