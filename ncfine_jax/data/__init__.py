"""Datasets: official CIFAR-10/100 archives, class-folder image sets, digits, synthetic.

``load_dataset(name_or_path)`` returns a ``Dataset`` of numpy arrays held in host memory
(uint8 [n, 32, 32, 3] NHWC images or float32 [n, d] features, int32 labels). Nothing
here needs TensorFlow or a network when the archives are already on disk.
"""

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "cache": ["CACHE_ENV", "DATA_ENV", "cache_root"],
    "dataset": ["Dataset"],
    "loader": ["DATASET_NAMES", "load_dataset"],
})
