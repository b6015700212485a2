"""The 2-D ("models", "data") device mesh: stacked models along one axis, batches along the other.

A trainer holds k >= 1 models stacked on a leading axis (a single run is k = 1). On a mesh
of M x D devices the stack is split along "models" (each row of D devices holds k / M of
the models) and every batch along "data" (each device of a row computes its share of the
batch for the row's models). Everything is ``jax.jit`` + ``NamedSharding``; ``jax.pmap``
(in maintenance mode since JAX 0.8) is not used. BatchNorm statistics are taken over the
global batch (XLA reduces across the "data" axis), so a run on D devices computes the
same function as on one device, up to float summation order.

The same code runs in one process or in several (``jax.distributed``): ``jax.devices()``
then spans every process, host data enter through ``jax.make_array_from_callback`` (each
process fills its own devices) and results leave through :func:`to_host`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ncfine_jax.errors import ConfigError

MODELS_AXIS = "models"
DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None,
              shape: tuple[int, int] | None = None) -> Mesh:
    """Mesh with axes ("models", "data") over ``devices`` (default: ``jax.devices()``, every
    device of every process). ``shape`` = (M, D), default (1, len(devices))."""
    devices = list(jax.devices() if devices is None else devices)
    m, d = shape if shape is not None else (1, len(devices))
    if m * d != len(devices):
        raise ConfigError(f"mesh {m}x{d}: needs {m * d} devices, got {len(devices)}")
    return Mesh(np.asarray(devices, dtype=object).reshape(m, d), (MODELS_AXIS, DATA_AXIS))


def shape_of_mesh(mesh: Mesh) -> tuple[int, int]:
    return int(mesh.shape[MODELS_AXIS]), int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (dataset, run key, scalars)."""
    return NamedSharding(mesh, P())


def stacked(mesh: Mesh) -> NamedSharding:
    """Leading (model) axis split over the "models" axis, the rest replicated."""
    return NamedSharding(mesh, P(MODELS_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
    """Host arrays (or a pytree of them) -> replicated global arrays on ``mesh``.

    Built with ``jax.make_array_from_callback``, so the same call works when the mesh spans
    several processes (each process passes the same host data and fills its own devices).
    """
    sharding = replicated(mesh)

    def put(leaf):
        host = to_host(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: split the leading (batch) axis of ``x`` over "data" (no-op if None).

    Under ``jax.vmap(..., spmd_axis_name="models")`` a per-model value additionally gets
    its vmapped axis split over "models".
    """
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def to_host(x) -> np.ndarray:
    """A global array as a NumPy array on this process (a collective when the array is
    split over devices of several processes: every process must call it)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
