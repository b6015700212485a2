"""Gaussian-mixture data of the paper's App. B (and the B.1 ``tau2`` variant).

``C = num_clusters`` Gaussian clusters in ``R^d``: cluster means ``mu_c ~ N(0, sigma2 I)``,
inputs ``x ~ N(mu_c, I)``, coarsened into ``C / 2`` superclasses by eq. 4 (cluster ``c``
-> superclass ``c mod C/2``). With ``tau2`` the first ``floor(C/4)`` superclasses are
"similar": a superclass mean ``mu ~ N(0, sigma2 I)`` is drawn, then both its clusters'
means as ``mu_c ~ N(mu, tau2 I)`` (:func:`similar_superclasses`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ncfine_jax.errors import ConfigError
from ncfine_jax.gaussian_mixture.config import check_sizes


def coarse_of_cluster(num_clusters: int) -> np.ndarray:
    """Superclass of each cluster by eq. 4: ``c mod (C / 2)``.

    Returns:
        [C] int32.
    """
    return (np.arange(num_clusters) % (num_clusters // 2)).astype(np.int32)


def similar_superclasses(num_clusters: int) -> tuple[int, ...]:
    """Superclasses whose two clusters are "similar" in the B.1 variant.

    The first ``floor(num_coarse / 2)`` superclasses, ``num_coarse = C / 2``; for
    ``C = 8`` these are superclasses 0 and 1 (clusters {0, 4} and {1, 5}), while
    superclasses 2 and 3 (clusters {2, 6} and {3, 7}) are dissimilar.
    """
    return tuple(range((num_clusters // 2) // 2))


def _check_nonneg(name: str, value: Any) -> None:
    """Checks a concrete scalar is finite and >= 0 (tracers pass unchecked)."""
    if value is None:
        return
    try:
        arr = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced under jit/vmap: checked by the caller before tracing
    if arr.ndim != 0 or not np.isfinite(arr) or arr < 0:
        raise ConfigError(f"{name}: must be a finite number >= 0, got {value!r}")


def make_gaussian_mixture(
    key: jax.Array,
    num_clusters: int = 8,
    samples_per_cluster: int = 500,
    d_input: int = 512,
    sigma2: float | jax.Array = 1.0,
    tau2: float | jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draws the paper's Gaussian mixture (App. B; with ``tau2``, App. B.1).

    A pure function of ``key``; ``sigma2`` and ``tau2`` may be traced (jit/vmap over
    them). The unit-normal draws do not depend on ``sigma2``/``tau2``, only their
    scaling does. Samples are ordered cluster by cluster.

    Args:
        key: PRNG key.
        num_clusters: C, even, >= 2 (>= 4 with ``tau2``, so both groups exist).
        samples_per_cluster: samples per cluster.
        d_input: input dimension d.
        sigma2: variance of the (super)cluster means, >= 0.
        tau2: None for App. B; else the variance of the cluster means around their
            superclass mean for the similar superclasses (:func:`similar_superclasses`).

    Returns:
        x: [n, d] float32 inputs, ``n = C * samples_per_cluster``.
        cluster_labels: [n] int32 in [0, C).
        coarse_labels: [n] int32 in [0, C / 2), eq. 4.
    """
    check_sizes(num_clusters=num_clusters, samples_per_cluster=samples_per_cluster,
                 d_input=d_input)
    if num_clusters % 2:
        raise ConfigError(f"num_clusters: must be even (two clusters per superclass), got {num_clusters}")
    if tau2 is not None and num_clusters < 4:
        raise ConfigError(f"num_clusters: the tau2 variant needs >= 4 clusters, got {num_clusters}")
    _check_nonneg("sigma2", sigma2)
    _check_nonneg("tau2", tau2)

    k_mu, k_sup, k_x = jax.random.split(key, 3)
    num_coarse = num_clusters // 2
    z_mu = jax.random.normal(k_mu, (num_clusters, d_input), jnp.float32)
    means = jnp.sqrt(jnp.asarray(sigma2, jnp.float32)) * z_mu
    coarse = jnp.asarray(coarse_of_cluster(num_clusters))
    if tau2 is not None:
        z_sup = jax.random.normal(k_sup, (num_coarse, d_input), jnp.float32)
        similar_means = (jnp.sqrt(jnp.asarray(sigma2, jnp.float32)) * z_sup[coarse]
                         + jnp.sqrt(jnp.asarray(tau2, jnp.float32)) * z_mu)
        is_similar = jnp.isin(coarse, jnp.asarray(similar_superclasses(num_clusters)))
        means = jnp.where(is_similar[:, None], similar_means, means)
    cluster_labels = jnp.repeat(jnp.arange(num_clusters, dtype=jnp.int32), samples_per_cluster)
    noise = jax.random.normal(k_x, (num_clusters * samples_per_cluster, d_input), jnp.float32)
    x = means[cluster_labels] + noise
    return x, cluster_labels, coarse[cluster_labels]
