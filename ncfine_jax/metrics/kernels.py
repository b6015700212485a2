"""Pure ``jax.numpy`` kernels on per-class statistics: no validation, no dtype casting.

Every metric is a function of :class:`ClassStats` (counts, means, summed squared
deviations), plus one more read of the samples for NC1 and NC4. Nothing here forms
pairwise distances or a ``d x d`` matrix. All functions work under ``jax.jit`` and
``jax.vmap`` (``num_classes`` static); they are what :mod:`ncfine_jax.metrics.api`
and :mod:`ncfine_jax.metrics.streaming` call after checking their inputs once.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


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


# Up to this many classes, ``mean[labels]`` is done as a one-hot matmul on CPU, where
# XLA's row gather is several times slower than a small matmul. The one-hot product is
# exact: each output element is 1.0 * mu plus exact zeros (HIGHEST precision keeps it
# exact on accelerators too, where TF32/bf16 passes would otherwise round mu).
_ONE_HOT_GATHER_MAX_CLASSES = 128


def gather_rows(table: jax.Array, index: jax.Array) -> jax.Array:
    """``table[index]`` for a small [C, k] table and [n] indices -> [n, k].

    Rows whose index is C (padding, see :func:`pad_batch`) get an arbitrary row; every
    caller drops them through ``segment_sum`` or a mask.
    """
    num_rows = table.shape[0]
    if num_rows <= _ONE_HOT_GATHER_MAX_CLASSES and jax.default_backend() == "cpu":
        one_hot = jax.nn.one_hot(index, num_rows, dtype=table.dtype)
        return jnp.matmul(one_hot, table, precision=jax.lax.Precision.HIGHEST)
    return table[index]


@partial(jax.jit, static_argnames="num_classes")
def class_statistics_unchecked(features: jax.Array, labels: jax.Array, num_classes: int) -> ClassStats:
    """:class:`ClassStats` of ``features [n, d]`` with ``labels [n]`` (no validation).

    Two reads of the batch: segment sums give counts and means, then the squared
    deviations from the class means are summed. The second read (instead of
    ``sum |h|^2 - n |mu|^2``) keeps float32 accurate when features are collapsed,
    i.e. when the within-class spread is tiny next to ``|mu_c|``. Labels equal to
    ``num_classes`` are dropped by the segment sums (used for padding rows).
    """
    count = jax.ops.segment_sum(jnp.ones(labels.shape, features.dtype), labels, num_segments=num_classes)
    sums = jax.ops.segment_sum(features, labels, num_segments=num_classes)
    mean = sums / jnp.maximum(count, 1)[:, None]
    dev = features - gather_rows(mean, labels)
    m2 = jax.ops.segment_sum(jnp.sum(dev * dev, axis=-1), labels, num_segments=num_classes)
    return ClassStats(count, mean, m2)


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


def squared_mean_distances(stats: ClassStats) -> jax.Array:
    """[C, C] ``|mu_i - mu_j|^2``, as differences (exact when means nearly coincide)."""
    diff = stats.mean[:, None, :] - stats.mean[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def distance_matrix_from_statistics(stats: ClassStats) -> jax.Array:
    """Eq. (6) from statistics: ``D_ij = |mu_i - mu_j|^2 + v_i + v_j``, [C, C].

    The squared mean distances are taken directly as differences (C^2 d work), not
    as ``|a|^2 + |b|^2 - 2 a.b``, so they stay exact when class means nearly coincide.
    """
    var = stats.variance
    return squared_mean_distances(stats) + var[:, None] + var[None, :]


@jax.jit
def msdr_unchecked(distance_matrix: jax.Array, superclass_of_class: jax.Array) -> jax.Array:
    """MSDR (see :func:`ncfine_jax.metrics.msdr`) without validation; vmap over leading axes works."""
    d = jnp.asarray(distance_matrix)
    s = jnp.asarray(superclass_of_class)
    num_classes = d.shape[-1]
    same = (s[..., :, None] == s[..., None, :]) & ~jnp.eye(num_classes, dtype=bool)
    within = jnp.sum(jnp.where(same, d, 0), axis=(-2, -1)) / jnp.sum(same, axis=(-2, -1))
    diag = jnp.mean(jnp.diagonal(d, axis1=-2, axis2=-1), axis=-1)
    return within / diag


def centred_means(stats: ClassStats) -> jax.Array:
    """[C, d] class means minus the global mean."""
    return stats.mean - stats.global_mean[None, :]


# ---------------------------------------------------------------------------------------
# NC1: basis of the class-mean span, then the within-class scatter projected on it
# ---------------------------------------------------------------------------------------

# Largest s_max^2 / s_min^2 (over the kept directions) for which NC1 takes the basis
# from the Gram matrix; see nc1_basis.
_GRAM_MAX_CONDITION = 1e3


def nc1_basis(stats: ClassStats) -> tuple[jax.Array, jax.Array]:
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
      costs more than the Gram route, so it is only taken when needed.
    """
    m = centred_means(stats)
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


