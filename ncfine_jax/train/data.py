"""``TrainData``: the arrays one run trains and evaluates on, validated."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from ncfine_jax.errors import DataError
from ncfine_jax.labels import count_ids


@dataclasses.dataclass
class TrainData:
    """Training and test arrays with training labels and original classes.

    Attributes:
      x_train: [n, h, w, c] uint8 images (NHWC) or [n, d] float features.
      train_labels: [n] int, the labels the network is trained on (0..num_labels-1).
      train_classes: [n] int, the original class of every training sample.
      x_test: [m, ...] same trailing shape and dtype kind as ``x_train``.
      test_labels: [m] int, training-label space (test accuracy is measured on these).
      test_classes: [m] int, original classes.
      num_labels: number of training labels (logits of the classifier).
    """

    x_train: np.ndarray
    train_labels: np.ndarray
    train_classes: np.ndarray
    x_test: np.ndarray
    test_labels: np.ndarray
    test_classes: np.ndarray
    num_labels: int

    @classmethod
    def from_dataset(cls, dataset: Any, train_labels: np.ndarray | None = None,
                     test_labels: np.ndarray | None = None,
                     num_labels: int | None = None) -> "TrainData":
        """Build from an ``ncfine_jax.data.Dataset`` and (optionally) transformed labels.

        Without ``train_labels``/``test_labels`` the original labels are used and
        ``num_labels`` defaults to ``dataset.num_classes``.
        """
        if (train_labels is None) != (test_labels is None):
            raise DataError("train data: give both train_labels and test_labels or neither")
        if train_labels is None:
            train_labels, test_labels = dataset.y_train, dataset.y_test
            num_labels = dataset.num_classes if num_labels is None else num_labels
        elif num_labels is None:
            num_labels = count_ids(np.concatenate([np.ravel(train_labels), np.ravel(test_labels)]),
                                   "train data: train_labels and test_labels", "label")
        return cls(dataset.x_train, train_labels, dataset.y_train, dataset.x_test,
                   test_labels, dataset.y_test, int(num_labels)).validate()

    @property
    def is_image(self) -> bool:
        """True for [n, h, w, c] images."""
        return np.ndim(self.x_train) == 4

    def validate(self) -> "TrainData":
        """Check shapes, dtypes and label ranges; raise ``DataError`` (one line)."""
        n, m = len(self.x_train), len(self.x_test)
        x_train, x_test = np.asarray(self.x_train), np.asarray(self.x_test)
        if x_train.ndim not in (2, 4):
            raise DataError(f"train data: x_train must be [n, h, w, c] images or [n, d] "
                            f"features, got shape {x_train.shape}")
        if x_test.shape[1:] != x_train.shape[1:] or x_test.dtype != x_train.dtype:
            raise DataError(f"train data: x_test {x_test.shape} {x_test.dtype} does not match "
                            f"x_train {x_train.shape} {x_train.dtype}")
        if x_train.ndim == 4 and x_train.dtype != np.uint8:
            raise DataError(f"train data: images must be uint8, got {x_train.dtype}")
        if x_train.ndim == 2:
            if not np.issubdtype(x_train.dtype, np.floating):
                raise DataError(f"train data: features must be float, got {x_train.dtype}")
            for name, x in (("x_train", x_train), ("x_test", x_test)):
                if not np.all(np.isfinite(x)):
                    raise DataError(f"train data: {name} holds NaN or inf")
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, (int, np.integer)) \
                or self.num_labels < 1:
            raise DataError("train data: num_labels must be an integer >= 1, "
                            f"got {self.num_labels!r}")
        for name, size in (("train_labels", n), ("train_classes", n), ("test_labels", m),
                           ("test_classes", m)):
            y = np.asarray(getattr(self, name))
            if y.shape != (size,):
                raise DataError(f"train data: {name} must have shape ({size},), got {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"train data: {name} must be integers, got {y.dtype}")
            if size and y.min() < 0:
                raise DataError(f"train data: {name} holds a negative value {y.min()}")
        for name in ("train_labels", "test_labels"):
            y = np.asarray(getattr(self, name))
            if len(y) and y.max() >= self.num_labels:
                raise DataError(f"train data: {name} holds label {y.max()} >= num_labels "
                                f"{self.num_labels}")
        if n == 0 or m == 0:
            raise DataError(f"train data: empty split (n_train={n}, n_test={m})")
        return self

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (images, [0, 1] units) or per-feature mean and std of x_train.

        Returns:
          (mean, std), float32 [c] or [d]; population std, computed in float64 in chunks
          (no float64 copy of the whole set); a constant feature gets std 1.
        """
        x = np.asarray(self.x_train)
        axes = (0, 1, 2) if x.ndim == 4 else (0,)
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        total = np.zeros(x.shape[-1])
        total_sq = np.zeros(x.shape[-1])
        for start in range(0, len(x), 4096):
            chunk = x[start:start + 4096].astype(np.float64) / scale
            total += chunk.sum(axis=axes)
            total_sq += np.square(chunk).sum(axis=axes)
        count = x.size / x.shape[-1]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.where(std < 1e-6, 1.0, std)
        return mean.astype(np.float32), std.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        """Shapes plus a BLAKE2b digest of all arrays (to refuse resuming on other data)."""
        h = hashlib.blake2b(digest_size=16)
        for name in ("x_train", "train_labels", "train_classes", "x_test", "test_labels",
                     "test_classes"):
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}{a.shape}{a.dtype.str}".encode())
            h.update(a.data)
        return {"n_train": int(len(self.x_train)), "n_test": int(len(self.x_test)),
                "input_shape": list(np.shape(self.x_train)[1:]),
                "input_dtype": str(np.asarray(self.x_train).dtype),
                "num_labels": int(self.num_labels), "digest": h.hexdigest()}
