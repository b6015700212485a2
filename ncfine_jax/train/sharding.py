"""The 1-D "data" mesh: batches are split over devices, everything else is replicated.

Data parallelism is ``jax.jit`` + ``NamedSharding`` (not ``jax.pmap``, in maintenance
mode since JAX 0.8): parameters, optimizer state and the on-device dataset are
replicated; each batch is constrained to ``P("data")`` inside the step, so XLA splits
the forward/backward over devices and inserts the gradient all-reduce. BatchNorm
statistics are taken over the global batch (XLA reduces across devices), so a run on k
devices computes the same function as on one device, up to float summation order.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh named "data" over ``devices`` (default: ``jax.devices()``, all devices of
    all processes after ``jax.distributed.initialize``)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of state and dataset: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading axis split over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
    """Host arrays (or a pytree of them) -> replicated global arrays on ``mesh``.

    Built with ``jax.make_array_from_callback`` so the same call works when the mesh spans
    several processes (each process passes the same host data and fills its own devices).
    """
    sharding = replicated(mesh)

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside jit: split the leading (batch) axis of ``x`` over the mesh (no-op if None)."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))
