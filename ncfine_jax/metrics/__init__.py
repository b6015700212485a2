"""Neural-collapse and fine-structure metrics as vectorised ``jax.numpy`` kernels.

Everything is computed from last-layer features ``H [n, d]`` and integer labels
``y [n]`` in ``[0, C)`` through per-class sufficient statistics (:class:`ClassStats`:
counts, means, summed squared deviations), so no metric ever forms pairwise
distances or a ``d x d`` matrix:

- :func:`class_distance_matrix` (eq. 6): ``D_ij`` = mean of ``|x - y|^2`` over all
  pairs ``x`` in class ``i``, ``y`` in class ``j`` (``D_ii = 2 v_i``), computed as
  ``|mu_i - mu_j|^2 + v_i + v_j``.
- :func:`msdr` (App. B): mean of ``D_ij`` over ``i != j`` in the same superclass,
  divided by the mean of ``D_ii`` over all ``C`` classes.
- :func:`nc1` (eqs. 1-2): ``(1/C) Tr(Sigma_W Sigma_B^+)`` in the span of the centred
  class means (rank cut at ``C - 1``).
- :func:`nc2` (eq. 3), :func:`nc3`, :func:`nc4`, :func:`cdnv` (Galanti et al., 2022).

Layout:
  kernels    pure jnp kernels on :class:`ClassStats` (no checks, no casting); the
             ``*_from_statistics`` functions, ``class_statistics_unchecked`` and
             ``msdr_unchecked`` are what to call in a hot vmapped loop
  checks     input validation, run once at the boundary on concrete arrays
  precision  float32 default; ``dtype=float64`` in a scoped x64 context
  api        the public functions on features and labels
  streaming  accumulator, two-pass :func:`streaming_metrics` (NC1-NC4, D, MSDR, CDNV)
             and :func:`streaming_metrics_of_arrays` over chunks of memory-mapped arrays

jit / vmap
    Every public function works under ``jax.jit`` and ``jax.vmap`` with
    ``num_classes`` static. Inputs are validated only when concrete; when traced the
    checks are skipped, so bad values then show up as NaN rather than as an error.
    Call :func:`validate_inputs` yourself, outside the transform, when the data may
    be bad. ``*_from_statistics`` functions never validate.

Empty classes
    With concrete inputs the public functions raise
    :class:`~ncfine_jax.errors.DataError` naming the empty classes. Under tracing, an
    empty class gets ``count = 0`` and ``mean = 0``; its variance is ``0/0 = NaN`` and
    every metric that uses it (its row/column of ``D``, hence ``msdr``; ``nc1``;
    ``cdnv``) is NaN, never a silently wrong number. ``nc2``/``nc3``/``nc4`` would use
    the zero mean, so they must only be traced on data where every class is present.

Precision
    Float32 by default. ``dtype=jnp.float64`` (or ``"float64"``) computes in float64:
    when JAX's x64 mode is off, the call runs inside a scoped ``jax.enable_x64(True)``
    context and returns NumPy float64 arrays. Under tracing float64 requires x64 to
    be enabled globally; otherwise a ConfigError is raised.
"""

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "api": [
        "cdnv", "class_distance_matrix", "class_statistics", "msdr", "nc1", "nc2", "nc3",
        "nc4", "neural_collapse_metrics",
    ],
    "checks": [
        "validate_class_means", "validate_classifier", "validate_inputs",
        "validate_superclasses",
    ],
    "kernels": [
        "ClassStats", "cdnv_from_statistics", "cdnv_matrix_from_statistics",
        "class_statistics_unchecked", "distance_matrix_from_statistics",
        "merge_class_statistics", "msdr_unchecked", "nc2_from_statistics",
        "nc3_from_statistics",
    ],
    "streaming": [
        "ClassStatisticsAccumulator", "array_batches", "nc1_from_statistics",
        "streaming_metrics", "streaming_metrics_of_arrays",
    ],
})
