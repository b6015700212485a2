"""Load (and cache) a dataset and print its shapes and load time.

    python -m ncfine_jax.data ../shared/data/cifar10_jpeg.tar.gz
    python -m ncfine_jax.data cifar10 --data-dir /data --no-download

Exits 2 with one ``error: ...`` line on bad input.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.data import DATASET_NAMES, load_dataset


def main(argv=None) -> None:
    parser = ArgumentParser(prog="python -m ncfine_jax.data", description=__doc__.splitlines()[0])
    parser.add_argument("name_or_path", help=f"one of {', '.join(DATASET_NAMES)}, or a path")
    parser.add_argument("--data-dir", default=None, help="where official archives are looked for")
    parser.add_argument("--cache-dir", default=None, help="decoded cache and downloads")
    parser.add_argument("--no-download", action="store_true", help="never download")
    parser.add_argument("--repeat", type=int, default=2, help="loads to time (2nd+ hit the cache)")
    args = parser.parse_args(argv)
    for i in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        ds = load_dataset(args.name_or_path, data_dir=args.data_dir, cache_dir=args.cache_dir,
                          download=not args.no_download)
        print(f"load {i + 1}: {time.perf_counter() - t0:.3f} s")
    print(ds.summary())
    print("train per class:", np.bincount(ds.y_train, minlength=ds.num_classes).tolist())
    print("test per class: ", np.bincount(ds.y_test, minlength=ds.num_classes).tolist())
    print("classes:", ", ".join(ds.class_names[:20]) + (" ..." if ds.num_classes > 20 else ""))


if __name__ == "__main__":
    sys.exit(run_main(main))
