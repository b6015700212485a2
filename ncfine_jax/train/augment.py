"""On-device augmentation and input normalisation (run inside the jitted train step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

PAD = 4


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = PAD) -> jax.Array:
    """Pad-``pad`` random crop and random horizontal flip, per sample.

    Matches torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` on the
    raw uint8 image: the padding is zero pixels (black), applied before normalisation.

    Args:
      key: PRNG key.
      images: [b, h, w, c] images of any dtype (uint8 in training).
      pad: padding on each side; crop offsets are uniform in [0, 2 pad].

    Returns:
      [b, h, w, c] images, same dtype.
    """
    b, h, w, c = images.shape
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(img: jax.Array, off: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    cropped = jax.vmap(crop)(padded, offsets)
    return jnp.where(flip[:, None, None, None], cropped[:, :, ::-1, :], cropped)


def normalize(x: jax.Array, mean: jax.Array, std: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``(x / 255 - mean) / std`` for uint8 images, ``(x - mean) / std`` for floats.

    Args:
      x: [b, h, w, c] uint8 images or [b, d] float features.
      mean, std: [c] (images, in [0, 1] units) or [d] (features), float32.
      dtype: output (compute) dtype.
    """
    xf = x.astype(jnp.float32)
    if x.dtype == jnp.uint8:
        xf = xf / 255.0
    return ((xf - mean) / std).astype(dtype)
