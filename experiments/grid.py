"""The paper's lr x wd grid of any experiment (Figs. 24-27, 31; App. A's wd = 0 column).

Usage:
  python experiments/grid.py coarse_cifar10 --lr 0.1 0.01 0.001 --wd 5e-3 5e-4 5e-5 0 \
      --workdir runs/grid_coarse_cifar10 [--vectorize | --sequential] [--chunk-size K]
  (plus any flag every experiment script takes: --epochs, --arch, --width, --seed, ...)

Writes DIR/lr<lr>_wd<wd>/ per grid point (the same files as a single run, so
``python experiments/coarse_cifar10.py --lr 0.1 --wd 5e-4 --workdir DIR/lr0.1_wd0.0005``
resumes the same run), DIR/summary.json (lr, wd, CLP, LPO, final accuracies, NC1/NC2 at
the last saved epoch, diverged) and DIR/figures/grid_*.png. A point whose loss becomes
NaN is marked diverged (diverged.json) and the others go on; rerunning resumes.

--vectorize stacks the models and vmaps one compiled step over them (chunked to fit the
device; --chunk-size forces K); --sequential trains one normal run after the other.
Default: the faster path measured by benchmarks/grid_bench.py (2-core CPU: vectorize for
the MLP, sequential for the convolutional nets, which vmapped ran ~3x slower; GPU:
sequential until measured there). Cost: the grid's k runs (less the vectorized speed-up)
plus one analysis per point (CLP t-SNE dominates on CIFAR).
Quick offline check (2-core CPU, ~1 min):
  python experiments/grid.py coarse_digits --lr 0.05 0.01 --wd 5e-4 0 --epochs 10 \
      --workdir /tmp/grid_digits
"""

import sys

from ncfine_jax.cli import run_main
from ncfine_jax.experiment.cli import grid_main

if __name__ == "__main__":
    sys.exit(run_main(grid_main))
