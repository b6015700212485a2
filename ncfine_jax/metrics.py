"""Neural-collapse and fine-structure metrics as vectorised ``jax.numpy`` kernels.

Everything here is computed from last-layer features ``H [n, d]`` and integer labels
``y [n]`` in ``[0, C)`` through per-class sufficient statistics (:class:`ClassStats`:
counts, means, summed squared deviations), so no metric ever forms pairwise
distances or a ``d x d`` matrix:

- :func:`class_distance_matrix` (eq. 6): ``D_ij`` = mean of ``|x - y|^2`` over all
  pairs ``x`` in class ``i``, ``y`` in class ``j`` (``n_i * n_j`` pairs; for ``i == j``
  the ``n_i`` pairs ``x == y`` are included, so ``D_ii = 2 v_i``). Computed as
  ``|mu_i - mu_j|^2 + v_i + v_j`` with ``v_c`` the mean of ``|h - mu_c|^2`` over class c.
- :func:`msdr` (App. B): mean of ``D_ij`` over ``i != j`` in the same superclass,
  divided by the mean of ``D_ii`` over all ``C`` classes (see its docstring).
- :func:`nc1` (eqs. 1-2): ``(1/C) Tr(Sigma_W Sigma_B^+)`` evaluated in the span of the
  centred class means (thin SVD of the ``C x d`` mean matrix, rank cut at ``C - 1``).
- :func:`nc2` (eq. 3), :func:`nc3`, :func:`nc4`, :func:`cdnv` (Galanti et al., 2022).

jit / vmap
    Every kernel is pure ``jnp`` code and works under ``jax.jit`` and ``jax.vmap``
    with ``num_classes`` static. The public functions check their inputs with
    :func:`validate_inputs` (and friends) only when the inputs are concrete arrays;
    when they are traced (inside ``jit``/``vmap``/``grad``) the check is skipped, so
    bad values then show up as NaN rather than as an error. Call ``validate_inputs``
    yourself, outside the transform, when the data may be bad. ``*_from_statistics``
    functions never validate.

Empty classes
    A class with no samples has no mean. With concrete inputs the public functions
    raise :class:`~ncfine_jax.errors.DataError` naming the empty classes. Under
    tracing, an empty class gets ``count = 0`` and ``mean = 0`` in
    :class:`ClassStats`, its variance is ``0/0 = NaN`` and every metric that uses it
    (its row/column of ``D``, hence ``msdr``; ``nc1``; ``cdnv``) is NaN — never a
    silently wrong number. ``nc2``/``nc3``/``nc4`` would use the zero mean, so they
    must only be traced on data where every class is present.

Precision
    Float32 by default. Pass ``dtype=jnp.float64`` (or ``"float64"``) to a public
    function to compute in float64: when JAX's x64 mode is off, the call runs inside
    a scoped ``jax.enable_x64(True)`` context (global state is untouched, other
    tests are unaffected) and returns NumPy float64 arrays. Under tracing float64
    requires x64 to be enabled globally (``jax.config.update("jax_enable_x64",
    True)``); otherwise a ConfigError is raised.

Streaming
    :func:`class_statistics` of a batch plus :func:`merge_class_statistics`
    (Chan et al.'s pairwise update, stable for collapsed features) give the same
    statistics as one pass over all the data; :class:`ClassStatisticsAccumulator`
    wraps this. NC1 also needs the within-class scatter projected on the (global)
    class-mean span, so :func:`streaming_metrics` makes two passes over the batches.
    Streaming batches are zero-padded to a power-of-two length (padding rows carry
    the out-of-range label C, which segment sums drop), so a stream with a ragged
    last batch compiles a handful of times, not once per batch size.

Which function to use inside ``jax.vmap`` / ``jax.jit``
    All public functions (``class_statistics``, ``class_distance_matrix``, ``msdr``,
    ``nc1`` ... ``cdnv``, ``neural_collapse_metrics``) may be called on traced
    arrays; they then skip validation and run the same kernels. The raw kernels
    ``class_statistics_unchecked(features, labels, num_classes)`` and
    ``msdr_unchecked(distance_matrix, superclass_of_class)`` and the
    ``*_from_statistics(stats)`` functions never validate and are what to call in a
    hot vmapped loop over many small problems (e.g. the Gaussian-mixture study).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError, DataError

__all__ = [
    "ClassStats",
    "ClassStatisticsAccumulator",
    "cdnv",
    "cdnv_from_statistics",
    "cdnv_matrix_from_statistics",
    "class_distance_matrix",
    "class_statistics",
    "distance_matrix_from_statistics",
    "merge_class_statistics",
    "msdr",
    "msdr_unchecked",
    "nc1",
    "nc1_from_statistics",
    "nc2",
    "nc2_from_statistics",
    "nc3",
    "nc4",
    "neural_collapse_metrics",
    "streaming_metrics",
    "validate_classifier",
    "validate_inputs",
    "validate_superclasses",
]


class ClassStats(NamedTuple):
    """Per-class sufficient statistics (a pytree; jit/vmap friendly).

    Attributes:
        count: [C] float, number of samples per class (float so that merging is pure
            arithmetic; exact up to 2**24 samples per class in float32).
        mean: [C, d] float, class means ``mu_c`` (0 for an empty class).
        m2: [C] float, per class the sum over its samples of ``|h - mu_c|^2``.
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @property
    def variance(self) -> jax.Array:
        """[C] mean squared deviation ``v_c = m2_c / n_c`` (NaN for an empty class)."""
        return self.m2 / self.count

    @property
    def global_mean(self) -> jax.Array:
        """[d] mean over all samples (each sample weighted once, not each class)."""
        return jnp.sum(self.count[:, None] * self.mean, axis=0) / jnp.sum(self.count)


