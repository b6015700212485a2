"""ResNet-18 on the original 10 CIFAR-10 labels: the OT baseline of the CLP/LPO/OT bars.

Usage: python experiments/original_cifar10.py --lr 0.01 --workdir runs/ot
then: python experiments/coarse_cifar10.py --lr 0.01 --ot-workdir runs/ot
(shared flags, paper defaults and cost: see --help and ncfine_jax.experiment)

Its final test accuracy is the OT bar of a coarse run's report.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["original_cifar10"], argv)))
