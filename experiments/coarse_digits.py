"""The whole pipeline on sklearn's embedded digits with an MLP (offline demo, < 2 min on CPU).

Usage: python experiments/coarse_digits.py [--lr 0.01 --wd 5e-4 --epochs 350 ...]
(see --help; all experiment scripts share one flag set, ncfine_jax.experiment).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["coarse_digits"], argv)))
