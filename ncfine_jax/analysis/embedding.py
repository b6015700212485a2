"""Two-dimensional views of features: t-SNE (openTSNE or scikit-learn) and PCA.

t-SNE input is first reduced to ``pca_dims`` (default 50) principal components,
the usual preprocessing (van der Maaten's reference code and openTSNE's guide do
this): neighbour search in 512 dimensions is the slowest part and the discarded
components carry little of the local structure t-SNE keeps.

Backends: openTSNE (Barnes-Hut below 2,000 points, FFT-accelerated gradients
above; several times faster than scikit-learn on large inputs, see
``benchmarks/analysis_bench.py``) when importable, else scikit-learn's Barnes-Hut
t-SNE. Both are seeded and give the same result for the same seed and input on the same machine. Where openTSNE is not
installed, ``backend="sklearn"`` is used, so it is the one that must always work.

t-SNE of points that all coincide is undefined (both libraries scale the PCA
initialisation by its standard deviation, 0 here: openTSNE returns NaN and
scikit-learn crashes the process), so :func:`tsne` refuses such input and callers
check :func:`all_rows_equal` first.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from ncfine_jax.analysis.probe import check_features
from ncfine_jax.errors import NcfineError

Backend = Literal["opentsne", "sklearn"]


def opentsne_available() -> bool:
    """Whether openTSNE can be imported."""
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


def default_tsne_backend() -> Backend:
    return "opentsne" if opentsne_available() else "sklearn"


# Spread (largest per-dimension range) at or below this fraction of the largest |value|
# counts as no spread: float32 rounding noise of identical values.
_CONSTANT_RTOL = 1e-6


def all_rows_equal(features: np.ndarray) -> bool:
    """Whether every row of ``features [n, d]`` is the same point (up to float32 rounding).

    Such features (a collapsed label, or a network whose features became constant)
    have no 2-D embedding, no principal direction and one cluster.
    """
    x = np.asarray(features)
    if x.shape[0] < 2:
        return True
    lo, hi = x.min(axis=0), x.max(axis=0)
    spread = float(np.max(hi.astype(np.float64) - lo))
    scale = float(max(np.max(np.abs(hi)), np.max(np.abs(lo))))
    return spread <= _CONSTANT_RTOL * scale


def pca(features: np.ndarray, n_components: int = 2, seed: int = 0) -> np.ndarray:
    """Project features onto their top principal components.

    Args:
        features: [n, d] float.
        n_components: output dimension (clipped to min(n, d)).
        seed: seeds the randomized SVD scikit-learn may choose for large inputs.

    Returns:
        [n, min(n_components, n, d)] float32 coordinates.
    """
    from sklearn.decomposition import PCA

    x = check_features(features).astype(np.float64)
    if n_components < 1:
        raise NcfineError(f"n_components: must be >= 1, got {n_components}")
    k = min(n_components, x.shape[0], x.shape[1])
    return PCA(n_components=k, random_state=seed).fit_transform(x).astype(np.float32)


def tsne(
    features: np.ndarray,
    seed: int = 0,
    backend: Backend | None = None,
    perplexity: float = 30.0,
    pca_dims: int | None = 50,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Embed features in 2-D with t-SNE.

    Args:
        features: [n, d] float, n >= 2.
        seed: random seed (PCA initialisation makes the layout stable; the seed fixes
            the neighbour search and any sampling).
        backend: "opentsne", "sklearn", or None for openTSNE when importable.
        perplexity: t-SNE perplexity; lowered to (n - 1) / 3 for tiny inputs, which
            both libraries require.
        pca_dims: reduce to this many principal components first (None: no PCA).
        n_jobs: threads (None: 1 below 2,000 points, else all cores). Small inputs
            run far slower multi-threaded on a busy machine.

    Returns:
        [n, 2] float32 embedding.
    """
    x = check_features(features).astype(np.float64)
    n = x.shape[0]
    if n < 2:
        raise NcfineError(f"features: t-SNE needs at least 2 points, got {n}")
    if all_rows_equal(x):
        raise NcfineError(f"features: all {n} points coincide; t-SNE is undefined for them")
    backend = backend or default_tsne_backend()
    if backend not in ("opentsne", "sklearn"):
        raise NcfineError(f"backend: unknown t-SNE backend {backend!r}; choose 'opentsne' or 'sklearn'")
    if backend == "opentsne" and not opentsne_available():
        raise NcfineError("backend: 'opentsne' asked for but openTSNE is not installed; use 'sklearn'")
    if n < 4:
        # Perplexity must stay below the number of neighbours; for 2-3 points
        # there is nothing to learn, so a PCA layout is the honest answer.
        out = np.zeros((n, 2), np.float32)
        p = pca(x, 2, seed)
        out[:, : p.shape[1]] = p
        return out
    if pca_dims is not None and x.shape[1] > pca_dims:
        x = pca(x, min(pca_dims, n), seed).astype(np.float64)
    perplexity = float(min(perplexity, (n - 1) / 3.0))
    if n_jobs is None:
        n_jobs = 1 if n < 2000 else (os.cpu_count() or 1)

    if backend == "opentsne":
        import openTSNE

        emb = openTSNE.TSNE(
            n_components=2,
            perplexity=perplexity,
            initialization="pca",
            # FFT is already faster than Barnes-Hut at a few thousand points;
            # openTSNE's own "auto" switches only at 10,000.
            negative_gradient_method="bh" if n < 2000 else "fft",
            random_state=seed,
            n_jobs=n_jobs,
            verbose=False,
        ).fit(x)
        return np.asarray(emb, dtype=np.float32)

    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    # scikit-learn's Barnes-Hut gradient uses every OpenMP thread whatever n_jobs
    # says; cap it too, or small inputs crawl on a busy machine.
    with threadpool_limits(limits=n_jobs, user_api="openmp"):
        emb = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
            n_jobs=n_jobs,
        ).fit_transform(x)
    return np.asarray(emb, dtype=np.float32)
