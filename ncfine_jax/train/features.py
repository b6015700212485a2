"""Penultimate features of every train and test sample, written to ``features/epoch_XXXX.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncfine_jax.io import atomic_save_npz
from ncfine_jax.workdir import RunDir


def features_path(workdir: str | Path, epoch: int) -> Path:
    """``workdir/features/epoch_XXXX.npz`` (epoch 1-based; 0 = before training)."""
    return RunDir(workdir).feature_file(epoch)


def save_features(path: str | Path, epoch: int, train_features, train_labels, train_classes,
                  test_features, test_labels, test_classes, *, classifier_kernel=None,
                  classifier_bias=None) -> Path:
    """Write one features file atomically (uncompressed: float features barely compress,
    and stored members can be memory-mapped by the analysis).

    Keys: ``train_features`` [n, d] float32, ``train_labels`` [n] int32 (training labels),
    ``train_classes`` [n] int32 (original classes), ``test_features`` [m, d] float32,
    ``test_labels`` [m] int32, ``test_classes`` [m] int32, ``epoch`` int32 scalar, and when
    given the last layer ``classifier_kernel`` [d, L] and ``classifier_bias`` [L] float32
    (what NC3/NC4 compare the features with).
    """
    head = {}
    if classifier_kernel is not None:
        head["classifier_kernel"] = np.asarray(classifier_kernel, np.float32)
    if classifier_bias is not None:
        head["classifier_bias"] = np.asarray(classifier_bias, np.float32)
    return atomic_save_npz(
        path,
        train_features=np.asarray(train_features, np.float32),
        train_labels=np.asarray(train_labels, np.int32),
        train_classes=np.asarray(train_classes, np.int32),
        test_features=np.asarray(test_features, np.float32),
        test_labels=np.asarray(test_labels, np.int32),
        test_classes=np.asarray(test_classes, np.int32),
        epoch=np.int32(epoch),
        **head,
    )
