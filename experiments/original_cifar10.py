"""ResNet-18 on the original 10 CIFAR-10 labels: the OT baseline of the CLP/LPO/OT bars.

Usage: python experiments/original_cifar10.py --lr 0.01 --workdir runs/ot
then: python experiments/coarse_cifar10.py --lr 0.01 --ot-workdir runs/ot
(all experiment scripts share one flag set: see --help and ncfine_jax.experiment)

Paper setting (defaults): ResNet-18, 350 epochs, SGD momentum 0.9, batch 128, wd 5e-4,
lr x0.1 at epochs 150 and 250, features at epochs 20, 120, 240, 350. Cost: 350 x 390
ResNet-18 steps; a GPU job (no full run was measured by this project: no GPU was lent to
the session that built it). On a 2-core CPU use --width/--subset/--epochs (README has a
measured reduced run). Writes results.json, report.md and figures/ into --workdir.

Its final test accuracy is the OT bar of a coarse run's report.
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment import EXPERIMENTS, main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(EXPERIMENTS["original_cifar10"], argv)))
