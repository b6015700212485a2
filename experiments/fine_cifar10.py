"""ResNet-18 on Fine CIFAR-10 (20 labels: each class split in two at random), paper Sec. 4.

Usage: python experiments/fine_cifar10.py [--lr 0.01 --wd 5e-4 --epochs 350 ...]
(see --help; all experiment scripts share one flag set, ncfine_jax.experiment).
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["fine_cifar10"], argv)))
