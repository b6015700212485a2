"""ResNet-18 on randomly coarsened CIFAR-10 (classes shuffled by the seed, then y mod 5), paper App. F.

Usage: python experiments/random_coarse_cifar10.py --lr 0.01 --seed 0
(all experiment scripts share one flag set: see --help and ncfine_jax.experiment)

Paper setting (defaults): ResNet-18, 350 epochs, SGD momentum 0.9, batch 128, wd 5e-4,
lr x0.1 at epochs 150 and 250, features at epochs 20, 120, 240, 350. Cost: 350 x 390
ResNet-18 steps; a GPU job (no full run was measured by this project: no GPU was lent to
the session that built it). On a 2-core CPU use --width/--subset/--epochs (README has a
measured reduced run). Writes results.json, report.md and figures/ into --workdir.

Reports the same CLP/LPO/MSDR analysis as coarse_cifar10 for the shuffled coarsening.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["random_coarse_cifar10"], argv)))
