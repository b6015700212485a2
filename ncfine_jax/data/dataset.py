"""The in-memory dataset returned by ``load_dataset``."""

from __future__ import annotations

import dataclasses

import numpy as np

from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.labels import check_seed


@dataclasses.dataclass
class Dataset:
    """A labelled train/test split held in host memory.

    Attributes:
      name: dataset name, e.g. "cifar10", "digits", or the stem of a class-folder archive.
      x_train: [n_train, 32, 32, 3] uint8 NHWC images, or [n_train, d] float32 features.
      y_train: [n_train] int32 original class labels in ``[0, num_classes)``.
      x_test: [n_test, ...] like ``x_train``.
      y_test: [n_test] int32.
      class_names: name of each class, index = label.
      y_train_coarse: [n_train] int32 official superclass labels (CIFAR-100, and the
        cluster groups of ``gaussian_mixture``), else None.
      y_test_coarse: [n_test] int32, as ``y_train_coarse``.
      coarse_class_names: names of the coarse labels, when those exist.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    y_train_coarse: np.ndarray | None = None
    y_test_coarse: np.ndarray | None = None
    coarse_class_names: list[str] | None = None

    def __post_init__(self):
        self.class_names = list(self.class_names)
        if self.coarse_class_names is not None:
            self.coarse_class_names = list(self.coarse_class_names)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{split} has {len(x)} rows, y_{split} {len(y)}")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                distinct = np.unique(y)
                raise DataError(
                    f"{self.name}: class ids are not 0..C-1 for its {self.num_classes} class "
                    f"names: y_{split} has {distinct.size} distinct ids between "
                    f"{int(distinct[0])} and {int(distinct[-1])}"
                )
            coarse = getattr(self, f"y_{split}_coarse")
            if coarse is not None and len(coarse) != len(y):
                raise DataError(
                    f"{self.name}: y_{split}_coarse has {len(coarse)} rows, not {len(y)}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        """True for [n, H, W, C] uint8 images, False for [n, d] float features."""
        return self.x_train.ndim == 4

    def subset(self, n_train: int | None, n_test: int | None, seed: int = 0) -> "Dataset":
        """A class-stratified random subset (for tests and quick runs).

        Each class gets ``n // C`` or ``n // C + 1`` samples (fewer only when the class has
        fewer); samples keep their original relative order.

        Args:
          n_train: number of training samples to keep; None keeps all.
          n_test: number of test samples to keep; None keeps all.
          seed: seed of the selection.

        Returns:
          A new ``Dataset`` named ``f"{name}[{n_train},{n_test}]"`` (arrays copied).
        """
        rng = np.random.default_rng(check_seed(seed))
        picks = {}
        for split, n in (("train", n_train), ("test", n_test)):
            y = getattr(self, f"y_{split}")
            if n is None:
                picks[split] = np.arange(len(y))
                continue
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= len(y):
                raise ConfigError(f"subset: n_{split}={n!r} must be an int in [0, {len(y)}]")
            picks[split] = _stratified_indices(y, int(n), rng)
        it, ie = picks["train"], picks["test"]
        return Dataset(
            name=f"{self.name}[{n_train},{n_test}]",
            x_train=self.x_train[it],
            y_train=self.y_train[it],
            x_test=self.x_test[ie],
            y_test=self.y_test[ie],
            class_names=list(self.class_names),
            y_train_coarse=None if self.y_train_coarse is None else self.y_train_coarse[it],
            y_test_coarse=None if self.y_test_coarse is None else self.y_test_coarse[ie],
            coarse_class_names=self.coarse_class_names,
        )

    def summary(self) -> str:
        """One line: name, shapes, classes."""
        return (
            f"{self.name}: train {self.x_train.shape} {self.x_train.dtype}, "
            f"test {self.x_test.shape}, {self.num_classes} classes"
        )


def _stratified_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices spread as evenly as possible over the classes of y, sorted."""
    # Rank every sample within its class in a random order; taking the n smallest
    # (rank, random tie-break) keys takes one sample per class in turn.
    order = rng.permutation(len(y))
    ys = y[order]
    rank = np.empty(len(y), dtype=np.int64)
    for c in np.unique(ys):
        members = np.flatnonzero(ys == c)
        rank[members] = np.arange(len(members))
    tie = rng.permutation(len(y))
    chosen = order[np.lexsort((tie, rank))[:n]]
    return np.sort(chosen)
