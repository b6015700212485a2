"""ResNet-18 on Coarse CIFAR-10 (5 labels: y mod 5), paper Sec. 4 — the flagship.

Usage: python experiments/coarse_cifar10.py --lr 0.01 [--data cifar10|PATH]
(all experiment scripts share one flag set: see --help and ncfine_jax.experiment)

Paper setting (defaults): ResNet-18, 350 epochs, SGD momentum 0.9, batch 128, wd 5e-4,
lr x0.1 at epochs 150 and 250, features at epochs 20, 120, 240, 350. Cost: 350 x 390
ResNet-18 steps; a GPU job (no full run was measured by this project: no GPU was lent to
the session that built it). On a 2-core CPU use --width/--subset/--epochs (README has a
measured reduced run). Writes results.json, report.md and figures/ into --workdir.

Expected (paper): CLP ~93% test accuracy on the 10 original classes, close to LPO.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["coarse_cifar10"], argv)))
