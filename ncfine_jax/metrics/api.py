"""Public metric functions on features and labels: check once, then run a kernel.

Each function (1) checks its inputs with :mod:`~ncfine_jax.metrics.checks` when they
are concrete, (2) runs a jitted kernel from :mod:`~ncfine_jax.metrics.kernels` in the
requested precision (:mod:`~ncfine_jax.metrics.precision`), and (3) only when the result
is not finite scans the features for NaN/inf to name the bad row (every kernel turns a
non-finite feature into a non-finite result, so valid data is read once, by the kernel).
Traced inputs (inside jit/vmap/grad) skip the checks and run the same kernels.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.metrics import checks
from ncfine_jax.metrics.kernels import (ClassStats, centred_means, class_statistics_unchecked,
                                        cdnv_from_statistics,
                                        distance_matrix_from_statistics, msdr_unchecked,
                                        nc1_from_samples, nc2_from_statistics, nc3_from_statistics,
                                        nc4_disagreements)
from ncfine_jax.metrics.registry import EPOCH_METRICS, statistics_metrics
from ncfine_jax.metrics.precision import as_float, as_labels, resolve_dtype, run_in_precision

# Why a metric of finite features in range is not finite (``_call``'s ``undefined``).
_MEANS_SPAN_TOO_FEW = ("the centred class means span fewer than min(C-1, d) dimensions (e.g. "
                       "they coincide), so Sigma_B^+ is undefined")
_MEANS_COINCIDE = "the class means coincide (M M^T = 0), so NC2 is undefined"
_TWO_MEANS_COINCIDE = "two class means coincide (|mu_i - mu_j| = 0), so CDNV is undefined"


def _of_features(metric: Callable[[ClassStats, jax.Array, jax.Array], Any]) -> Callable[..., Any]:
    """Jitted ``kernel(features, labels, num_classes, *extra)`` computing the class
    statistics once and handing them to ``metric(stats, features, labels, *extra)``."""

    def kernel(features, labels, num_classes, *extra):
        stats = class_statistics_unchecked(features, labels, num_classes)
        return metric(stats, features, labels, *extra)

    return jax.jit(kernel, static_argnames="num_classes")


def _means_spread(stats: ClassStats) -> jax.Array:
    """``max_c |mu_c - mu_G| / max(max_c |mu_c|, sqrt(max_c v_c))`` (Euclidean norms, v_c
    the class's mean squared distance to its mean): near the dtype's rounding (NaN when
    every feature is 0) when the class means coincide, and every metric of the centred
    means is rounding noise."""
    scale = jnp.maximum(jnp.max(jnp.linalg.norm(stats.mean, axis=1)),
                        jnp.sqrt(jnp.max(stats.variance)))
    return jnp.max(jnp.linalg.norm(centred_means(stats), axis=1)) / scale


# Metrics of the centred class means return (value, spread) for _call's check.
_distance_kernel = _of_features(lambda stats, *_: distance_matrix_from_statistics(stats))
_nc1_kernel = _of_features(lambda stats, f, y: (nc1_from_samples(stats, f, y),
                                                _means_spread(stats)))
_nc2_kernel = _of_features(lambda stats, *_: (nc2_from_statistics(stats), _means_spread(stats)))
_cdnv_kernel = _of_features(lambda stats, *_: (cdnv_from_statistics(stats), _means_spread(stats)))
_nc3_kernel = _of_features(lambda stats, f, y, kernel: (nc3_from_statistics(stats, kernel),
                                                        _means_spread(stats)))


def _nc4_metric(stats, features, labels, kernel, bias, class_means=None):
    means = stats.mean if class_means is None else class_means
    count, finite = nc4_disagreements(features, jnp.ones(labels.shape, bool), kernel, bias, means)
    # NaN when some logit or score is not finite, so the lazy NaN/inf scan sees it.
    return jnp.where(finite, count / features.shape[0], jnp.nan)


_nc4_kernel = _of_features(_nc4_metric)


def _all_metrics(stats, features, labels, superclass_of_class=None, *, keys=()):
    dist = distance_matrix_from_statistics(stats)
    out = {"class_distance_matrix": dist, "nc1": nc1_from_samples(stats, features, labels)}
    out.update({key: EPOCH_METRICS[key].compute(stats) for key in keys})
    if superclass_of_class is not None:
        out["msdr"] = msdr_unchecked(dist, superclass_of_class)
    return out


@functools.lru_cache(maxsize=None)
def _all_kernel(keys: tuple[str, ...]) -> Callable[..., Any]:
    """The one compiled call of every registered statistics metric ``keys`` (one program
    per set of registered metrics)."""
    return _of_features(functools.partial(_all_metrics, keys=keys))


def _call(
    kernel: Callable[..., Any],
    features: Any,
    labels: Any,
    num_classes: Any,
    *,
    dtype: Any,
    validate: bool,
    min_classes: int,
    floats: tuple = (),
    ints: tuple = (),
    allow_empty_classes: bool = False,
    metric: str = "metric",
    undefined: str = "the features overflow the computation dtype",
    spread_out: bool = False,
) -> Any:
    """Check (if concrete) -> ``kernel(features, labels, C, *floats, *ints)`` in ``dtype``.

    ``floats`` (None allowed) are cast to the computation dtype, ``ints`` to int32. A
    result that is not finite from checked inputs is a DataError naming the cause: NaN/inf
    features, values or squares overflowing ``dtype``, else ``undefined`` (``metric``'s
    degenerate case). With ``spread_out`` the kernel returns (result, ``_means_spread``)
    and checked class means that coincide to rounding are a DataError too.
    """
    num_classes = checks.check_num_classes(num_classes, min_classes)
    concrete = checks.is_concrete(features, labels, *floats, *ints)
    checked = validate and concrete
    if checked:
        checks.validate_inputs(features, labels, num_classes, min_classes=min_classes,
                               check_finite=False, allow_empty_classes=allow_empty_classes)

    def compute(dt):
        extra = [None if a is None else as_float(a, dt) for a in floats]
        extra += [None if a is None else as_labels(a) for a in ints]
        return kernel(as_float(features, dt), as_labels(labels), num_classes, *extra)

    out = run_in_precision(compute, dtype, concrete)
    out, spread = out if spread_out else (out, None)
    if checked and not checks.tree_all_finite(out):
        checks.check_features_finite(features)
        checks.explain_not_finite(features, resolve_dtype(dtype), metric, undefined)
    if checked and spread is not None:
        checks.check_means_spread(float(spread), resolve_dtype(dtype), metric)
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
        dtype: float32 (default) or float64; see :mod:`ncfine_jax.metrics.precision`.
        validate: check inputs when concrete (every class must be present; use
            :class:`ClassStatisticsAccumulator` for batches lacking some classes).

    Returns:
        :class:`ClassStats` with ``count [C]``, ``mean [C, d]``, ``m2 [C]``.
    """
    return _call(class_statistics_unchecked, features, labels, num_classes, dtype=dtype,
                 validate=validate, min_classes=1, metric="class_statistics")


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
    return _call(_distance_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=1, metric="class_distance_matrix")


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
        validate: check inputs when concrete: shape [..., C, C], finite, >= 0, some
            D_ii > 0 per matrix (DataError otherwise); the superclasses of 2-D matrices.

    Returns:
        Scalar (or [...]) ratio, dimensionless.
    """
    if validate and checks.is_concrete(distance_matrix, superclass_of_class):
        checks.validate_distance_matrix(distance_matrix)
        if np.ndim(distance_matrix) == 2:
            checks.validate_superclasses(superclass_of_class, np.shape(distance_matrix)[0])
    return msdr_unchecked(jnp.asarray(distance_matrix), jnp.asarray(superclass_of_class))


def nc1(features: Any, labels: Any, num_classes: int, *, dtype: Any = None, validate: bool = True) -> jax.Array:
    """NC1 = (1/C) Tr(Sigma_W Sigma_B^+), eqs. (1)-(2), without any d x d matrix.

    ``Sigma_W = (1/C) sum_c (1/n_c) sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T`` and
    ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` with ``mu_G`` the mean over
    all samples. ``Sigma_B^+`` is the pseudo-inverse truncated at rank
    ``r = min(C-1, d)`` (by rank, not by a tolerance): with ``M = U S V^T`` the thin SVD
    of the centred means [C, d], NC1 = ``sum_{k < r} (v_k^T Sigma_W v_k) / s_k^2``,
    which needs one ``[n, d] x [d, r]`` product. If the class means span fewer than
    ``r`` dimensions the result is huge, or when not finite a DataError (the metric is
    then ill-defined, as with an exact rank-r pseudo-inverse). Float64 features beyond
    float32's range need ``dtype=np.float64`` (else a DataError naming the overflow). Invariant to scaling the features.

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Scalar, dimensionless; 0 for perfectly collapsed features.
    """
    return _call(_nc1_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, metric="nc1", undefined=_MEANS_SPAN_TOO_FEW, spread_out=True)


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
    return _call(_nc2_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, metric="nc2", undefined=_MEANS_COINCIDE, spread_out=True)


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
    return _call(_cdnv_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, metric="cdnv", undefined=_TWO_MEANS_COINCIDE, spread_out=True)


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
    if validate and checks.is_concrete(kernel):
        checks.validate_classifier(kernel, None, checks.check_num_classes(num_classes), np.shape(features)[-1])
    return _call(_nc3_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, floats=(kernel,), metric="nc3", spread_out=True,
                 undefined="the centred class means or the classifier are all 0, so "
                           "M/||M|| or W/||W|| is undefined")


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
    if validate and checks.is_concrete(kernel, bias, class_means):
        c = checks.check_num_classes(num_classes)
        dim = np.shape(features)[-1]
        checks.validate_classifier(kernel, bias, c, dim)
        if class_means is not None:
            checks.validate_class_means(class_means, c, dim)
    return _call(_nc4_kernel, features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, floats=(kernel, bias, class_means),
                 allow_empty_classes=class_means is not None, metric="nc4",
                 undefined="some logit or distance to a class centre is not finite")


def neural_collapse_metrics(
    features: Any,
    labels: Any,
    num_classes: int,
    superclass_of_class: Any = None,
    *,
    dtype: Any = None,
    validate: bool = True,
) -> dict[str, jax.Array]:
    """D, MSDR, NC1 and every registered statistics metric that needs no classifier (NC2,
    CDNV: ``metrics.registry``) in one compiled call (statistics computed once).

    Args:
        features: [n, d] float.
        labels: [n] int in ``[0, num_classes)``.
        num_classes: C >= 2 (static under jit).
        superclass_of_class: optional [C] int; when given, ``"msdr"`` is included.
        dtype: float32 (default) or float64.
        validate: check inputs when concrete.

    Returns:
        Dict with ``"class_distance_matrix"`` [C, C], ``"nc1"``, the registered statistics
        metrics (``"nc2"``, ``"cdnv"``, ...) and optionally ``"msdr"`` (scalars).
    """
    if superclass_of_class is not None and validate and checks.is_concrete(superclass_of_class):
        checks.validate_superclasses(superclass_of_class, checks.check_num_classes(num_classes, 2))
    keys = tuple(m.key for m in statistics_metrics(with_classifier=False))
    return _call(_all_kernel(keys), features, labels, num_classes, dtype=dtype, validate=validate,
                 min_classes=2, ints=(superclass_of_class,), metric="neural_collapse_metrics",
                 undefined=f"{_MEANS_SPAN_TOO_FEW}, or every class is collapsed (MSDR)")
