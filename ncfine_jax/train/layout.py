"""How a stack of models is laid out: on the devices (the (M, D) mesh shape) and in time
(vectorized or one after the other). Plain Python, no jax: the command line parses and
checks these before any device is touched.
"""

from __future__ import annotations

import math
import re

from ncfine_jax.errors import ConfigError

# How a grid's models train: stacked and vmapped, or one normal run after the other.
MODES = ("vectorize", "sequential")


def parse_mesh(text: str) -> tuple[int, int]:
    """``"MxD"`` (e.g. ``"4x2"``) -> (M, D), both >= 1; ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ConfigError(f"mesh {text!r}: expected MxD with positive integers, e.g. 4x2")
    return int(match[1]), int(match[2])


def default_mesh_shape(num_models: int, num_devices: int) -> tuple[int, int]:
    """Layout for ``num_models`` stacked models on ``num_devices`` devices.

    As many model rows as divide both (``gcd``): whole models per device beat splitting
    small batches, and the rest of the devices split the batch. A single run (k = 1) is
    pure data parallelism, (1, num_devices).
    """
    models = math.gcd(max(1, num_models), max(1, num_devices))
    return models, num_devices // models


def check_mesh_shape(shape: tuple[int, int], num_models: int, num_devices: int,
                     name: str | None = None) -> None:
    """ConfigError (one line) unless M x D uses every device and M divides the models.

    ``name``: how the layout is named in the error (default ``mesh_shape (M, D)``; the
    command line passes its flag)."""
    m, d = shape
    name = name or f"mesh_shape ({m}, {d})"
    if m * d != num_devices:
        raise ConfigError(f"{name}: needs {m * d} devices, there are {num_devices}")
    if num_models % m:
        raise ConfigError(f"{name}: {m} model rows do not divide the {num_models} "
                          "model(s) trained together")
