"""ResNet-18 on randomly coarsened CIFAR-10 (classes shuffled by the seed, then y mod 5), paper App. F.

Usage: python experiments/random_coarse_cifar10.py --lr 0.01 --seed 0
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Reports the same CLP/LPO/MSDR analysis as coarse_cifar10 for the shuffled coarsening.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["random_coarse_cifar10"], argv)))
