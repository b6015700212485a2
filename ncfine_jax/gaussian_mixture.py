"""Gaussian-mixture MLP study (paper App. B and B.1), vmapped over seeds and grids.

Setting: ``C = num_clusters`` Gaussian clusters in ``R^d`` (cluster means
``mu_c ~ N(0, sigma2 I)``, inputs ``x ~ N(mu_c, I)``), coarsened into ``C / 2``
superclasses by the paper's eq. 4 (cluster ``c`` -> superclass ``c mod C/2``, so
superclass ``s`` holds clusters ``s`` and ``s + C/2``). A 2-layer MLP
``d_input -> d_hidden (ReLU) -> C/2`` is trained on the coarse labels by full-batch
gradient descent; the hidden activation is the representation, and the study measures
its MSDR over the ``C`` original clusters (``ncfine_jax.metrics.msdr``).

B.1 variant (``tau2`` given): the first ``floor(C/4)`` superclasses are "similar": a
superclass mean ``mu ~ N(0, sigma2 I)`` is drawn, then both its clusters' means as
``mu_c ~ N(mu, tau2 I)``. The other superclasses are drawn as usual. See
:func:`similar_superclasses`.

Training choices (why one learning rate works across all grids):

* Inputs are rescaled by one global scalar, their root-mean-square entry, before the
  MLP (``scale_inputs=True``). ``E|x|^2 / d = 1 + sigma2`` grows with ``sigma2``, and
  with it the curvature of the loss, so a fixed step that is stable at ``sigma2 = 64``
  barely moves at ``sigma2 = 0``. A single scalar changes no distance ratio, so it
  does not change the geometry being studied (MSDR is scale-invariant).
* NTK parameterization: ``h = relu(W1 x / sqrt(d_input) + b1)``,
  ``logits = W2 h / sqrt(d_hidden) + b2`` with ``W ~ N(0, 1)`` and zero biases. The
  tangent kernel, hence the largest stable step, is then O(1) in ``d_input`` and
  ``d_hidden``; under PyTorch-style init the classifier term grows like ``d_hidden``
  and the stable step would shrink with width. This equals standard init
  (``W1 ~ N(0, 1/d_input)``, ``W2 ~ N(0, 1/d_hidden)``) with per-layer learning
  rates ``lr / fan_in``.
* ``DEFAULT_LR = 2.0``, measured on this 2-core CPU: at ``d_input = 64`` with
  ``d_hidden`` in {16, 64, 256}, steps 0.5, 1 and 4 all trained without divergence
  over sigma2 in [0, 64] (larger steps memorize faster: at sigma2 = 0.5 the minimum
  coarse train accuracy over 2 seeds was 99.3-99.8% at lr 4 and 97.4-98.7% at lr
  0.5-1; 100% from sigma2 = 1 at lr 4, from sigma2 = 2 at every lr); at ``d_input = d_hidden = 512`` the
  loss decreased monotonically over all 1,000 steps at lr 2 (sigma2 = 0.25, 1, 64)
  and lr 4 (sigma2 = 0.25), reaching 100% accuracy. 2.0 keeps a factor-2 margin
  below the largest step tried. Weight decay is coupled L2 (added to the gradient, as
  PyTorch ``SGD(weight_decay=...)``) on all parameters.

Everything below is a pure function of its inputs; a run is determined by its integer
seed (data key and init key are both derived from it). The same seed gives the same
unit-normal draws for every ``sigma2``/``tau2`` (common random numbers), so curves over
the grid are smooth.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncfine_jax.errors import ConfigError
from ncfine_jax.metrics import class_distance_matrix, msdr

DEFAULT_LR = 2.0

Params = dict[str, jax.Array]


# ---------------------------------------------------------------------------- data


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


def _check_sizes(**sizes: Any) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{name}: must be a positive integer, got {value!r}")


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
    _check_sizes(num_clusters=num_clusters, samples_per_cluster=samples_per_cluster,
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


# ---------------------------------------------------------------------------- model


def init_mlp(key: jax.Array, d_input: int, d_hidden: int, num_outputs: int) -> Params:
    """NTK-parameterized 2-layer MLP: unit-normal weights, zero biases.

    Returns:
        {"w1": [d_input, d_hidden], "b1": [d_hidden], "w2": [d_hidden, num_outputs],
        "b2": [num_outputs]}, float32.
    """
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (d_input, d_hidden), jnp.float32),
        "b1": jnp.zeros((d_hidden,), jnp.float32),
        "w2": jax.random.normal(k2, (d_hidden, num_outputs), jnp.float32),
        "b2": jnp.zeros((num_outputs,), jnp.float32),
    }


def mlp_apply(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward pass.

    Args:
        params: from :func:`init_mlp`.
        x: [n, d_input] inputs.

    Returns:
        logits [n, K] and hidden (the representation) [n, d_hidden].
    """
    d_input, d_hidden = params["w1"].shape
    hidden = jax.nn.relu(x @ params["w1"] / math.sqrt(d_input) + params["b1"])
    logits = hidden @ params["w2"] / math.sqrt(d_hidden) + params["b2"]
    return logits, hidden