# ---------------------------------------------------------------------------------------
# Validation (plain NumPy / Python; never traced)
# ---------------------------------------------------------------------------------------


def _is_concrete(*xs: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for x in xs for leaf in jax.tree.leaves(x))


def _check_num_classes(num_classes: Any, minimum: int = 1) -> int:
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)):
        raise ConfigError(f"num_classes: expected an int, got {type(num_classes).__name__}")
    if num_classes < minimum:
        raise ConfigError(f"num_classes: must be >= {minimum}, got {num_classes}")
    return int(num_classes)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
    # One pass over the features on device; much cheaper than np.isfinite on host.
    return jnp.all(jnp.isfinite(x))


def _leaf_all_finite(x: Any) -> bool:
    # Device arrays are scanned on device; host arrays on the host, in their own dtype
    # (casting float64 host data to float32 could turn large finite values into inf).
    if isinstance(x, jax.Array):
        return not jnp.issubdtype(x.dtype, jnp.floating) or bool(_all_finite(x))
    x = np.asarray(x)
    return not np.issubdtype(x.dtype, np.floating) or bool(np.isfinite(x).all())


def _check_features_finite(features: Any, name: str = "features") -> None:
    if not _leaf_all_finite(features):
        rows = np.nonzero(~np.isfinite(np.asarray(features)).all(axis=1))[0]
        raise DataError(f"{name}: {rows.size} row(s) contain NaN or inf, e.g. row {int(rows[0])}")


def _tree_all_finite(tree: Any) -> bool:
    return all(_leaf_all_finite(leaf) for leaf in jax.tree.leaves(tree))


def validate_inputs(
    features: Any,
    labels: Any,
    num_classes: int,
    *,
    allow_empty_classes: bool = False,
    min_classes: int = 1,
    check_finite: bool = True,
) -> None:
    """Checks features/labels for a metric; raises one-line errors. Not traceable.

    Args:
        features: [n, d] real array.
        labels: [n] integer array with values in ``[0, num_classes)``.
        num_classes: number of classes C (a Python int).
        allow_empty_classes: if False (default), a class with no samples is an error.
        min_classes: smallest allowed ``num_classes`` (2 for metrics between classes).
        check_finite: scan the features for NaN/inf (one pass over them). The public
            metrics skip this and scan only when their result is not finite, which
            non-finite features always cause, so valid data pays nothing for it.

    Raises:
        ConfigError: ``num_classes`` is not an int >= ``min_classes``.
        DataError: wrong shapes or dtypes, mismatched lengths, no samples, labels
            outside ``[0, C)``, NaN/inf features, or (unless allowed) empty classes.
    """
    num_classes = _check_num_classes(num_classes, min_classes)
    if not _is_concrete(features, labels):
        raise ConfigError("validate_inputs: inputs are traced; validate concrete arrays outside jit/vmap")
    f_shape = np.shape(features)
    l_shape = np.shape(labels)
    if len(f_shape) != 2:
        raise DataError(f"features: expected shape [n, d], got {tuple(f_shape)}")
    if len(l_shape) != 1:
        raise DataError(f"labels: expected shape [n], got {tuple(l_shape)}")
    if f_shape[0] != l_shape[0]:
        raise DataError(f"labels: length {l_shape[0]} does not match features' {f_shape[0]} rows")
    if f_shape[0] == 0 or f_shape[1] == 0:
        raise DataError(f"features: empty array of shape {tuple(f_shape)}")
    # Read dtypes without np.asarray(features): that would copy device arrays to host.
    f_dtype = np.dtype(features.dtype if hasattr(features, "dtype") else np.asarray(features).dtype)
    l_dtype = np.dtype(labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype)
    if not (np.issubdtype(f_dtype, np.floating) or np.issubdtype(f_dtype, np.integer)):
        raise DataError(f"features: expected a real numeric dtype, got {f_dtype}")
    if not np.issubdtype(l_dtype, np.integer):
        raise DataError(f"labels: expected an integer dtype, got {l_dtype}")
    labels_np = np.asarray(labels)
    if labels_np.min() < 0 or labels_np.max() >= num_classes:
        bad = labels_np[(labels_np < 0) | (labels_np >= num_classes)]
        raise DataError(
            f"labels: {bad.size} value(s) outside [0, {num_classes}), e.g. {int(bad[0])}"
        )
    if check_finite:
        _check_features_finite(features)
    if not allow_empty_classes:
        counts = np.bincount(labels_np, minlength=num_classes)
        empty = np.nonzero(counts == 0)[0]
        if empty.size:
            shown = ", ".join(str(int(c)) for c in empty[:10]) + (", ..." if empty.size > 10 else "")
            raise DataError(
                f"labels: {empty.size} of {num_classes} classes have no samples ({shown}); "
                "metrics need every class present"
            )


