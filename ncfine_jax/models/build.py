"""Build a registered backbone (``get_model``) and count its parameters (``param_count``)."""


from __future__ import annotations

import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError
from ncfine_jax.models.registry import BACKBONES


def _check_positive_int(name: str, key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"model {name}: {key} must be an integer >= {minimum}, got {value!r}")


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
      name: one of ``BACKBONES`` (e.g. "resnet18").
      num_classes: number of logits C (>= 1).
      **kwargs: ``width`` (int or None for the default), ``dtype`` (compute dtype, e.g.
        ``jnp.bfloat16`` or "bfloat16"), and model-specific options (MLP: ``depth``,
        ``batch_norm``).

    Returns:
      An unbound ``flax.linen.Module``.

    Raises:
      ConfigError: unknown name, unknown kwarg or invalid value.
    """
    if name not in BACKBONES:
        raise ConfigError(f"model: unknown name {name!r}; known: {', '.join(sorted(BACKBONES))}")
    constructor: Callable[..., nn.Module] = BACKBONES[name].build_function()
    allowed = [p for p in inspect.signature(constructor).parameters if p != "num_classes"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"model {name}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(allowed)}")
    _check_positive_int(name, "num_classes", num_classes)
    if kwargs.get("width") is not None:
        _check_positive_int(name, "width", kwargs["width"])
    if "depth" in kwargs:
        _check_positive_int(name, "depth", kwargs["depth"])
    if "batch_norm" in kwargs and not isinstance(kwargs["batch_norm"], bool):
        raise ConfigError(f"model {name}: batch_norm must be True or False, "
                          f"got {kwargs['batch_norm']!r}")
    if "dtype" in kwargs:
        try:
            dtype = jnp.dtype(kwargs["dtype"])
        except TypeError as e:
            raise ConfigError(f"model {name}: dtype {kwargs['dtype']!r} is not a dtype ({e})")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ConfigError(f"model {name}: dtype must be a float dtype, got {dtype}")
        kwargs["dtype"] = dtype
    return constructor(int(num_classes), **kwargs)


def param_count(name: str, num_classes: int = 10, *,
                input_shape: tuple[int, ...] = (32, 32, 3), **kwargs: Any) -> int:
    """Number of trainable parameters (collection ``params``; BatchNorm statistics excluded).

    Shapes come from ``jax.eval_shape``, so nothing is initialised or compiled and the
    call is cheap even for DenseNet-121.

    Args:
      name, num_classes, **kwargs: as for ``get_model``.
      input_shape: shape of one input sample (it sets the MLP's first layer; the
        convolutional nets' counts do not depend on it).

    Returns:
      The total number of scalars in ``params``.
    """
    model = get_model(name, num_classes, **kwargs)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False),
                            jax.ShapeDtypeStruct((2,), jnp.uint32), x)
    return int(sum(np.prod(leaf.shape, dtype=np.int64)
                   for leaf in jax.tree_util.tree_leaves(shapes["params"])))


