"""Metrics over batches: the features are never all in memory at once.

Pass 1 accumulates :class:`ClassStats` batch by batch (Chan et al.'s pairwise merge,
stable for collapsed features). D, MSDR, NC2, CDNV and NC3 follow from the statistics;
NC1 (within-class scatter projected on the final class-mean span) and NC4 (classifier
vs nearest final class mean) need a second pass over the same batches.
:func:`streaming_metrics_of_arrays` runs both passes over row chunks of ``[n, d]``
arrays, e.g. ``np.load(path, mmap_mode="r")``, in O(chunk * d + C * d) memory.

Streaming batches are zero-padded to a power-of-two length (padding rows carry the
out-of-range label C, which segment sums and masks drop), so a stream with a ragged
last batch compiles a handful of times, not once per batch size.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.metrics import checks
from ncfine_jax.metrics.kernels import (ClassStats, class_statistics_unchecked,
                                        distance_matrix_from_statistics, merge_class_statistics,
                                        msdr_unchecked, nc1_basis, nc1_finish, nc1_projected_scatter,
                                        nc4_disagreements, pad_batch)
from ncfine_jax.metrics.precision import as_float, as_labels, resolve_dtype, run_in_precision
from ncfine_jax.metrics.registry import EPOCH_METRICS, statistics_metrics

Batches = Callable[[], Iterable[tuple[Any, Any]]]

# Default rows per chunk in streaming_metrics_of_arrays: about 32 MB of float32 at d = 512.
DEFAULT_CHUNK_ELEMENTS = 1 << 23


class ClassStatisticsAccumulator:
    """Accumulates :class:`ClassStats` over batches (features never all in memory).

    Example:
        >>> acc = ClassStatisticsAccumulator(num_classes=10)
        >>> for feats, labs in batches:
        ...     acc.update(feats, labs)
        >>> D = distance_matrix_from_statistics(acc.statistics)

    Each batch is validated (shapes, label range, finite values) but may lack some
    classes; :attr:`statistics` raises if a class is still empty at the end.
    """

    def __init__(self, num_classes: int, *, dtype: Any = None):
        self.num_classes = checks.check_num_classes(num_classes)
        self._dtype = resolve_dtype(dtype)
        self._stats: ClassStats | None = None
        self._rows = 0

    def update(self, features: Any, labels: Any) -> None:
        """Adds a batch: features [b, d] float, labels [b] int in [0, C)."""
        checks.validate_inputs(features, labels, self.num_classes, allow_empty_classes=True,
                               check_finite=False)
        # Row numbers in the NaN/inf message count from the first batch.
        checks.check_features_finite(features, row_offset=self._rows)
        if self._stats is not None and np.shape(features)[1] != self._stats.mean.shape[1]:
            raise DataError(
                f"features: batch has dimension {np.shape(features)[1]}, "
                f"earlier batches {self._stats.mean.shape[1]}"
            )

        def compute(dt):
            f, y = _padded(features, labels, self.num_classes, dt)
            part = class_statistics_unchecked(f, y, self.num_classes)
            return part if self._stats is None else _merge(self._stats, part)

        # In scoped float64 mode the result comes back as NumPy arrays; kept that way.
        self._stats = ClassStats(*run_in_precision(compute, self._dtype, True))
        self._rows += int(np.shape(features)[0])

    @property
    def statistics(self) -> ClassStats:
        """The merged :class:`ClassStats`; raises DataError if any class is empty."""
        if self._stats is None:
            raise DataError("batches: no batches were added")
        empty = np.nonzero(np.asarray(self._stats.count) == 0)[0]
        if empty.size:
            raise DataError(f"labels: classes {empty[:10].tolist()} have no samples in any batch")
        return self._stats


def _padded(features: Any, labels: Any, num_classes: int, dt: np.dtype) -> tuple[jax.Array, jax.Array]:
    """A batch as device arrays of dtype ``dt``, padded like :func:`pad_batch`.

    Host arrays are padded on the host (no per-shape padding kernel to compile).
    """
    if isinstance(features, jax.Array) or isinstance(labels, jax.Array):
        return pad_batch(as_float(features, dt), as_labels(labels), num_classes)
    n = np.shape(features)[0]
    size = 1 << max(n - 1, 0).bit_length()
    f = np.zeros((size, np.shape(features)[1]), dt)
    f[:n] = features
    y = np.full(size, num_classes, np.int32)
    y[:n] = labels
    return jnp.asarray(f), jnp.asarray(y)


_merge = jax.jit(merge_class_statistics)
_nc1_basis = jax.jit(nc1_basis)


@jax.jit
def _accumulate(scatter, disagreements, finite, part, nc4_part):
    if nc4_part is None:
        return scatter + part, disagreements, finite
    return scatter + part, disagreements + nc4_part[0], finite & nc4_part[1]


@jax.jit
def _finish_second_pass(stats, scatter, sing, disagreements, finite, rows):
    return nc1_finish(stats, scatter, sing), jnp.where(finite, disagreements / rows, jnp.nan)


@functools.partial(jax.jit, static_argnames="keys")
def _from_statistics(stats, kernel, keys: tuple[str, ...]):
    """Everything that needs only the statistics, in one compiled call: NC1's basis, D and
    the registered statistics metrics ``keys`` (``metrics.registry``; part of the cache
    key, so a metric registered later gets its own program)."""
    out = {"nc1_basis": nc1_basis(stats),
           "class_distance_matrix": distance_matrix_from_statistics(stats)}
    out.update({key: EPOCH_METRICS[key].compute(stats, kernel) for key in keys})
    return out


@jax.jit
def _second_pass_batch(features, labels, stats, basis, kernel, bias):
    """NC1 scatter [C, r] and (NC4 disagreements, finite) of one padded batch."""
    scatter = nc1_projected_scatter(features, labels, stats, basis)
    if kernel is None:
        return scatter, None
    valid = labels < stats.count.shape[0]
    return scatter, nc4_disagreements(features, valid, kernel, bias, stats.mean)


def second_pass(
    stats: ClassStats,
    batches: Iterable[tuple[Any, Any]],
    kernel: Any = None,
    bias: Any = None,
    *,
    basis: tuple[jax.Array, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """NC1 (and NC4 with a classifier) from final statistics and a second read of the batches.

    Args:
        stats: statistics of all the data (e.g. from :class:`ClassStatisticsAccumulator`).
        batches: the same samples again, as ``(features [b, d], labels [b])`` pairs.
        kernel: optional [d, C] classifier weights (Flax ``Dense`` layout) for NC4.
        bias: optional [C] classifier bias (zeros when None).
        basis: ``kernels.nc1_basis(stats)`` when already computed.

    Returns:
        ``{"nc1": scalar}`` plus ``"nc4"`` (fraction of samples where the classifier
        and the nearest class mean disagree) when ``kernel`` is given.
    """
    num_classes, dim = stats.mean.shape
    dt = stats.mean.dtype
    basis, sing = _nc1_basis(stats) if basis is None else basis
    if kernel is not None:
        kernel = as_float(kernel, dt)
        bias = jnp.zeros(num_classes, dt) if bias is None else as_float(bias, dt)
    scatter, disagreements, rows, finite = None, jnp.zeros((), dt), 0, jnp.ones((), bool)
    for feats, labs in batches:
        checks.validate_inputs(feats, labs, num_classes, allow_empty_classes=True, check_finite=False)
        checks.check_features_finite(feats, row_offset=rows)
        if np.shape(feats)[1] != dim:
            raise DataError(f"features: batch has dimension {np.shape(feats)[1]}, statistics have {dim}")
        rows += int(np.shape(feats)[0])
        f, y = _padded(feats, labs, num_classes, dt)
        part, nc4_part = _second_pass_batch(f, y, stats, basis, kernel, bias)
        if scatter is None:
            scatter = part
            if nc4_part is not None:
                disagreements, finite = nc4_part
        else:
            scatter, disagreements, finite = _accumulate(scatter, disagreements, finite, part, nc4_part)
    if scatter is None:
        raise DataError("batches: no batches given for the second pass (NC1)")
    nc1, nc4 = _finish_second_pass(stats, scatter, sing, disagreements, finite, jnp.asarray(rows, dt))
    return {"nc1": nc1} if kernel is None else {"nc1": nc1, "nc4": nc4}


def nc1_from_statistics(stats: ClassStats, batches: Iterable[tuple[Any, Any]]) -> jax.Array:
    """NC1 from final statistics plus a second pass over the batches (streaming).

    Args:
        stats: statistics of all the data (e.g. from :class:`ClassStatisticsAccumulator`).
        batches: the same samples again, as ``(features [b, d], labels [b])`` pairs.

    Returns:
        Scalar NC1.
    """
    return second_pass(stats, batches)["nc1"]


def streaming_metrics(
    batches: Batches,
    num_classes: int,
    superclass_of_class: Any = None,
    *,
    kernel: Any = None,
    bias: Any = None,
    dtype: Any = None,
) -> dict[str, Any]:
    """D, MSDR, NC1, every registered statistics metric (NC2, CDNV; with a classifier NC3)
    and NC4 from batches, two passes, O(C d + b d) memory.

    Args:
        batches: zero-argument callable returning a fresh iterable of
            ``(features [b, d], labels [b])``; it is called twice (NC1 and NC4 need the
            final class means).
        num_classes: C >= 2.
        superclass_of_class: optional [C] int for MSDR.
        kernel: optional [d, C] classifier weights (Flax ``Dense`` layout); when given,
            ``"nc3"`` and ``"nc4"`` are included.
        bias: optional [C] classifier bias for NC4 (zeros when None).
        dtype: float32 (default) or float64.

    Returns:
        Same keys as :func:`~ncfine_jax.metrics.neural_collapse_metrics`, plus
        ``"statistics"`` and, with a classifier, ``"nc3"`` and ``"nc4"``.
    """
    num_classes = checks.check_num_classes(num_classes, 2)
    if superclass_of_class is not None:
        checks.validate_superclasses(superclass_of_class, num_classes)
    acc = ClassStatisticsAccumulator(num_classes, dtype=dtype)
    for feats, labs in batches():
        acc.update(feats, labs)
    stats = acc.statistics
    if kernel is not None:
        checks.validate_classifier(kernel, bias, num_classes, stats.mean.shape[1])
    elif bias is not None:
        raise ConfigError("bias: given without kernel")

    def compute(dt):
        s = ClassStats(*(jnp.asarray(x, dt) for x in stats))
        keys = tuple(m.key for m in statistics_metrics(with_classifier=kernel is not None))
        out = {"statistics": s, **_from_statistics(
            s, None if kernel is None else as_float(kernel, dt), keys)}
        out.update(second_pass(s, batches(), kernel, bias, basis=out.pop("nc1_basis")))
        if superclass_of_class is not None:
            out["msdr"] = msdr_unchecked(out["class_distance_matrix"], jnp.asarray(superclass_of_class))
        return out

    return run_in_precision(compute, dtype, True)


def chunk_rows_for(dim: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Rows per chunk so that one chunk holds about ``chunk_elements`` values (>= 1 row)."""
    return max(1, chunk_elements // max(int(dim), 1))


def array_batches(features: Any, labels: Any, chunk_rows: int) -> Callable[[], Iterator[tuple[Any, Any]]]:
    """Zero-argument callable yielding ``(features[i:i+k], labels[i:i+k])`` row chunks.

    Slices of a memory-mapped array are views: only the chunk being processed is read.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows: must be >= 1, got {chunk_rows}")
    n = np.shape(features)[0]
    if np.shape(labels)[:1] != (n,):
        raise DataError(f"labels: length {np.shape(labels)[0]} does not match features' {n} rows")

    def batches():
        for lo in range(0, n, chunk_rows):
            yield features[lo : lo + chunk_rows], np.asarray(labels[lo : lo + chunk_rows])

    return batches


def streaming_metrics_of_arrays(
    features: Any,
    labels: Any,
    num_classes: int,
    superclass_of_class: Any = None,
    *,
    kernel: Any = None,
    bias: Any = None,
    chunk_rows: int | None = None,
    dtype: Any = None,
) -> dict[str, Any]:
    """:func:`streaming_metrics` over row chunks of ``features [n, d]`` and ``labels [n]``.

    Memory is O(chunk_rows * d + C * d) beyond the inputs, which may be memory-mapped
    (``np.load(path, mmap_mode="r")``): each chunk is read twice, never the whole array.

    Args:
        features: [n, d] float array (NumPy, memmap, anything sliceable by rows).
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2.
        superclass_of_class: optional [C] int for MSDR.
        kernel, bias: optional classifier for NC3/NC4 (see :func:`streaming_metrics`).
        chunk_rows: rows per chunk (default: about 8M values per chunk).
        dtype: float32 (default) or float64.
    """
    if np.ndim(features) != 2:
        raise DataError(f"features: expected shape [n, d], got {tuple(np.shape(features))}")
    rows = chunk_rows_for(np.shape(features)[1]) if chunk_rows is None else chunk_rows
    return streaming_metrics(array_batches(features, labels, rows), num_classes, superclass_of_class,
                             kernel=kernel, bias=bias, dtype=dtype)
