"""Multi-layer perceptron: flatten, ``depth`` x (Dense -> [BatchNorm] -> ReLU), classifier."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ncfine_jax.models.common import batch_norm, classify, dense


class MLP(nn.Module):
    """Fully connected classifier for feature vectors (or flattened images).

    Attributes:
      num_classes: number of logits C.
      width: hidden units per layer.
      depth: number of hidden layers (>= 1).
      batch_norm: insert BatchNorm between each hidden Dense and its ReLU (off by
        default; when on, the hidden Dense layers drop their redundant bias).
      dtype: compute dtype; parameters are float32.
    """

    num_classes: int
    width: int = 512
    depth: int = 2
    batch_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Apply the MLP.

        Args:
          x: [b, d] features or [b, ...] images (flattened to [b, prod(...)]), float.
          train: BatchNorm mode (only matters with ``batch_norm=True``).

        Returns:
          (logits [b, C] float32, features [b, width] float32 = last hidden activation).
        """
        h = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i in range(self.depth):
            fan_in = h.shape[-1]
            h = dense(self.width, fan_in, self.dtype, name=f"hidden_{i}",
                      use_bias=not self.batch_norm)(h)
            if self.batch_norm:
                h = batch_norm(train, self.dtype, name=f"bn_{i}")(h)
            h = nn.relu(h)
        return classify(h, self.num_classes)


def mlp(num_classes: int, width: int | None = None, dtype: Any = jnp.float32,
        depth: int = 2, batch_norm: bool = False) -> MLP:
    """MLP with ``depth`` hidden layers of ``width`` units (default 512)."""
    return MLP(num_classes=num_classes, width=512 if width is None else width, depth=depth,
               batch_norm=batch_norm, dtype=dtype)
