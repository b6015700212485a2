"""Precision of a metric call: float32 by default, float64 in a scoped x64 context.

``dtype=float64`` with JAX's x64 mode off runs the computation inside
``jax.enable_x64(True)`` (global state untouched) and hands back NumPy float64 arrays,
so nothing float64 outlives the scope. Under tracing float64 needs x64 enabled
globally; otherwise a ConfigError is raised.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError


def resolve_dtype(dtype: Any) -> np.dtype:
    """float32 for None, else ``dtype`` if it is float32 or float64 (ConfigError otherwise)."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ConfigError(f"dtype: not a dtype: {dtype!r}") from e
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def x64_enabled() -> bool:
    """Whether JAX's x64 mode is on (globally or in the current scope)."""
    # Attribute access, not jax.config.read(): read() refuses flags that have a context
    # manager and works for this one only through a special case jax marks for removal.
    return bool(jax.config.jax_enable_x64)


def run_in_precision(fn: Callable[[np.dtype], Any], dtype: Any, concrete: bool) -> Any:
    """``fn(dt)`` with arrays of ``dt`` creatable; host arrays out of a scoped float64 run.

    Args:
        fn: computation taking the resolved dtype.
        dtype: None, float32 or float64.
        concrete: whether the inputs are concrete (a scoped x64 switch is impossible
            under tracing).
    """
    dt = resolve_dtype(dtype)
    scoped = dt == np.float64 and not x64_enabled()
    if scoped and not concrete:
        raise ConfigError(
            "dtype: float64 under jit/vmap needs jax_enable_x64=True; "
            "call the metric on concrete arrays or enable x64 globally"
        )
    # Public scoped switch (jax >= 0.8; pyproject requires >= 0.10.2).
    with jax.enable_x64(True) if scoped else contextlib.nullcontext():
        out = fn(dt)
        if scoped:
            # Leave the x64 scope with host arrays, not float64 device arrays.
            out = jax.tree.map(np.asarray, out)
        return out


def as_float(x: Any, dt: np.dtype) -> jax.Array:
    """``x`` as a jax array of float dtype ``dt``."""
    return jnp.asarray(x).astype(dt)


def as_labels(labels: Any) -> jax.Array:
    """``labels`` as an int32 jax array."""
    return jnp.asarray(labels).astype(jnp.int32)
