"""Input checks for the metrics, run once at the boundary on concrete arrays.

Each check raises a one-line :class:`~ncfine_jax.errors.DataError` (bad data) or
:class:`~ncfine_jax.errors.ConfigError` (bad argument) naming the input. None of them
is traceable: the public functions call them only when their inputs are concrete.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError, DataError


def is_concrete(*xs: Any) -> bool:
    """True when no leaf of ``xs`` is a tracer (i.e. not inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for x in xs for leaf in jax.tree.leaves(x))


def check_num_classes(num_classes: Any, minimum: int = 1) -> int:
    """``num_classes`` as an int >= ``minimum``, else ConfigError."""
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


def tree_all_finite(tree: Any) -> bool:
    """Whether every float leaf of ``tree`` is free of NaN/inf."""
    return all(_leaf_all_finite(leaf) for leaf in jax.tree.leaves(tree))


def check_features_finite(features: Any, name: str = "features", row_offset: int = 0) -> None:
    """DataError naming the first row with NaN/inf (``row_offset`` added to row numbers)."""
    if not _leaf_all_finite(features):
        rows = np.nonzero(~np.isfinite(np.asarray(features)).all(axis=1))[0]
        raise DataError(
            f"{name}: {rows.size} row(s) contain NaN or inf, e.g. row {int(rows[0]) + row_offset}"
        )


def explain_not_finite(features: Any, dtype: np.dtype, metric: str, undefined: str) -> None:
    """DataError saying why ``metric`` of finite ``features`` came out NaN/inf in ``dtype``.

    Called only after the result was not finite (valid data never pays for the scan):
    values beyond ``dtype``'s range, squared distances beyond it, or else ``undefined``
    (the metric's own degenerate case, e.g. coinciding class means).
    """
    big = float(np.max(np.abs(np.asarray(features, np.float64)))) if np.size(features) else 0.0
    limit = float(np.finfo(dtype).max)
    name = np.dtype(dtype).name
    fix = "rescale them" + (" or pass dtype=np.float64" if name == "float32" else "")
    if big > limit:
        raise DataError(f"features: values up to {big:.3g} overflow {name} (largest "
                        f"{limit:.3g}) in {metric}; {fix}")
    if big * big * np.shape(features)[-1] > limit:
        raise DataError(f"features: squared distances of values up to {big:.3g} overflow "
                        f"{name} in {metric}; {fix}")
    if 0 < big and big * big < float(np.finfo(dtype).tiny):
        raise DataError(f"features: squares of values up to {big:.3g} underflow {name} in "
                        f"{metric}; rescale them")
    raise DataError(f"{metric}: not finite for these features: {undefined}")


# Class means whose spread around the global mean is at most this many rounding units of
# their magnitude coincide (100 eps: 1.2e-5 in float32, as the analysis pipeline's rule).
MEANS_COINCIDE_EPS = 100


def check_means_spread(spread: float, dtype: np.dtype, metric: str) -> None:
    """DataError when the class means coincide: ``spread`` (max distance of a class mean
    to the global mean over the features' scale; NaN when every feature is 0) is within
    rounding of ``dtype``."""
    if not spread > MEANS_COINCIDE_EPS * float(np.finfo(dtype).eps):
        raise DataError(f"{metric}: the class means coincide (spread {spread:.2g} of their "
                        f"scale, {np.dtype(dtype).name} rounding), so {metric.upper()} of "
                        "the centred means is undefined")


def _dtype_of(x: Any) -> np.dtype:
    # Read dtypes without np.asarray(x): that would copy device arrays to host.
    return np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)


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
    num_classes = check_num_classes(num_classes, min_classes)
    if not is_concrete(features, labels):
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
    f_dtype, l_dtype = _dtype_of(features), _dtype_of(labels)
    if not (np.issubdtype(f_dtype, np.floating) or np.issubdtype(f_dtype, np.integer)):
        raise DataError(f"features: expected a real numeric dtype, got {f_dtype}")
    if not np.issubdtype(l_dtype, np.integer):
        raise DataError(f"labels: expected an integer dtype, got {l_dtype}")
    labels_np = np.asarray(labels)
    if labels_np.min() < 0 or labels_np.max() >= num_classes:
        bad = labels_np[(labels_np < 0) | (labels_np >= num_classes)]
        raise DataError(f"labels: {bad.size} value(s) outside [0, {num_classes}), e.g. {int(bad[0])}")
    if check_finite:
        check_features_finite(features)
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
    """Checks a superclass assignment for MSDR; raises DataError. Not traceable.

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


def validate_distance_matrix(distance_matrix: Any) -> None:
    """Checks a [..., C, C] matrix of mean squared distances for MSDR; raises DataError.

    C >= 2, finite, no negative entry (squared distances), and in each matrix some
    diagonal entry > 0: MSDR divides by the mean diagonal, which is 0 only when every
    class is collapsed to a point (one collapsed class alone is valid, D_ii = 0).
    """
    d = np.asarray(distance_matrix)
    if d.ndim < 2 or d.shape[-1] != d.shape[-2] or d.shape[-1] < 2:
        raise DataError(f"distance_matrix: expected shape [C, C] with C >= 2, got {d.shape}")
    if not np.isfinite(d).all():
        raise DataError("distance_matrix: contains NaN or inf")
    if (d < 0).any():
        raise DataError(f"distance_matrix: {int((d < 0).sum())} negative entries (e.g. "
                        f"{float(d[d < 0].flat[0]):.3g}); expected mean squared distances >= 0")
    diagonal = np.diagonal(d, axis1=-2, axis2=-1)
    if (diagonal == 0).all(axis=-1).any():
        raise DataError("distance_matrix: the diagonal is all 0 (every class collapsed to a "
                        "point), so MSDR = mean same-superclass D_ij / mean D_ii is undefined")


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


def validate_class_means(class_means: Any, num_classes: int, dim: int) -> None:
    """Checks [C, d] class means given to NC4 (finite, right shape); raises DataError."""
    if np.shape(class_means) != (num_classes, dim):
        raise DataError(f"class_means: expected shape [{num_classes}, {dim}], got {np.shape(class_means)}")
    if not np.isfinite(np.asarray(class_means)).all():
        raise DataError("class_means: contains NaN or inf")