def validate_superclasses(superclass_of_class: Any, num_classes: int) -> None:
    """Checks a superclass assignment for :func:`msdr`; raises DataError. Not traceable.

    Args:
        superclass_of_class: [C] integer array, the superclass id of each class.
        num_classes: C.
    """
    s = np.asarray(superclass_of_class)
    if s.shape != (num_classes,):
        raise DataError(f"superclass_of_class: expected shape [{num_classes}], got {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise DataError(f"superclass_of_class: expected an integer dtype, got {s.dtype}")
    _, sizes = np.unique(s, return_counts=True)
    if not (sizes > 1).any():
        raise DataError(
            "superclass_of_class: every superclass holds one class; "
            "MSDR needs a superclass with >= 2 classes"
        )


def _validate_distance_matrix(distance_matrix: Any) -> None:
    d = np.asarray(distance_matrix)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 2:
        raise DataError(f"distance_matrix: expected shape [C, C] with C >= 2, got {d.shape}")
    if not np.isfinite(d).all():
        raise DataError("distance_matrix: contains NaN or inf")


def validate_classifier(kernel: Any, bias: Any, num_classes: int, dim: int) -> None:
    """Checks a Flax ``Dense`` classifier's parameters; raises DataError. Not traceable.

    Args:
        kernel: [d, C] weights as stored by ``flax.linen.Dense`` (``params["classifier"]["kernel"]``).
        bias: [C] bias, or None.
        num_classes: C.
        dim: d, the feature dimension.
    """
    k = np.asarray(kernel)
    if k.shape != (dim, num_classes):
        raise DataError(f"kernel: expected shape [{dim}, {num_classes}] (Flax Dense layout), got {k.shape}")
    if not np.isfinite(k).all():
        raise DataError("kernel: contains NaN or inf")
    if bias is not None:
        b = np.asarray(bias)
        if b.shape != (num_classes,):
            raise DataError(f"bias: expected shape [{num_classes}], got {b.shape}")
        if not np.isfinite(b).all():
            raise DataError("bias: contains NaN or inf")


# ---------------------------------------------------------------------------------------
# Precision handling
# ---------------------------------------------------------------------------------------


def _resolve_dtype(dtype: Any) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ConfigError(f"dtype: not a dtype: {dtype!r}") from e
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _x64_enabled() -> bool:
    # Attribute access, not jax.config.read(): read() refuses flags that have a context
    # manager and works for this one only through a special case jax marks for removal.
    return bool(jax.config.jax_enable_x64)


def _precision_scope(dtype: np.dtype, concrete: bool):
    """Context in which arrays of ``dtype`` can be created; see module docstring."""
    if dtype == np.float64 and not _x64_enabled():
        if not concrete:
            raise ConfigError(
                "dtype: float64 under jit/vmap needs jax_enable_x64=True; "
                "call the metric on concrete arrays or enable x64 globally"
            )
        # Public scoped switch (jax >= 0.8; pyproject requires >= 0.10.2).
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _run(fn: Callable[..., Any], dtype: Any, concrete: bool, *args: Any) -> Any:
    """Runs ``fn(*args)`` in the requested precision, with float inputs cast to it."""
    dt = _resolve_dtype(dtype)
    scoped = dt == np.float64 and not _x64_enabled()
    with _precision_scope(dt, concrete):
        out = fn(dt, *args)
        if scoped:
            # Leave the x64 scope with host arrays, not float64 device arrays.
            out = jax.tree.map(np.asarray, out)
        return out


def _as_features(features: Any, dt: np.dtype) -> jax.Array:
    return jnp.asarray(features).astype(dt)


def _as_labels(labels: Any) -> jax.Array:
    return jnp.asarray(labels).astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# Kernels (pure jnp; jit/vmap-compatible; no validation)
# ---------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames="num_classes")
def class_statistics_unchecked(features: jax.Array, labels: jax.Array, num_classes: int) -> ClassStats:
    """Kernel of :func:`class_statistics` (no validation, no dtype casting).

    Two reads of the batch: segment sums give counts and means, then the squared
    deviations from the class means are summed. The second read (instead of
    ``sum |h|^2 - n |mu|^2``) keeps float32 accurate when features are collapsed,
    i.e. when the within-class spread is tiny next to ``|mu_c|``.
    """
    count = jax.ops.segment_sum(
        jnp.ones(labels.shape, features.dtype), labels, num_segments=num_classes
    )
    sums = jax.ops.segment_sum(features, labels, num_segments=num_classes)
    mean = sums / jnp.maximum(count, 1)[:, None]
    dev = features - _gather_rows(mean, labels)
    m2 = jax.ops.segment_sum(jnp.sum(dev * dev, axis=-1), labels, num_segments=num_classes)
    return ClassStats(count, mean, m2)


# Up to this many classes, ``mean[labels]`` is done as a one-hot matmul on CPU, where
# XLA's row gather is several times slower than a small matmul (measured: 50k x 512,
# C = 10: ~90 ms gather vs ~14 ms one-hot, 2-core CPU). The one-hot product is exact:
# each output element is 1.0 * mu plus exact zeros (HIGHEST precision keeps it exact
# on accelerators too, where TF32/bf16 passes would otherwise round mu).
_ONE_HOT_GATHER_MAX_CLASSES = 128


def _gather_rows(table: jax.Array, index: jax.Array) -> jax.Array:
    """``table[index]`` for a small [C, d] table and [n] indices in range -> [n, d]."""
    num_rows = table.shape[0]
    if num_rows <= _ONE_HOT_GATHER_MAX_CLASSES and jax.default_backend() == "cpu":
        one_hot = jax.nn.one_hot(index, num_rows, dtype=table.dtype)
        return jnp.matmul(one_hot, table, precision=jax.lax.Precision.HIGHEST)
    return table[index]


def merge_class_statistics(a: ClassStats, b: ClassStats) -> ClassStats:
    """Statistics of the union of two disjoint sample sets (pure jnp; jit-able).

    Uses the pairwise update of Chan, Golub & LeVeque (1979):
    ``m2 = m2_a + m2_b + |mu_b - mu_a|^2 n_a n_b / n``, exact in real arithmetic and
    stable in float32. Classes empty in both stay empty (count 0, mean 0, m2 0).
    """
    n = a.count + b.count
    frac_b = b.count / jnp.maximum(n, 1)
    delta = b.mean - a.mean
    mean = a.mean + delta * frac_b[:, None]
    m2 = a.m2 + b.m2 + jnp.sum(delta * delta, axis=-1) * a.count * frac_b
    return ClassStats(n, mean, m2)


def distance_matrix_from_statistics(stats: ClassStats) -> jax.Array:
    """Eq. (6) from statistics: ``D_ij = |mu_i - mu_j|^2 + v_i + v_j``, [C, C].

    The squared mean distances are taken directly as differences (C^2 d work), not
    as ``|a|^2 + |b|^2 - 2 a.b``, so they stay exact when class means nearly coincide.
    """
    var = stats.variance
    return _squared_mean_distances(stats) + var[:, None] + var[None, :]


def _squared_mean_distances(stats: ClassStats) -> jax.Array:
    """[C, C] ``|mu_i - mu_j|^2``, as differences (exact when means nearly coincide)."""
    diff = stats.mean[:, None, :] - stats.mean[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


@jax.jit
def msdr_unchecked(distance_matrix: jax.Array, superclass_of_class: jax.Array) -> jax.Array:
    """Kernel of :func:`msdr` (no validation); vmap over leading axes works."""
    d = jnp.asarray(distance_matrix)
    s = jnp.asarray(superclass_of_class)
    num_classes = d.shape[-1]
    same = (s[..., :, None] == s[..., None, :]) & ~jnp.eye(num_classes, dtype=bool)
    within = jnp.sum(jnp.where(same, d, 0), axis=(-2, -1)) / jnp.sum(same, axis=(-2, -1))
    diag = jnp.mean(jnp.diagonal(d, axis1=-2, axis2=-1), axis=-1)
    return within / diag


def _centred_means(stats: ClassStats) -> jax.Array:
    return stats.mean - stats.global_mean[None, :]


def _nc1_projected_scatter(
    features: jax.Array, labels: jax.Array, stats: ClassStats, basis: jax.Array
) -> jax.Array:
    """Per-class sums of squared projections of ``h - mu_y`` on ``basis`` rows: [C, r]."""
    # (h - mu_y) . v is formed as h . v - (mu_y . v): an [n, d] x [d, r] product and an
    # [n, r] gather, never an [n, d] temporary (on CPU, materialising h - mu_y costs
    # ~8x more than the product). The subtraction cancels the class-mean part; the
    # float32 error of each term is ~eps * |h| |v| (|v| = 1), so NC1 carries an
    # absolute error of order (eps |h| / s_k)^2, far below any NC1 seen in practice.
    proj = features @ basis.T - _gather_rows(stats.mean @ basis.T, labels)
    return jax.ops.segment_sum(proj * proj, labels, num_segments=stats.count.shape[0])


# Largest s_max^2 / s_min^2 (over the kept directions) for which NC1 takes the basis
# from the Gram matrix; see _nc1_basis.
_GRAM_MAX_CONDITION = 1e3


def _nc1_basis(stats: ClassStats) -> tuple[jax.Array, jax.Array]:
    """Top ``r = min(C-1, d)`` right singular vectors [r, d] and values [r] of M.

    ``M`` [C, d] are the centred class means; ``Sigma_B = M^T M / C = V S^2 V^T / C``.
    Explicit cut-off: ``Sigma_B`` has rank <= C-1 (the centred means sum to zero when
    weighted by counts), so the C-th singular value is rounding noise and is dropped
    by rank, never by a tolerance.

    Two exact-in-real-arithmetic routes, chosen at run time by ``lax.cond``:
    - well conditioned (``s_max^2 / s_r^2 <= 1e3``, e.g. near-ETF means): eigenvectors
      ``U`` of the C x C Gram matrix ``M M^T``; ``V^T = U^T M`` row-normalised and
      ``s_k = |u_k^T M|``. Relative error of NC1 about ``eps * s_max^2 / s_r^2``
      (<= 6e-5 in float32).
    - otherwise: Householder QR ``M^T = Q R`` then the SVD of the small ``R^T``
      (backward stable, error about ``eps * s_max / s_r``). On CPU this LAPACK route
      costs ~2-4x more inside the fused kernel at C = 100, d = 2048, so it is only
      taken when needed.
    """
    m = _centred_means(stats)
    num_classes, dim = m.shape
    rank = min(num_classes - 1, dim)
    gram = jnp.matmul(m, m.T, precision=jax.lax.Precision.HIGHEST)
    evals, evecs = jnp.linalg.eigh(gram)  # ascending
    evals = evals[::-1][:rank]
    evecs = evecs[:, ::-1][:, :rank]
    well_conditioned = (evals[-1] > 0) & (evals[0] <= _GRAM_MAX_CONDITION * evals[-1])

    def from_gram(m):
        b = jnp.matmul(evecs.T, m, precision=jax.lax.Precision.HIGHEST)  # rows ~ s_k v_k
        sing = jnp.linalg.norm(b, axis=1)
        return b / sing[:, None], sing

    def from_qr(m):
        q, r = jnp.linalg.qr(m.T)
        _, sing, wt = jnp.linalg.svd(r.T, full_matrices=False)
        return (wt @ q.T)[:rank], sing[:rank]

    return jax.lax.cond(well_conditioned, from_gram, from_qr, m)


def _nc1_finish(stats: ClassStats, scatter: jax.Array, sing: jax.Array) -> jax.Array:
    # (V^T Sigma_W V)_kk = (1/C) sum_c (1/n_c) sum_{i in c} ((h_i - mu_c) . v_k)^2
    sw_diag = jnp.mean(scatter / stats.count[:, None], axis=0)
    # (1/C) Tr(Sigma_W Sigma_B^+) with Sigma_B^+ = C V S^-2 V^T  =>  sum_k sw_kk / s_k^2
    return jnp.sum(sw_diag / (sing * sing))


def _nc1_from_statistics(stats: ClassStats, features: jax.Array, labels: jax.Array) -> jax.Array:
    """NC1 of the samples whose one-shot statistics are ``stats`` (one more read of them)."""
    basis, sing = _nc1_basis(stats)
    return _nc1_finish(stats, _nc1_projected_scatter(features, labels, stats, basis), sing)


def _kernel_from_statistics(metric: Callable[..., Any]) -> Callable[..., Any]:
    """Jitted ``kernel(features, labels, num_classes) = metric(stats, features, labels)``
    with the class statistics computed once."""
    def kernel(features, labels, num_classes):
        stats = class_statistics_unchecked(features, labels, num_classes)
        return metric(stats, features, labels)

    return jax.jit(kernel, static_argnames="num_classes")


_nc1_kernel = _kernel_from_statistics(_nc1_from_statistics)


_nc1_basis_jit = jax.jit(_nc1_basis)
_nc1_projected_scatter_jit = jax.jit(_nc1_projected_scatter)


def _pad_batch(features: jax.Array, labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Pads a batch to the next power of two rows so streaming compiles O(log n) times.

    Padded rows get label ``num_classes``: ``segment_sum`` drops out-of-range
    segments, so they add nothing to any statistic.
    """
    n = features.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    if size == n:
        return features, labels
    features = jnp.pad(features, ((0, size - n), (0, 0)))
    labels = jnp.pad(labels, (0, size - n), constant_values=num_classes)
    return features, labels


def nc1_from_statistics(
    stats: ClassStats, batches: Iterable[tuple[Any, Any]]
) -> jax.Array:
    """NC1 from final statistics plus a second pass over the batches (streaming).

    Args:
        stats: statistics of all the data (e.g. from :class:`ClassStatisticsAccumulator`).
        batches: the same samples again, as ``(features [b, d], labels [b])`` pairs.

    Returns:
        Scalar NC1.
    """
    num_classes, dim = stats.mean.shape
    basis, sing = _nc1_basis_jit(stats)
    scatter = None
    for feats, labs in batches:
        validate_inputs(feats, labs, num_classes, allow_empty_classes=True)
        if np.shape(feats)[1] != dim:
            raise DataError(f"features: batch has dimension {np.shape(feats)[1]}, statistics have {dim}")
        feats, labs = _pad_batch(_as_features(feats, stats.mean.dtype), _as_labels(labs), num_classes)
        part = _nc1_projected_scatter_jit(feats, labs, stats, basis)
        scatter = part if scatter is None else scatter + part
    if scatter is None:
        raise DataError("batches: no batches given for the second NC1 pass")
    return _nc1_finish(stats, scatter, sing)


def nc2_from_statistics(stats: ClassStats) -> jax.Array:
    """Eq. (3): ``|| G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F`` with ``G = M M^T``.

    ``M`` [C, d] are the class means centred by the global mean; 0 means the centred
    means form a simplex equiangular tight frame (equal norms, pairwise cosines -1/(C-1)).
    """
    m = _centred_means(stats)
    num_classes = m.shape[0]
    gram = m @ m.T
    etf = (jnp.eye(num_classes, dtype=m.dtype) - 1.0 / num_classes) / jnp.sqrt(
        jnp.asarray(num_classes - 1, m.dtype)
    )
    return jnp.linalg.norm(gram / jnp.linalg.norm(gram) - etf)


def cdnv_matrix_from_statistics(stats: ClassStats) -> jax.Array:
    """[C, C] CDNV ``(v_i + v_j) / (2 |mu_i - mu_j|^2)``; diagonal set to 0."""
    var = stats.variance
    sq = _squared_mean_distances(stats)
    eye = jnp.eye(sq.shape[0], dtype=bool)
    return jnp.where(eye, 0.0, (var[:, None] + var[None, :]) / (2 * jnp.where(eye, 1.0, sq)))


def cdnv_from_statistics(stats: ClassStats) -> jax.Array:
    """Mean CDNV over the ``C (C-1) / 2`` unordered pairs of distinct classes."""
    mat = cdnv_matrix_from_statistics(stats)
    num_classes = mat.shape[0]
    return jnp.sum(mat) / (num_classes * (num_classes - 1))


def _nc3_kernel(stats: ClassStats, kernel: jax.Array) -> jax.Array:
    # Papyan et al. (2020): || W / ||W||_F - M / ||M||_F ||_F^2, W = kernel^T [C, d].
    w = kernel.T
    m = _centred_means(stats)
    diff = w / jnp.linalg.norm(w) - m / jnp.linalg.norm(m)
    return jnp.sum(diff * diff)


# ---------------------------------------------------------------------------------------
# Public entry points (validate when concrete, then call a kernel)
# ---------------------------------------------------------------------------------------


def _public(
    kernel: Callable[..., Any],
    features: Any,
    labels: Any,
    num_classes: Any,
    dtype: Any,
    validate: bool,
    min_classes: int,
    *extra: Any,
    allow_empty_classes: bool = False,
) -> Any:
    """Validate (if concrete) -> ``kernel(features, labels, num_classes, *extra)``.

    Float inputs (features and float ``extra`` arrays) are cast to the requested
    dtype. The NaN/inf scan of the features runs only when the result is not finite
    (every kernel here turns a non-finite feature into a non-finite result), so the
    error names the bad rows while valid data is read once, by the kernel.
    """
    num_classes = _check_num_classes(num_classes, min_classes)
    concrete = _is_concrete(features, labels, *extra)
    check = validate and concrete
    if check:
        validate_inputs(
            features,
            labels,
            num_classes,
            min_classes=min_classes,
            check_finite=False,
            allow_empty_classes=allow_empty_classes,
        )

    def fn(dt, f, y, *e):
        e = [None if a is None else _as_features(a, dt) for a in e]
        return kernel(_as_features(f, dt), _as_labels(y), num_classes, *e)

    out = _run(fn, dtype, concrete, features, labels, *extra)
    if check and not _tree_all_finite(out):
        _check_features_finite(features)
    return out


def class_statistics(
    features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True
) -> ClassStats:
    """Per-class counts, means and summed squared deviations, by segment sums.

    Combine batches with :func:`merge_class_statistics` (or
    :class:`ClassStatisticsAccumulator`) to get the one-shot statistics without
    holding all features in memory.

    Args:
        features: [n, d] float features.
        labels: [n] int class labels in ``[0, num_classes)``.
        num_classes: C (static under jit).
        dtype: float32 (default) or float64; see module docstring.
        validate: check inputs when concrete (every class must be present; use
            :class:`ClassStatisticsAccumulator` for batches lacking some classes).

    Returns:
        :class:`ClassStats` with ``count [C]``, ``mean [C, d]``, ``m2 [C]``.
    """
    return _public(class_statistics_unchecked, features, labels, num_classes, dtype, validate, 1)


_distance_kernel = _kernel_from_statistics(lambda stats, *_: distance_matrix_from_statistics(stats))


def class_distance_matrix(
    features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True
) -> jax.Array:
    """Class-distance matrix D of eq. (6), in O(n d + C^2 d) time, O(C d) extra memory.

    ``D_ij`` is the mean of ``|x - y|^2`` over all ``n_i n_j`` pairs with ``x`` in
    class i and ``y`` in class j; for ``i == j`` the pairs ``x == y`` are included, so
    ``D_ii = 2 v_i`` where ``v_i`` is the mean squared distance to the class mean.
    Computed as ``|mu_i - mu_j|^2 + v_i + v_j``, never from pairwise distances.

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C (static under jit).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        [C, C] symmetric matrix, in squared feature units.
    """
    return _public(_distance_kernel, features, labels, num_classes, dtype, validate, 1)


def msdr(distance_matrix: Any, superclass_of_class: Any, *, validate: bool = True) -> jax.Array:
    """Mean squared distance ratio (App. B).

    ``MSDR = mean_{i != j, s(i) = s(j)} D_ij / mean_i D_ii``: the numerator averages
    ``D`` over ordered pairs of distinct classes in the same superclass; the
    denominator averages the diagonal over **all** C classes (classes alone in their
    superclass included; for the paper's coarse CIFAR-10/100 settings every
    superclass holds >= 2 classes, so the two readings coincide). MSDR well above 1
    means classes merged into one training label stay farther apart than samples
    within a class: fine structure survives.

    Args:
        distance_matrix: [..., C, C] from :func:`class_distance_matrix` (leading batch
            axes allowed, e.g. from ``jax.vmap``).
        superclass_of_class: [..., C] int, superclass id of each original class, e.g.
            ``LabelMapping.label_of_class``. Some superclass must hold >= 2 classes
            (otherwise the result is NaN under tracing, an error when concrete).
        validate: check inputs when concrete (2-D matrices only).

    Returns:
        Scalar (or [...]) ratio, dimensionless.
    """
    if validate and _is_concrete(distance_matrix, superclass_of_class) and np.ndim(distance_matrix) == 2:
        _validate_distance_matrix(distance_matrix)
        validate_superclasses(superclass_of_class, np.shape(distance_matrix)[0])
    return msdr_unchecked(jnp.asarray(distance_matrix), jnp.asarray(superclass_of_class))


def nc1(features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True) -> jax.Array:
    """NC1 = (1/C) Tr(Sigma_W Sigma_B^+), eqs. (1)-(2), without any d x d matrix.

    ``Sigma_W = (1/C) sum_c (1/n_c) sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T`` and
    ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` with ``mu_G`` the mean over
    all samples. ``Sigma_B^+`` is the pseudo-inverse truncated at rank
    ``r = min(C-1, d)`` (by rank, not by a tolerance): with ``M = U S V^T`` the thin SVD
    of the centred means [C, d], NC1 = ``sum_{k < r} (v_k^T Sigma_W v_k) / s_k^2``,
    which needs one ``[n, d] x [d, r]`` product. If the class means span fewer than
    ``r`` dimensions the result is huge or inf (the metric is then ill-defined, as with
    an exact rank-r pseudo-inverse). Invariant to scaling the features.

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar, dimensionless; 0 for perfectly collapsed features.
    """
    return _public(_nc1_kernel, features, labels, num_classes, dtype, validate, 2)


_nc2_kernel = _kernel_from_statistics(lambda stats, *_: nc2_from_statistics(stats))


def nc2(features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True) -> jax.Array:
    """NC2, eq. (3): distance of the centred class-mean Gram matrix from a simplex ETF.

    ``|| M M^T / ||M M^T||_F - (I_C - 11^T/C) / sqrt(C-1) ||_F`` with ``M`` [C, d] the
    class means minus the global mean. 0 for a simplex ETF (equal norms, pairwise
    cosines -1/(C-1)); invariant to scaling and rotating the features.

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar in ``[0, 2]``.
    """
    return _public(_nc2_kernel, features, labels, num_classes, dtype, validate, 2)


_cdnv_kernel = _kernel_from_statistics(lambda stats, *_: cdnv_from_statistics(stats))


def cdnv(features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True) -> jax.Array:
    """Class-distance normalised variance (Galanti, György & Hutter, 2022).

    ``CDNV(i, j) = (v_i + v_j) / (2 |mu_i - mu_j|^2)`` with ``v_c`` the mean squared
    distance of class-c features to their mean, averaged over all pairs ``i < j``.

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar, dimensionless; 0 for collapsed features.
    """
    return _public(_cdnv_kernel, features, labels, num_classes, dtype, validate, 2)


@partial(jax.jit, static_argnames="num_classes")
def _nc3_jit(features, labels, num_classes, kernel):
    return _nc3_kernel(class_statistics_unchecked(features, labels, num_classes), kernel)


def nc3(
    features: Any,
    labels: Any,
    num_classes: int,
    kernel: Any,
    *,
    dtype: Any = None,
    validate: bool = True,
) -> jax.Array:
    """NC3, self-duality: ``|| W/||W||_F - M/||M||_F ||_F^2`` (Papyan et al., 2020).

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        kernel: [d, C] classifier weights in Flax ``Dense`` layout
            (``params["classifier"]["kernel"]``); ``W = kernel.T`` [C, d].
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar in ``[0, 4]``; 0 when the classifier rows are proportional to the
        centred class means.
    """
    if validate and _is_concrete(kernel):
        validate_classifier(kernel, None, _check_num_classes(num_classes), np.shape(features)[-1])
    return _public(_nc3_jit, features, labels, num_classes, dtype, validate, 2, kernel)


@partial(jax.jit, static_argnames="num_classes")
def _nc4_jit(features, labels, num_classes, kernel, bias, class_means):
    if class_means is None:
        class_means = class_statistics_unchecked(features, labels, num_classes).mean
    logits = features @ kernel + bias
    # argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 h.mu_c); |h|^2 is common to all c.
    ncc_score = jnp.sum(class_means * class_means, axis=-1) - 2.0 * (features @ class_means.T)
    disagree = jnp.argmax(logits, axis=-1) != jnp.argmin(ncc_score, axis=-1)
    # Logits are non-finite iff some feature is (given finite parameters); returned so
    # the caller's lazy NaN/inf check sees them.
    finite = jnp.all(jnp.isfinite(logits)) & jnp.all(jnp.isfinite(ncc_score))
    return jnp.where(finite, jnp.mean(disagree.astype(features.dtype)), jnp.nan)


def nc4(
    features: Any,
    labels: Any,
    num_classes: int,
    kernel: Any,
    bias: Any,
    *,
    class_means: Any = None,
    dtype: Any = None,
    validate: bool = True,
) -> jax.Array:
    """NC4: fraction of samples where the classifier and the nearest class centre disagree.

    The classifier predicts ``argmax_c (h @ kernel + bias)_c`` (bias included); the
    nearest-class-centre rule predicts ``argmin_c |h - mu_c|``. 0 means full agreement.
    Ties go to the lowest class index in both rules.

    Args:
        features: [n, d] float, the samples to classify.
        labels: [n] int in ``[0, num_classes)``; used only for the class means (any
            valid labels, e.g. zeros, when ``class_means`` is given).
        num_classes: C >= 2 (static under jit).
        kernel: [d, C] classifier weights (Flax ``Dense`` layout).
        bias: [C] classifier bias (zeros for a bias-free head).
        class_means: optional [C, d] means to use instead of those of ``features``
            (e.g. training means when ``features`` are test features).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar in ``[0, 1]`` (NaN if features are non-finite under tracing).
    """
    if validate and _is_concrete(kernel, bias, class_means):
        c = _check_num_classes(num_classes)
        dim = np.shape(features)[-1]
        validate_classifier(kernel, bias, c, dim)
        if class_means is not None:
            if np.shape(class_means) != (c, dim):
                raise DataError(f"class_means: expected shape [{c}, {dim}], got {np.shape(class_means)}")
            if not np.isfinite(np.asarray(class_means)).all():
                raise DataError("class_means: contains NaN or inf")
    return _public(
        _nc4_jit,
        features,
        labels,
        num_classes,
        dtype,
        validate,
        2,
        kernel,
        bias,
        class_means,
        allow_empty_classes=class_means is not None,
    )


@partial(jax.jit, static_argnames="num_classes")
def _all_kernel(features, labels, num_classes, superclass_of_class):
    stats = class_statistics_unchecked(features, labels, num_classes)
    dist = distance_matrix_from_statistics(stats)
    out = {
        "class_distance_matrix": dist,
        "nc1": _nc1_from_statistics(stats, features, labels),
        "nc2": nc2_from_statistics(stats),
        "cdnv": cdnv_from_statistics(stats),
    }
    if superclass_of_class is not None:
        out["msdr"] = msdr_unchecked(dist, superclass_of_class)
    return out


def neural_collapse_metrics(
    features: Any,
    labels: Any,
    num_classes: int,
    superclass_of_class: Any = None,
    *,
    dtype: Any = None,
    validate: bool = True,
) -> dict[str, jax.Array]:
    """D, MSDR, NC1, NC2 and CDNV in one compiled call (statistics computed once).

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        superclass_of_class: optional [C] int; when given, ``"msdr"`` is included.
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Dict with ``"class_distance_matrix"`` [C, C], ``"nc1"``, ``"nc2"``, ``"cdnv"``
        and optionally ``"msdr"`` (scalars).
    """
    if superclass_of_class is not None:
        if validate and _is_concrete(superclass_of_class):
            validate_superclasses(superclass_of_class, _check_num_classes(num_classes, 2))
        superclass_of_class = jnp.asarray(superclass_of_class).astype(jnp.int32)

    def kernel(f, y, c, _unused=None):
        return _all_kernel(f, y, c, superclass_of_class)

    return _public(kernel, features, labels, num_classes, dtype, validate, 2)


# ---------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------


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
        self.num_classes = _check_num_classes(num_classes)
        self._dtype = _resolve_dtype(dtype)
        self._stats: ClassStats | None = None
        self._merge = jax.jit(merge_class_statistics)

    def update(self, features: Any, labels: Any) -> None:
        """Adds a batch: features [b, d] float, labels [b] int in [0, C)."""
        validate_inputs(features, labels, self.num_classes, allow_empty_classes=True)
        if self._stats is not None and np.shape(features)[1] != self._stats.mean.shape[1]:
            raise DataError(
                f"features: batch has dimension {np.shape(features)[1]}, "
                f"earlier batches {self._stats.mean.shape[1]}"
            )

        def fn(dt, f, y, prev):
            f, y = _pad_batch(_as_features(f, dt), _as_labels(y), self.num_classes)
            part = class_statistics_unchecked(f, y, self.num_classes)
            return part if prev is None else self._merge(prev, part)

        # In scoped float64 mode _run hands back NumPy arrays; keep them that way.
        self._stats = ClassStats(*_run(fn, self._dtype, True, features, labels, self._stats))

    @property
    def statistics(self) -> ClassStats:
        """The merged :class:`ClassStats`; raises DataError if any class is empty."""
        if self._stats is None:
            raise DataError("batches: no batches were added")
        empty = np.nonzero(np.asarray(self._stats.count) == 0)[0]
        if empty.size:
            raise DataError(f"labels: classes {empty[:10].tolist()} have no samples in any batch")
        return self._stats


def streaming_metrics(
    batches: Callable[[], Iterable[tuple[Any, Any]]],
    num_classes: int,
    superclass_of_class: Any = None,
    *,
    dtype: Any = None,
) -> dict[str, Any]:
    """D, MSDR, NC1, NC2 and CDNV from batches, two passes, O(C d + b d) memory.

    Args:
        batches: zero-argument callable returning a fresh iterable of
            ``(features [b, d], labels [b])``; it is called twice (NC1 needs the
            final class means before projecting the within-class scatter).
        num_classes: C >= 2.
        superclass_of_class: optional [C] int for MSDR.
        dtype: float32 (default) or float64.

    Returns:
        Same keys as :func:`neural_collapse_metrics`, plus ``"statistics"``.
    """
    num_classes = _check_num_classes(num_classes, 2)
    if superclass_of_class is not None:
        validate_superclasses(superclass_of_class, num_classes)
    acc = ClassStatisticsAccumulator(num_classes, dtype=dtype)
    for feats, labs in batches():
        acc.update(feats, labs)
    stats = acc.statistics

    def fn(dt, stats, s):
        stats = ClassStats(*(jnp.asarray(x, dt) for x in stats))
        dist = jax.jit(distance_matrix_from_statistics)(stats)
        out = {
            "statistics": stats,
            "class_distance_matrix": dist,
            "nc1": nc1_from_statistics(stats, batches()),
            "nc2": jax.jit(nc2_from_statistics)(stats),
            "cdnv": jax.jit(cdnv_from_statistics)(stats),
        }
        if s is not None:
            out["msdr"] = msdr_unchecked(dist, jnp.asarray(s))
        return out

    return _run(fn, dtype, True, stats, superclass_of_class)
