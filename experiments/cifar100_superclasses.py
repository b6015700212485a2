"""ResNet-18 on CIFAR-100's 20 official superclasses.

Usage: python experiments/cifar100_superclasses.py [--lr 0.01 --wd 5e-4 --epochs 350 ...]
(see --help; all experiment scripts share one flag set, ncfine_jax.experiment).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["cifar100_superclasses"], argv)))
