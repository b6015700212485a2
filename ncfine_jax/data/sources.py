"""Non-CIFAR sources: sklearn digits, a synthetic Gaussian mixture, tensorflow-datasets."""

from __future__ import annotations

import numpy as np

from ncfine_jax.data.dataset import Dataset
from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.labels import count_ids
from ncfine_jax.text import squashed


def load_digits(test_size: int = 360, seed: int = 0) -> Dataset:
    """sklearn's embedded 8x8 digits (1,797 samples, no download).

    Features are the 64 pixel intensities as float32, kept on their 0..16 scale. The split
    is stratified and fixed by ``seed``: 1,437 train / 360 test by default.

    Args:
      test_size: number of test samples.
      seed: seed of the split.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int32)
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_size, stratify=y, random_state=seed
        )
    except ValueError as e:  # sklearn's own message says what is wrong with test_size
        raise ConfigError(
            f"digits: test_size={test_size!r}, seed={seed!r}: {squashed(e)}"
        ) from None
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=[str(int(c)) for c in bunch.target_names],
    )


def load_gaussian_mixture(
    num_clusters: int = 8,
    samples_per_cluster: int = 500,
    test_samples_per_cluster: int | None = None,
    d_input: int = 512,
    sigma2: float = 1.0,
    tau2: float | None = None,
    seed: int = 0,
) -> Dataset:
    """Synthetic Gaussian-mixture features (``ncfine_jax.gaussian_mixture``).

    Train and test come from one call of ``make_gaussian_mixture`` with
    ``samples_per_cluster + test_samples_per_cluster`` samples per cluster; the first
    ``samples_per_cluster`` of each cluster (in the generator's order) go to train. The
    clusters are the classes; the generator's coarse groups become ``y_*_coarse``.

    Args:
      num_clusters: number of clusters (= classes).
      samples_per_cluster: training samples per cluster.
      test_samples_per_cluster: test samples per cluster; default ``samples_per_cluster // 5``
        (at least 1).
      d_input: feature dimension d.
      sigma2, tau2: variances passed on to ``make_gaussian_mixture``.
      seed: seed of ``jax.random.key``.

    Returns:
      Dataset with float32 [n, d_input] features.
    """
    n_test = test_samples_per_cluster
    if n_test is None:
        n_test = max(1, samples_per_cluster // 5)
    if samples_per_cluster < 1 or n_test < 1:
        raise ConfigError(
            f"gaussian_mixture: samples_per_cluster={samples_per_cluster} and "
            f"test_samples_per_cluster={n_test} must be >= 1"
        )
    import jax  # only this source needs jax: loading an archive never imports it

    from ncfine_jax.gaussian_mixture.data import make_gaussian_mixture

    x, clusters, coarse = make_gaussian_mixture(
        jax.random.key(seed),
        num_clusters=num_clusters,
        samples_per_cluster=samples_per_cluster + n_test,
        d_input=d_input,
        sigma2=sigma2,
        tau2=tau2,
    )
    x = np.asarray(x, dtype=np.float32)
    clusters = np.asarray(clusters, dtype=np.int32)
    coarse = np.asarray(coarse, dtype=np.int32)
    # Rank of each sample within its cluster, in generator order.
    rank = np.zeros(len(clusters), dtype=np.int64)
    for c in range(num_clusters):
        members = np.flatnonzero(clusters == c)
        rank[members] = np.arange(len(members))
    train = rank < samples_per_cluster
    num_coarse = int(coarse.max()) + 1 if coarse.size else 0
    return Dataset(
        name="gaussian_mixture",
        x_train=x[train],
        y_train=clusters[train],
        x_test=x[~train],
        y_test=clusters[~train],
        class_names=[f"cluster_{c}" for c in range(num_clusters)],
        y_train_coarse=coarse[train],
        y_test_coarse=coarse[~train],
        coarse_class_names=[f"group_{g}" for g in range(num_coarse)],
    )


def tfds_available() -> bool:
    """Whether tensorflow-datasets and TensorFlow both import."""
    try:
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def load_tfds(name: str, data_dir=None, download: bool = True) -> Dataset:
    """A tensorflow-datasets dataset with "train" and "test" splits, as numpy arrays.

    Needs ``pip install 'ncfine_jax[tfds]'`` (tensorflow-datasets and TensorFlow); never
    required otherwise. Images are returned as tfds stores them (uint8 NHWC).
    """
    if not tfds_available():
        raise DataError(
            f"tfds:{name}: tensorflow-datasets and tensorflow are not installed "
            "(pip install 'ncfine_jax[tfds]')"
        )
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
        if download:
            builder.download_and_prepare()
        splits = tfds.as_numpy(
            builder.as_dataset(split=["train", "test"], batch_size=-1, as_supervised=True)
        )
    except Exception as e:  # noqa: BLE001 - tfds raises many types; report one line
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"tfds:{name}: {type(e).__name__}: {first_line}") from None
    (x_train, y_train), (x_test, y_test) = splits
    label = builder.info.features[builder.info.supervised_keys[1]]
    names = list(getattr(label, "names", None) or [str(i) for i in range(count_ids(
        np.concatenate([y_train, y_test]), f"tfds:{name}: labels"))])
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    if x_train.dtype != np.uint8:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    return Dataset(
        name=f"tfds:{name}",
        x_train=x_train,
        y_train=np.asarray(y_train, dtype=np.int32),
        x_test=x_test,
        y_test=np.asarray(y_test, dtype=np.int32),
        class_names=names,
    )
