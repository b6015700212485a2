"""DenseNet-BC for 32x32 inputs (kuangliu/pytorch-cifar ``models/densenet.py``).

3x3 stem conv to 2k channels (k = growth rate), four dense blocks of pre-activation
bottlenecks (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k, output concatenated in front
of the input), transitions between blocks (BN-ReLU-1x1 conv compressing channels by 0.5,
2x2 average pool), then BN-ReLU and a global average pool giving the features, and a
Dense ``classifier``. Convolutions have no bias. DenseNet-121 (k = 32, blocks
[6, 12, 24, 16]) has 1024 feature channels and 6,956,298 trainable parameters at 10
classes, kuangliu's count.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ncfine_jax.models.common import batch_norm, conv, pool_and_classify


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv (4k) -> BN-ReLU-3x3 conv (k); the k new channels go in front."""

    growth_rate: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [b, h, w, c] -> [b, h, w, c + growth_rate]."""
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
        y = conv(4 * self.growth_rate, 1, 1, self.dtype, name="conv1")(y)
        y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
        y = conv(self.growth_rate, 3, 1, self.dtype, name="conv2")(y)
        return jnp.concatenate([y, x], axis=-1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to ``features`` channels, then 2x2 average pool."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [b, h, w, c] -> [b, h/2, w/2, features]."""
        y = nn.relu(batch_norm(train, self.dtype, name="bn")(x))
        y = conv(self.features, 1, 1, self.dtype, name="conv")(y)
        return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """CIFAR DenseNet-BC.

    Attributes:
      num_classes: number of logits C.
      block_sizes: bottlenecks per dense block.
      growth_rate: channels each bottleneck adds (k); the stem has 2k channels.
      reduction: channel compression factor of the transitions.
      dtype: compute dtype; parameters are float32.
    """

    num_classes: int
    block_sizes: Sequence[int] = (6, 12, 24, 16)
    growth_rate: int = 32
    reduction: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Apply the network.

        Args:
          x: [b, h, w, 3] float images (h = w = 32 for CIFAR).
          train: batch statistics + running-average update (True) or running averages.

        Returns:
          (logits [b, C] float32, features [b, d] float32 = pooled final BN-ReLU output;
          d = 1024 for DenseNet-121 at k = 32).
        """
        x = x.astype(self.dtype)
        # No BN-ReLU after the stem: every bottleneck pre-activates its input.
        x = conv(2 * self.growth_rate, 3, 1, self.dtype, name="stem_conv")(x)
        for i, num_layers in enumerate(self.block_sizes):
            for j in range(num_layers):
                x = Bottleneck(self.growth_rate, self.dtype,
                               name=f"dense{i + 1}_layer{j + 1}")(x, train)
            if i < len(self.block_sizes) - 1:
                out_channels = int(math.floor(x.shape[-1] * self.reduction))
                x = Transition(out_channels, self.dtype, name=f"transition{i + 1}")(x, train)
        x = nn.relu(batch_norm(train, self.dtype, name="final_bn")(x))
        return pool_and_classify(x, self.num_classes)


def densenet121(num_classes: int, width: int | None = None,
                dtype: Any = jnp.float32) -> DenseNet:
    """DenseNet-121 (CIFAR): blocks [6, 12, 24, 16], growth rate ``width`` (default 32)."""
    return DenseNet(num_classes=num_classes, block_sizes=(6, 12, 24, 16),
                    growth_rate=32 if width is None else width, dtype=dtype)
