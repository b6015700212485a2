"""Datasets: official CIFAR-10/100 archives, class-folder image sets, digits, synthetic.

``load_dataset(name_or_path)`` returns a ``Dataset`` of numpy arrays held in host memory
(uint8 [n, 32, 32, 3] NHWC images or float32 [n, d] features, int32 labels). Nothing
here needs TensorFlow or a network when the archives are already on disk.
"""

from ncfine_jax.data.cache import CACHE_ENV, DATA_ENV, cache_root
from ncfine_jax.data.dataset import Dataset
from ncfine_jax.data.loader import DATASET_NAMES, load_dataset

__all__ = ["CACHE_ENV", "DATASET_NAMES", "DATA_ENV", "Dataset", "cache_root", "load_dataset"]