def loss_fn(params: Params, x: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the full batch (the regularizer is in the optimizer)."""
    logits, _ = mlp_apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_mlp(params: Params, x: jax.Array, labels: jax.Array, steps: int,
              lr: float | jax.Array, weight_decay: float | jax.Array = 0.0
              ) -> tuple[Params, jax.Array]:
    """Full-batch gradient descent with coupled L2 weight decay, ``lax.scan`` over steps.

    Args:
        params: initial parameters.
        x: [n, d_input] inputs; labels: [n] int training labels.
        steps: number of GD steps (static).
        lr, weight_decay: scalars (may be traced).

    Returns:
        (final params, [steps] loss before each step).
    """
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr))
    opt_state = tx.init(params)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, x, labels)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), None, length=steps)
    return params, losses


# ---------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class GMConfig:
    """Static configuration of one study (shapes, steps, learning rate).

    Attributes:
        num_clusters: C original clusters (superclasses: C / 2).
        samples_per_cluster: samples per cluster (n = C * this).
        d_input: input dimension.
        d_hidden: hidden width (representation dimension).
        steps: full-batch GD steps.
        lr: GD step size (NTK parameterization, see module docstring).
        scale_inputs: divide inputs by their global RMS entry before the MLP.
    """

    num_clusters: int = 8
    samples_per_cluster: int = 500
    d_input: int = 512
    d_hidden: int = 512
    steps: int = 1000
    lr: float = DEFAULT_LR
    scale_inputs: bool = True

    def validate(self) -> "GMConfig":
        """Raises ConfigError on a bad field; returns self."""
        _check_sizes(num_clusters=self.num_clusters, samples_per_cluster=self.samples_per_cluster,
                     d_input=self.d_input, d_hidden=self.d_hidden, steps=self.steps)
        if self.num_clusters % 2 or self.num_clusters < 4:
            raise ConfigError(f"num_clusters: must be even and >= 4, got {self.num_clusters}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: must be a finite number > 0, got {self.lr!r}")
        return self

    def validate_flags(self) -> "GMConfig":
        """``validate`` for scripts: the error names the flag (``--d-input``), not the field."""
        try:
            return self.validate()
        except ConfigError as e:
            name, rest = str(e).split(":", 1)
            raise ConfigError(f"--{name.replace('_', '-')}:{rest}") from None


def _group_msdr(dist: jax.Array, superclass_of_class: np.ndarray,
                superclasses: Sequence[int]) -> jax.Array:
    """MSDR restricted to the clusters of the given superclasses (static index set)."""
    idx = np.flatnonzero(np.isin(superclass_of_class, superclasses))
    return msdr(dist[np.ix_(idx, idx)], jnp.asarray(superclass_of_class[idx]))


def run_single(config: GMConfig, seed: int | jax.Array, sigma2: float | jax.Array,
               tau2: float | jax.Array | None = None,
               weight_decay: float | jax.Array = 0.0) -> dict[str, jax.Array]:
    """One run: draw data, train the MLP on coarse labels, measure the hidden layer.

    Pure in (seed, sigma2, tau2, weight_decay); vmap/jit friendly (``config`` and
    whether ``tau2`` is None are static).

    Returns:
        dict of scalars: ``msdr`` (all C clusters), ``msdr_similar`` and
        ``msdr_dissimilar`` (clusters of the similar / other superclasses; equal to
        groups of the same distribution when ``tau2`` is None), ``train_acc`` (final
        coarse train accuracy in [0, 1]), ``loss`` (final training loss).
    """
    key = jax.random.key(seed)
    data_key, init_key = jax.random.split(key)
    c = config.num_clusters
    x, clusters, coarse = make_gaussian_mixture(
        data_key, c, config.samples_per_cluster, config.d_input, sigma2, tau2)
    if config.scale_inputs:
        x = x * jax.lax.rsqrt(jnp.mean(x * x))
    params = init_mlp(init_key, config.d_input, config.d_hidden, c // 2)
    params, _ = train_mlp(params, x, coarse, config.steps, config.lr, weight_decay)
    logits, hidden = mlp_apply(params, x)
    super_of = coarse_of_cluster(c)
    dist = class_distance_matrix(hidden, clusters, c)
    similar = similar_superclasses(c)
    others = tuple(s for s in range(c // 2) if s not in similar)
    return {
        "msdr": msdr(dist, jnp.asarray(super_of)),
        "msdr_similar": _group_msdr(dist, super_of, similar),
        "msdr_dissimilar": _group_msdr(dist, super_of, others),
        "train_acc": jnp.mean(jnp.argmax(logits, -1) == coarse),
        "loss": optax.softmax_cross_entropy_with_integer_labels(logits, coarse).mean(),
    }


@partial(jax.jit, static_argnames=("config", "use_tau2"))
def _run_single_jit(config, seed, sigma2, tau2, weight_decay, use_tau2):
    return run_single(config, seed, sigma2, tau2 if use_tau2 else None, weight_decay)


def run_single_jit(config: GMConfig, seed: int, sigma2: float, tau2: float | None = None,
                   weight_decay: float = 0.0) -> dict[str, float]:
    """Jitted :func:`run_single` for one run (compiled once per config); returns floats.

    This is what a Python loop over seeds and grid points calls (the benchmark's
    baseline); :func:`run_sweep` does the same runs in one vmapped jit.
    """
    config.validate()
    _check_nonneg("sigma2", sigma2)
    _check_nonneg("tau2", tau2)
    _check_nonneg("weight_decay", weight_decay)
    out = _run_single_jit(config, jnp.int32(seed), jnp.float32(sigma2),
                          jnp.float32(0.0 if tau2 is None else tau2), jnp.float32(weight_decay),
                          tau2 is not None)
    return {k: float(v) for k, v in out.items()}


@partial(jax.jit, static_argnames=("config", "use_tau2", "batch_size"))
def _run_batch(config, seeds, sigma2s, tau2s, wds, use_tau2, batch_size):
    def one(args):
        seed, s2, t2, wd = args
        return run_single(config, seed, s2, t2 if use_tau2 else None, wd)

    # lax.map with batch_size vmaps inside chunks: one jit, memory bounded by the chunk.
    return jax.lax.map(one, (seeds, sigma2s, tau2s, wds), batch_size=batch_size)


def run_sweep(config: GMConfig, seeds: Sequence[int], sigma2s: Sequence[float],
              tau2s: Sequence[float] | None = None,
              weight_decays: Sequence[float] | float = 0.0,
              batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Runs every (grid point, seed) pair inside one jit, vmapped.

    The grid is the zip of ``sigma2s``, ``tau2s`` and ``weight_decays`` (scalars are
    broadcast to the grid length); every grid point is run for every seed.

    Args:
        config: static sizes.
        seeds: S integer seeds.
        sigma2s: G values of sigma2 (or one, broadcast).
        tau2s: None (App. B data) or G values of tau2 (App. B.1 data).
        weight_decays: G values or one scalar.
        batch_size: runs vmapped at once (None: all G * S). Smaller values bound
            memory; the result is the same.

    Returns:
        dict of [G, S] float arrays with the keys of :func:`run_single`.
    """
    config.validate()
    seeds = np.asarray(list(seeds), dtype=np.int64)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ConfigError("seeds: need at least one seed")
    if seeds.min() < 0 or seeds.max() >= 2**31:
        raise ConfigError("seeds: must lie in [0, 2**31)")
    grid = {"sigma2": np.atleast_1d(np.asarray(sigma2s, np.float64))}
    if tau2s is not None:
        grid["tau2"] = np.atleast_1d(np.asarray(tau2s, np.float64))
    grid["weight_decay"] = np.atleast_1d(np.asarray(weight_decays, np.float64))
    sizes = {k: v.size for k, v in grid.items()}
    num_grid = max(sizes.values())
    for name, arr in grid.items():
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"{name}: grid must be a non-empty list of numbers")
        if arr.size not in (1, num_grid):
            raise ConfigError(f"{name}: grid has {arr.size} values, expected 1 or {num_grid}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ConfigError(f"{name}: values must be finite and >= 0, got {arr.tolist()}")
        grid[name] = np.broadcast_to(arr, (num_grid,))
    if batch_size is not None:
        _check_sizes(batch_size=batch_size)
    num_seeds = seeds.size
    total = num_grid * num_seeds

    def flat(arr):  # grid-major, seed-minor
        return jnp.asarray(np.repeat(arr, num_seeds), jnp.float32)

    tau2_flat = flat(grid["tau2"]) if tau2s is not None else jnp.zeros((total,), jnp.float32)
    out = _run_batch(config, jnp.asarray(np.tile(seeds, num_grid), jnp.int32),
                     flat(grid["sigma2"]), tau2_flat, flat(grid["weight_decay"]),
                     tau2s is not None, None if batch_size is None else min(batch_size, total))
    return {k: np.asarray(v, np.float64).reshape(num_grid, num_seeds) for k, v in out.items()}


# ---------------------------------------------------------------------------- reference


def numpy_reference_run(config: GMConfig, x: np.ndarray, coarse_labels: np.ndarray,
                        params: dict[str, np.ndarray], weight_decay: float = 0.0,
                        steps: int | None = None, dtype=np.float64
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Plain NumPy training with the same model, loss and update as :func:`train_mlp`.

    Used as a float64 reference in tests and as the single-run timing reference in
    the benchmark. Input scaling (``config.scale_inputs``) is applied here too.

    Args:
        config: sizes and lr.
        x: [n, d_input] inputs (unscaled); coarse_labels: [n] int.
        params: initial parameters (as from :func:`init_mlp`, converted to NumPy).
        weight_decay: coupled L2 coefficient.
        steps: overrides ``config.steps``.
        dtype: float dtype of the computation.

    Returns:
        (final params, [n, d_hidden] final hidden activation).
    """
    steps = config.steps if steps is None else steps
    x = np.asarray(x, dtype)
    if config.scale_inputs:
        x = x / np.sqrt(np.mean(x * x))
    p = {k: np.array(v, dtype) for k, v in params.items()}
    n = x.shape[0]
    d_in, d_h = p["w1"].shape
    a_in, a_h = 1.0 / math.sqrt(d_in), 1.0 / math.sqrt(d_h)
    onehot = np.eye(p["b2"].shape[0], dtype=dtype)[np.asarray(coarse_labels)]

    def forward(p):
        pre = x @ p["w1"] * a_in + p["b1"]
        hidden = np.maximum(pre, 0)
        return pre, hidden, hidden @ p["w2"] * a_h + p["b2"]

    for _ in range(steps):
        pre, hidden, logits = forward(p)
        logits = logits - logits.max(1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
        g_logits = (prob - onehot) / n
        g_hidden = g_logits @ p["w2"].T * a_h
        g_pre = g_hidden * (pre > 0)
        grads = {"w2": hidden.T @ g_logits * a_h, "b2": g_logits.sum(0),
                 "w1": x.T @ g_pre * a_in, "b1": g_pre.sum(0)}
        p = {k: p[k] - config.lr * (grads[k] + weight_decay * p[k]) for k in p}
    return p, forward(p)[1]


# ---------------------------------------------------------------------------- study

VARY_CHOICES = ("sigma2", "d_input", "d_hidden", "weight_decay", "tau2")
DEFAULT_SIGMA2_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DEFAULT_TAU2_GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)
DEFAULT_TAU2_SIGMA2 = 4.0  # Fig. 21: tau2 swept at sigma2 = 4
DEFAULT_VALUES = {
    "d_input": (128, 256, 512, 1024),
    "d_hidden": (128, 256, 512, 1024),
    "weight_decay": (0.0, 1e-4, 1e-3, 1e-2),
}
SPLIT_AT = 2.0  # figures split the x-axis here: linear to the left, log to the right


def _summary(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single seed) of one grid point over seeds."""
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


def run_study(vary: str, config: GMConfig, seeds: Sequence[int],
              values: Sequence[float] | None = None,
              sigma2s: Sequence[float] | None = None,
              tau2s: Sequence[float] | None = None,
              weight_decay: float = 0.0,
              batch_size: int | None = None) -> list[dict]:
    """Runs one figure's sweep and returns its records (the results.json schema).

    Args:
        vary: one of VARY_CHOICES.
        config: sizes; ``d_input``/``d_hidden`` are replaced by each value when varied.
        seeds: integer seeds, every grid point runs for each.
        values: values of the varied parameter (default: DEFAULT_VALUES; for
            ``sigma2``/``tau2`` they are the x-axis grid itself).
        sigma2s: the x-axis sigma2 grid (default DEFAULT_SIGMA2_GRID); for
            ``vary="tau2"`` exactly one value, the fixed sigma2 (default 4).
        tau2s: the tau2 grid for ``vary="tau2"`` when ``values`` is not given.
        weight_decay: fixed weight decay unless it is varied.
        batch_size: runs vmapped at once (None: a whole sweep in one vmap).

    Returns:
        list of records {"vary", "value", "sigma2", "tau2", "subclasses", "msdr_mean",
        "msdr_std", "train_acc_min"}; for ``tau2`` three records per point
        (subclasses "similar", "dissimilar", "all"), otherwise one ("all").
    """
    if vary not in VARY_CHOICES:
        raise ConfigError(f"vary: unknown {vary!r}; choose from {', '.join(VARY_CHOICES)}")
    config.validate()
    _check_nonneg("weight_decay", weight_decay)

    def grid(name, vals, default):
        arr = np.asarray(default if vals is None else list(vals), np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"{name}: empty grid")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ConfigError(f"{name}: values must be finite and >= 0, got {arr.tolist()}")
        return arr

    if vary == "tau2":
        sig = grid("sigma2", sigma2s, (DEFAULT_TAU2_SIGMA2,))
        if sig.size != 1:
            raise ConfigError(f"sigma2: --vary tau2 needs exactly one sigma2, got {sig.tolist()}")
        taus = grid("values" if values is not None else "tau2",
                    values if values is not None else tau2s, DEFAULT_TAU2_GRID)
        out = run_sweep(config, seeds, sig, taus, weight_decay, batch_size)
        records = []
        for i, t in enumerate(taus):
            for group, key in (("similar", "msdr_similar"), ("dissimilar", "msdr_dissimilar"),
                               ("all", "msdr")):
                m, s = _summary(out[key][i])
                records.append({"vary": vary, "value": float(t), "sigma2": float(sig[0]),
                                "tau2": float(t), "subclasses": group, "msdr_mean": m,
                                "msdr_std": s, "train_acc_min": float(out["train_acc"][i].min())})
        return records
    if tau2s is not None:
        raise ConfigError("tau2: only used with --vary tau2")
    if vary == "sigma2":
        sig = grid("values" if values is not None else "sigma2",
                   values if values is not None else sigma2s, DEFAULT_SIGMA2_GRID)
        line_values = [None]
    else:
        sig = grid("sigma2", sigma2s, DEFAULT_SIGMA2_GRID)
        line_values = grid("values", values, DEFAULT_VALUES[vary]).tolist()
        if vary in ("d_input", "d_hidden"):
            for v in line_values:
                if v != int(v) or v <= 0:
                    raise ConfigError(f"values: {vary} must be positive integers, got {v}")

    results = []  # (line value, [G, S] outputs)
    if vary == "weight_decay":
        # One vmapped sweep over the (weight decay x sigma2) product.
        wds = np.repeat(line_values, sig.size)
        out = run_sweep(config, seeds, np.tile(sig, len(line_values)), None, wds, batch_size)
        for j, v in enumerate(line_values):
            results.append((v, {k: a[j * sig.size:(j + 1) * sig.size] for k, a in out.items()}))
    elif vary in ("d_input", "d_hidden"):
        for v in line_values:  # new shapes, so one jit per value
            cfg = dataclasses.replace(config, **{vary: int(v)})
            results.append((v, run_sweep(cfg, seeds, sig, None, weight_decay, batch_size)))
    else:
        results.append((None, run_sweep(config, seeds, sig, None, weight_decay, batch_size)))

    records = []
    for v, out in results:
        for i, s2 in enumerate(sig):
            m, s = _summary(out["msdr"][i])
            records.append({"vary": vary, "value": float(s2 if v is None else v),
                            "sigma2": float(s2), "tau2": None, "subclasses": "all",
                            "msdr_mean": m, "msdr_std": s,
                            "train_acc_min": float(out["train_acc"][i].min())})
    return records


def plot_records(records: Sequence[dict], path, title: str | None = None):
    """Draws the layout of Figs. 18-21 and saves a PNG atomically.

    MSDR (mean over seeds, band = +-1 std) against sigma2 (tau2 for ``vary="tau2"``);
    the x-axis is split at 2: a linear panel on [min, 2] and a log panel on [2, max].
    One line per value of the varied parameter (per subclass group for tau2); a segment
    is red where the minimum train accuracy over seeds at either end is below 100%.
    """
    import io as _io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    from ncfine_jax.io import atomic_write_bytes

    if not records:
        raise ConfigError("records: nothing to plot")
    vary = records[0]["vary"]
    xkey = "tau2" if vary == "tau2" else "sigma2"
    if vary == "tau2":
        line_keys = [g for g in ("similar", "dissimilar", "all")
                     if any(r["subclasses"] == g for r in records)]
        key_of = lambda r: r["subclasses"]  # noqa: E731
        label_of = lambda k: f"{k} subclasses"  # noqa: E731
    elif vary == "sigma2":
        line_keys, key_of, label_of = ["all"], (lambda r: "all"), (lambda k: "MSDR")
    else:
        line_keys = sorted({r["value"] for r in records})
        key_of = lambda r: r["value"]  # noqa: E731
        label_of = lambda k: f"{vary} = {int(k) if vary.startswith('d_') else k:g}"  # noqa: E731
    xlabel = r"$\tau^2$" if xkey == "tau2" else r"$\sigma^2$"
    xs_all = np.array([r[xkey] for r in records])
    panels = []
    if xs_all.min() < SPLIT_AT:
        panels.append(("linear", xs_all.min(), min(SPLIT_AT, xs_all.max())))
    if xs_all.max() > SPLIT_AT or not panels:
        panels.append(("log", max(SPLIT_AT, xs_all.min()), xs_all.max()))
    # Own y-range per panel: MSDR spans ~1-3 left of the split and up to ~1 + sigma2 right of it.
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False,
                             gridspec_kw={"wspace": 0.18})
    colors = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red marks acc < 100%
    for ax, (scale, lo, hi) in zip(axes[0], panels):
        for li, k in enumerate(line_keys):
            rs = sorted((r for r in records if key_of(r) == k), key=lambda r: r[xkey])
            x = np.array([r[xkey] for r in rs])
            keep = (x >= lo) & (x <= hi)
            x = x[keep]
            m = np.array([r["msdr_mean"] for r in rs])[keep]
            s = np.array([r["msdr_std"] for r in rs])[keep]
            ok = np.array([r["train_acc_min"] >= 1.0 for r in rs])[keep]
            color = colors[li % len(colors)]
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.15, linewidth=0)
            for i in range(len(x) - 1):
                ax.plot(x[i:i + 2], m[i:i + 2], color=color if ok[i] and ok[i + 1] else "red",
                        linewidth=1.8)
            ax.scatter(x, m, s=12, color=[color if o else "red" for o in ok], zorder=3)
        ax.set_xscale(scale)
        if lo < hi:
            pad = 0.02 * (hi - lo) if scale == "linear" else 0.0
            ax.set_xlim(lo - pad, hi + pad)
        if scale == "log":  # label the grid values themselves, no 10^k minor clutter
            ticks = sorted({float(v) for v in xs_all if lo <= v <= hi})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"{xlabel} ({scale} scale)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MSDR of hidden layer (mean ± std)")
    handles = [Line2D([], [], color=colors[i % len(colors)], label=label_of(k))
               for i, k in enumerate(line_keys)]
    handles.append(Line2D([], [], color="red", label="train acc < 100%"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
