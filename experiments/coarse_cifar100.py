"""ResNet-18 on Coarse CIFAR-100 (20 labels: y mod 20).

Usage: python experiments/coarse_cifar100.py --lr 0.01 [--data cifar100|PATH]
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Reports CLP/LPO over the 100 classes (5 per coarse label).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["coarse_cifar100"], argv)))
