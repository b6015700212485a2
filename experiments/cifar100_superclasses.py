"""ResNet-18 on CIFAR-100's 20 official superclasses.

Usage: python experiments/cifar100_superclasses.py --lr 0.01 [--data cifar100|PATH]
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Reports CLP/LPO over the 100 classes (5 per official superclass).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["cifar100_superclasses"], argv)))
