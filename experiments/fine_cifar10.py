"""ResNet-18 on Fine CIFAR-10 (20 labels: each class split in two at random, eq. 5), paper Sec. 4.

Usage: python experiments/fine_cifar10.py --lr 0.01
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Reports D over the 20 fine labels grouped by original class and its MSDR; CLP is not defined (null).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["fine_cifar10"], argv)))
