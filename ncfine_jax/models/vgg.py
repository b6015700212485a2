"""VGG with BatchNorm for 32x32 inputs (kuangliu/pytorch-cifar ``models/vgg.py``).

Each stage is a stack of 3x3 conv (with bias, as PyTorch's default) -> BN -> ReLU,
followed by a 2x2 max-pool; after five pools a 32x32 image is 1x1 x 8w, which is the
feature vector (global average pool, which is the identity there and keeps other input
sizes working), and a single Dense ``classifier`` maps it to the logits — kuangliu's
CIFAR VGG, not torchvision's ImageNet VGG with its three 4096-unit Linear layers.
Trainable parameters at 10 classes: VGG-11 9,231,114; VGG-13 9,416,010;
VGG-16 14,728,266; VGG-19 20,040,522 (see tests/test_models.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ncfine_jax.models.common import batch_norm, conv, pool_and_classify

# Channel multipliers of the base width per conv layer; "M" is a 2x2 max-pool.
# Multiplier 1 is 64 channels at the default width (the standard VGG configurations A, B, D, E).
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "vgg13": (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "vgg16": (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),
    "vgg19": (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"),
}


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm.

    Attributes:
      num_classes: number of logits C.
      config: channel multipliers and "M" (max-pool) markers, e.g. ``VGG_CONFIGS["vgg16"]``.
      width: channels at multiplier 1 (64 for the standard nets).
      dtype: compute dtype; parameters are float32.
    """

    num_classes: int
    config: Sequence[int | str] = VGG_CONFIGS["vgg16"]
    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Apply the network.

        Args:
          x: [b, h, w, 3] float images (h = w = 32 for CIFAR).
          train: batch statistics + running-average update (True) or running averages.

        Returns:
          (logits [b, C] float32, features [b, 8 * width] float32 = pooled last stage).
        """
        x = x.astype(self.dtype)
        layer = 0
        for item in self.config:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                layer += 1
                x = conv(int(item) * self.width, 3, 1, self.dtype, name=f"conv{layer}",
                         use_bias=True)(x)
                x = nn.relu(batch_norm(train, self.dtype, name=f"bn{layer}")(x))
        return pool_and_classify(x, self.num_classes)


def _vgg(name: str, num_classes: int, width: int | None, dtype: Any) -> VGG:
    return VGG(num_classes=num_classes, config=VGG_CONFIGS[name],
               width=64 if width is None else width, dtype=dtype)


def vgg11(num_classes: int, width: int | None = None, dtype: Any = jnp.float32) -> VGG:
    """VGG-11 with BatchNorm (configuration A), first-stage width default 64."""
    return _vgg("vgg11", num_classes, width, dtype)


def vgg13(num_classes: int, width: int | None = None, dtype: Any = jnp.float32) -> VGG:
    """VGG-13 with BatchNorm (configuration B), first-stage width default 64."""
    return _vgg("vgg13", num_classes, width, dtype)


def vgg16(num_classes: int, width: int | None = None, dtype: Any = jnp.float32) -> VGG:
    """VGG-16 with BatchNorm (configuration D), first-stage width default 64."""
    return _vgg("vgg16", num_classes, width, dtype)


def vgg19(num_classes: int, width: int | None = None, dtype: Any = jnp.float32) -> VGG:
    """VGG-19 with BatchNorm (configuration E), first-stage width default 64."""
    return _vgg("vgg19", num_classes, width, dtype)
