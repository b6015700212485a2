"""ResNet for 32x32 inputs (CIFAR variant of kuangliu/pytorch-cifar ``models/resnet.py``).

3x3 stem conv (stride 1, no max-pool) + BN + ReLU, four stages of BasicBlocks with
widths w, 2w, 4w, 8w and strides 1, 2, 2, 2, a 1x1 conv + BN projection shortcut where
the shape changes, global average pool, Dense ``classifier``. Convolutions have no bias.
ResNet-18 (w = 64, blocks [2, 2, 2, 2]) has 11,173,962 trainable parameters at 10
classes, the PyTorch reference's count.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ncfine_jax.models.common import batch_norm, conv, pool_and_classify


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 conv-BN projection shortcut."""

    features: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [b, h, w, c_in] -> [b, h/stride, w/stride, features]."""
        y = conv(self.features, 3, self.stride, self.dtype, name="conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.features, 3, 1, self.dtype, name="conv2")(y)
        y = batch_norm(train, self.dtype, name="bn2")(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = conv(self.features, 1, self.stride, self.dtype, name="shortcut_conv")(x)
            shortcut = batch_norm(train, self.dtype, name="shortcut_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet built from BasicBlocks.

    Attributes:
      num_classes: number of logits C.
      stage_sizes: BasicBlocks per stage.
      width: channels of the stem and first stage; stage i has width * 2**i.
      dtype: compute dtype; parameters are float32.
    """

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
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
        x = conv(self.width, 3, 1, self.dtype, name="stem_conv")(x)
        x = nn.relu(batch_norm(train, self.dtype, name="stem_bn")(x))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(self.width * 2**i, stride, self.dtype,
                               name=f"stage{i + 1}_block{j + 1}")(x, train)
        return pool_and_classify(x, self.num_classes)


def resnet18(num_classes: int, width: int | None = None, dtype: Any = jnp.float32) -> ResNet:
    """ResNet-18 (CIFAR): BasicBlocks [2, 2, 2, 2], widths ``width`` x (1, 2, 4, 8), default 64."""
    return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2),
                  width=64 if width is None else width, dtype=dtype)
