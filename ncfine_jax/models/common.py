"""Pieces shared by every backbone: PyTorch-matching initialisers, BatchNorm, classifier.

The paper's reference code (and kuangliu/pytorch-cifar, whose CIFAR architectures the
backbones follow) is PyTorch, so layers are initialised as PyTorch initialises them by
default and BatchNorm uses PyTorch's momentum and epsilon. Parameters are always float32;
``dtype`` only sets the compute dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's default Conv/Linear weight init is kaiming_uniform(a=sqrt(5)), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a uniform law with variance 1/(3 fan_in) is the same.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# Flax's BatchNorm momentum is the weight of the old running average; PyTorch's 0.1
# is the weight of the new batch, so PyTorch's default is 0.9 here (Flax's own is 0.99).
# One difference stays: PyTorch updates running_var with the unbiased batch variance
# (x m / (m - 1), m = values per channel), Flax with the biased one; for conv layers
# m = batch x height x width (>= 128 x 16 on CIFAR), so the gap is below 1e-3 relative.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch defaults; statistics live in collection ``batch_stats``.

    Args:
      train: use batch statistics and update the running averages (True) or use the
        running averages (False).
      dtype: compute dtype of the output; scale/bias and statistics stay float32.
      name: submodule name.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str | None = None,
         use_bias: bool = False) -> nn.Conv:
    """A 'same'-padded square convolution, PyTorch-initialised (bias-free by default).

    With stride 2 and kernel 3, padding 1 on each side reproduces PyTorch's
    ``Conv2d(k=3, s=2, padding=1)`` output size and alignment (Flax's "SAME" would pad
    asymmetrically), so the padding is given explicitly.
    """
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=torch_kernel_init,
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _torch_bias_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, *,
                     fan_in: int) -> jax.Array:
    """PyTorch's Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(jnp.asarray(fan_in, jnp.float32))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def dense(features: int, fan_in: int, dtype: Dtype, name: str | None = None,
          use_bias: bool = True) -> nn.Dense:
    """A PyTorch-initialised Dense layer (weight and bias) with float32 parameters.

    Args:
      features: output units.
      fan_in: input units (needed for the bias bound, which Flax initialisers never see).
      dtype: compute dtype.
      name: submodule name.
      use_bias: add a bias (off when a BatchNorm follows).
    """
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=torch_kernel_init,
        bias_init=functools.partial(_torch_bias_init, fan_in=fan_in),
        name=name,
    )


def classify(features: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Cast the penultimate features to float32 and apply the ``classifier`` Dense.

    The classifier runs in float32 even under bf16 compute, so the returned logits are
    exactly ``features @ W + b`` for the returned features; NC3/NC4 rely on that, and the
    layer is too small for its precision to cost anything. Must be called from inside a
    compact module method (it creates the submodule named ``classifier``).

    Args:
      features: [b, d] penultimate representation in any float dtype.
      num_classes: number of output logits C.

    Returns:
      (logits [b, C] float32, features [b, d] float32).
    """
    features = features.astype(jnp.float32)
    logits = dense(num_classes, features.shape[-1], jnp.float32, name="classifier")(features)
    return logits, features


def pool_and_classify(x: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Global average pool of the last feature map, then ``classify``.

    Args:
      x: [b, h, w, c] last feature map (any float dtype).
      num_classes: number of output logits C.

    Returns:
      (logits [b, C] float32, features [b, c] float32 = the pooled map).
    """
    # Pool in float32: the mean over h*w positions is where bf16 would lose digits.
    return classify(jnp.mean(x.astype(jnp.float32), axis=(1, 2)), num_classes)