def nc1_projected_scatter(
    features: jax.Array, labels: jax.Array, stats: ClassStats, basis: jax.Array
) -> jax.Array:
    """Per-class sums of squared projections of ``h - mu_y`` on ``basis`` rows: [C, r]."""
    # (h - mu_y) . v is formed as h . v - (mu_y . v): an [n, d] x [d, r] product and an
    # [n, r] gather, never an [n, d] temporary (on CPU, materialising h - mu_y costs
    # several times more than the product). The float32 error of each term is
    # ~eps * |h| |v| (|v| = 1), so NC1 carries an absolute error of order
    # (eps |h| / s_k)^2, far below any NC1 seen in practice.
    proj = features @ basis.T - gather_rows(stats.mean @ basis.T, labels)
    return jax.ops.segment_sum(proj * proj, labels, num_segments=stats.count.shape[0])


def nc1_finish(stats: ClassStats, scatter: jax.Array, sing: jax.Array) -> jax.Array:
    """NC1 from the projected scatter [C, r] and the singular values [r] of the means."""
    # (V^T Sigma_W V)_kk = (1/C) sum_c (1/n_c) sum_{i in c} ((h_i - mu_c) . v_k)^2
    sw_diag = jnp.mean(scatter / stats.count[:, None], axis=0)
    # (1/C) Tr(Sigma_W Sigma_B^+) with Sigma_B^+ = C V S^-2 V^T  =>  sum_k sw_kk / s_k^2
    return jnp.sum(sw_diag / (sing * sing))


def nc1_from_samples(stats: ClassStats, features: jax.Array, labels: jax.Array) -> jax.Array:
    """NC1 of the samples whose statistics are ``stats`` (one more read of them)."""
    basis, sing = nc1_basis(stats)
    return nc1_finish(stats, nc1_projected_scatter(features, labels, stats, basis), sing)


# ---------------------------------------------------------------------------------------
# NC2, CDNV, NC3, NC4
# ---------------------------------------------------------------------------------------


def nc2_from_statistics(stats: ClassStats) -> jax.Array:
    """Eq. (3): ``|| G/||G||_F - (I - 11^T/C)/sqrt(C-1) ||_F`` with ``G = M M^T``.

    ``M`` [C, d] are the class means centred by the global mean; 0 means the centred
    means form a simplex equiangular tight frame (equal norms, pairwise cosines -1/(C-1)).
    """
    m = centred_means(stats)
    num_classes = m.shape[0]
    gram = m @ m.T
    etf = (jnp.eye(num_classes, dtype=m.dtype) - 1.0 / num_classes) / jnp.sqrt(
        jnp.asarray(num_classes - 1, m.dtype)
    )
    return jnp.linalg.norm(gram / jnp.linalg.norm(gram) - etf)


def cdnv_matrix_from_statistics(stats: ClassStats) -> jax.Array:
    """[C, C] CDNV ``(v_i + v_j) / (2 |mu_i - mu_j|^2)``; diagonal set to 0."""
    var = stats.variance
    sq = squared_mean_distances(stats)
    eye = jnp.eye(sq.shape[0], dtype=bool)
    return jnp.where(eye, 0.0, (var[:, None] + var[None, :]) / (2 * jnp.where(eye, 1.0, sq)))


def cdnv_from_statistics(stats: ClassStats) -> jax.Array:
    """Mean CDNV over the ``C (C-1) / 2`` unordered pairs of distinct classes."""
    mat = cdnv_matrix_from_statistics(stats)
    num_classes = mat.shape[0]
    return jnp.sum(mat) / (num_classes * (num_classes - 1))


def nc3_from_statistics(stats: ClassStats, kernel: jax.Array) -> jax.Array:
    """NC3 (Papyan et al., 2020): ``|| W/||W||_F - M/||M||_F ||_F^2``, ``W = kernel^T`` [C, d]."""
    w = kernel.T
    m = centred_means(stats)
    diff = w / jnp.linalg.norm(w) - m / jnp.linalg.norm(m)
    return jnp.sum(diff * diff)


def nc4_disagreements(
    features: jax.Array, valid: jax.Array, kernel: jax.Array, bias: jax.Array, class_means: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Rows where the classifier and the nearest class centre disagree.

    Args:
        features: [n, d].
        valid: [n] bool, rows to count (False for padding rows).
        kernel: [d, C], bias: [C] (classifier ``argmax(h @ kernel + bias)``).
        class_means: [C, d] (nearest-centre rule ``argmin_c |h - mu_c|``).

    Returns:
        (number of valid disagreeing rows, whether every logit and score is finite);
        ties go to the lowest class index in both rules.
    """
    logits = features @ kernel + bias
    # argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 h.mu_c); |h|^2 is common to all c.
    ncc_score = jnp.sum(class_means * class_means, axis=-1) - 2.0 * (features @ class_means.T)
    disagree = (jnp.argmax(logits, axis=-1) != jnp.argmin(ncc_score, axis=-1)) & valid
    finite = jnp.all(jnp.isfinite(logits)) & jnp.all(jnp.isfinite(ncc_score))
    return jnp.sum(disagree.astype(features.dtype)), finite


def pad_batch(features: jax.Array, labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
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
