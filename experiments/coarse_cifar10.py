"""ResNet-18 on Coarse CIFAR-10 (5 labels: y mod 5), paper Sec. 4 — the flagship.

Usage: python experiments/coarse_cifar10.py --lr 0.01 [--data cifar10|PATH]
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Expected (paper): CLP ~93% test accuracy on the 10 original classes, close to LPO.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["coarse_cifar10"], argv)))
