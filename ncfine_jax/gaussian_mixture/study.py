"""Runs of the Gaussian-mixture study: one run, vmapped sweeps, figure sweeps as records.

A run is a pure function of its integer seed (data key and init key are both derived
from it). The same seed gives the same unit-normal draws for every ``sigma2``/``tau2``
(common random numbers), so curves over the grid are smooth.

A run *diverged* when its final loss or MSDR is not finite, or its final loss is above
the loss at initialisation (the step size blew training up without overflowing). Its
outputs are kept but left out of every mean, and the records count such runs per grid
point (:func:`divergence_report`).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncfine_jax.errors import ConfigError
from ncfine_jax.gaussian_mixture.config import (DEFAULT_SIGMA2_GRID, DEFAULT_TAU2_GRID,
                                                DEFAULT_TAU2_SIGMA2, DEFAULT_VALUES,
                                                VARY_CHOICES, GMConfig, check_sizes)
from ncfine_jax.gaussian_mixture.data import (
    _check_nonneg,
    coarse_of_cluster,
    make_gaussian_mixture,
    similar_superclasses,
)
from ncfine_jax.gaussian_mixture.model import init_mlp, mlp_apply, scale_inputs, train_mlp
from ncfine_jax.metrics import class_distance_matrix, msdr

RUN_KEYS = ("msdr", "msdr_similar", "msdr_dissimilar", "train_acc", "loss", "loss_initial",
            "feature_movement", "diverged")


def _group_msdr(dist: jax.Array, superclass_of_class: np.ndarray,
                superclasses: Sequence[int]) -> jax.Array:
    """MSDR restricted to the clusters of the given superclasses (static index set)."""
    idx = np.flatnonzero(np.isin(superclass_of_class, superclasses))
    return msdr(dist[np.ix_(idx, idx)], jnp.asarray(superclass_of_class[idx]))


def feature_movement(hidden_initial: jax.Array, hidden_final: jax.Array) -> jax.Array:
    """How far training moved the representation: ``||H_T - H_0||_F / ||H_0||_F``.

    Args:
        hidden_initial, hidden_final: [n, d_hidden] hidden activations of the training
            inputs at initialisation and after the last step.

    Returns:
        Scalar >= 0, dimensionless: ~0 in the lazy (kernel) regime, O(1) when features
        are learned.
    """
    return jnp.linalg.norm(hidden_final - hidden_initial) / jnp.linalg.norm(hidden_initial)


def run_single(config: GMConfig, seed: int | jax.Array, sigma2: float | jax.Array,
               tau2: float | jax.Array | None = None,
               weight_decay: float | jax.Array = 0.0,
               lr: float | jax.Array | None = None) -> dict[str, jax.Array]:
    """One run: draw data, train the MLP on coarse labels, measure the hidden layer.

    Pure in (seed, sigma2, tau2, weight_decay, lr); vmap/jit friendly (``config`` and
    whether ``tau2`` is None are static). ``lr`` overrides ``config.learning_rate``
    (a traced step size lets one compiled program serve several).

    Returns:
        dict of scalars (keys RUN_KEYS): ``msdr`` (all C clusters), ``msdr_similar`` and
        ``msdr_dissimilar`` (clusters of the similar / other superclasses; equal to
        groups of the same distribution when ``tau2`` is None), ``train_acc`` (final
        coarse train accuracy in [0, 1]), ``loss`` (final training loss),
        ``loss_initial`` (loss at initialisation), ``feature_movement``
        (:func:`feature_movement`), ``diverged`` (1.0 if the run diverged, else 0.0).
    """
    key = jax.random.key(seed)
    data_key, init_key = jax.random.split(key)
    c = config.num_clusters
    p13n = config.parameterization
    x, clusters, coarse = make_gaussian_mixture(
        data_key, c, config.samples_per_cluster, config.d_input, sigma2, tau2)
    x = scale_inputs(x, config.input_scaling)
    params0 = init_mlp(init_key, config.d_input, config.d_hidden, c // 2, p13n)
    _, hidden0 = mlp_apply(params0, x, p13n)
    params, losses = train_mlp(params0, x, coarse, config.steps,
                               config.learning_rate if lr is None else lr, weight_decay, p13n)
    logits, hidden = mlp_apply(params, x, p13n)
    super_of = coarse_of_cluster(c)
    dist = class_distance_matrix(hidden, clusters, c)
    similar = similar_superclasses(c)
    others = tuple(s for s in range(c // 2) if s not in similar)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, coarse).mean()
    msdr_all = msdr(dist, jnp.asarray(super_of))
    # `not (loss <= initial)` is also true when either is NaN.
    diverged = ~jnp.isfinite(loss) | ~jnp.isfinite(msdr_all) | ~(loss <= losses[0])
    return {
        "msdr": msdr_all,
        "msdr_similar": _group_msdr(dist, super_of, similar),
        "msdr_dissimilar": _group_msdr(dist, super_of, others),
        "train_acc": jnp.mean(jnp.argmax(logits, -1) == coarse),
        "loss": loss,
        "loss_initial": losses[0],
        "feature_movement": feature_movement(hidden0, hidden),
        "diverged": diverged.astype(jnp.float32),
    }


def _static_part(config: GMConfig) -> GMConfig:
    """``config`` without its step size, the jit-static part (the step size is traced)."""
    return dataclasses.replace(config, lr=None)


@partial(jax.jit, static_argnames=("config", "use_tau2"))
def _run_single_jit(config, seed, sigma2, tau2, weight_decay, lr, use_tau2):
    return run_single(config, seed, sigma2, tau2 if use_tau2 else None, weight_decay, lr)


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
    out = _run_single_jit(_static_part(config), jnp.int32(seed), jnp.float32(sigma2),
                          jnp.float32(0.0 if tau2 is None else tau2), jnp.float32(weight_decay),
                          jnp.float32(config.learning_rate), tau2 is not None)
    return {k: float(v) for k, v in out.items()}


@partial(jax.jit, static_argnames=("config", "use_tau2", "batch_size"))
def _run_batch(config, seeds, sigma2s, tau2s, wds, lr, use_tau2, batch_size):
    def one(args):
        seed, s2, t2, wd = args
        return run_single(config, seed, s2, t2 if use_tau2 else None, wd, lr)

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
        check_sizes(batch_size=batch_size)
    num_seeds = seeds.size
    total = num_grid * num_seeds

    def flat(arr):  # grid-major, seed-minor
        return jnp.asarray(np.repeat(arr, num_seeds), jnp.float32)

    tau2_flat = flat(grid["tau2"]) if tau2s is not None else jnp.zeros((total,), jnp.float32)
    out = _run_batch(_static_part(config), jnp.asarray(np.tile(seeds, num_grid), jnp.int32),
                     flat(grid["sigma2"]), tau2_flat, flat(grid["weight_decay"]),
                     jnp.float32(config.learning_rate), tau2s is not None,
                     None if batch_size is None else min(batch_size, total))
    return {k: np.asarray(v, np.float64).reshape(num_grid, num_seeds) for k, v in out.items()}


# ---------------------------------------------------------------------------- study

RECORD_KEYS = ("vary", "value", "sigma2", "tau2", "subclasses", "msdr_mean", "msdr_std",
               "train_acc_min", "train_acc_mean", "feature_movement_mean",
               "feature_movement_std", "seeds", "diverged", "msdr_per_seed")


def _mean_std(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1; 0 for one value) over seeds; None for no value."""
    if values.size == 0:
        return None, None
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


def _record(vary: str, value: float, sigma2: float, tau2: float | None, subclasses: str,
            out: dict[str, np.ndarray], i: int, msdr_key: str) -> dict:
    """Summary over seeds of grid point ``i``; diverged seeds are counted, not averaged."""
    ok = out["diverged"][i] == 0
    m, s = _mean_std(out[msdr_key][i][ok])
    fm, fs = _mean_std(out["feature_movement"][i][ok])
    acc = out["train_acc"][i][ok]
    return {"vary": vary, "value": float(value), "sigma2": float(sigma2),
            "tau2": None if tau2 is None else float(tau2), "subclasses": subclasses,
            "msdr_mean": m, "msdr_std": s,
            "train_acc_min": float(acc.min()) if acc.size else None,
            "train_acc_mean": float(acc.mean()) if acc.size else None,
            "feature_movement_mean": fm, "feature_movement_std": fs,
            "seeds": int(ok.size), "diverged": int(ok.size - ok.sum()),
            # Same seed = same data at every width and step size: paired comparisons.
            "msdr_per_seed": [float(v) if o else None for v, o in zip(out[msdr_key][i], ok)]}


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
        list of records with keys RECORD_KEYS: the point (vary, value, sigma2, tau2,
        subclasses), mean/std over non-diverged seeds of MSDR and feature movement,
        min/mean train accuracy, ``seeds`` run and how many ``diverged`` (all means are
        None when every seed diverged), and ``msdr_per_seed`` (None where diverged). For ``tau2`` three records per point
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
        return [_record(vary, t, sig[0], t, group, out, i, key)
                for i, t in enumerate(taus)
                for group, key in (("similar", "msdr_similar"), ("dissimilar", "msdr_dissimilar"),
                                   ("all", "msdr"))]
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
    return [_record(vary, s2 if v is None else v, s2, None, "all", out, i, "msdr")
            for v, out in results for i, s2 in enumerate(sig)]


def _point_name(record: dict) -> str:
    parts = [] if record["vary"] in ("sigma2", "tau2") else [f"{record['vary']}={record['value']:g}"]
    parts.append(f"sigma2={record['sigma2']:g}")
    if record["tau2"] is not None:
        parts.append(f"tau2={record['tau2']:g}")
    return " ".join(parts)


def divergence_report(records: Sequence[dict]) -> tuple[str | None, str | None]:
    """One-line warning and one-line error about diverged runs in ``records``.

    Returns:
        (warning, error): ``warning`` counts diverged runs and names the grid points
        where some seed diverged (None if none did); ``error`` names the grid points
        where every seed diverged (None if there is none).
    """
    points = {}
    for r in records:  # tau2 sweeps hold three records per grid point
        points.setdefault(_point_name(r), (r["diverged"], r["seeds"]))
    bad = {name: (d, s) for name, (d, s) in points.items() if d}
    if not bad:
        return None, None
    total = sum(s for _, s in points.values())
    warning = (f"{sum(d for d, _ in bad.values())} of {total} runs diverged (non-finite loss or "
               "MSDR, or final loss above the initial one), left out of the means: "
               + ", ".join(f"{name} ({d}/{s})" for name, (d, s) in bad.items()))
    whole = [name for name, (d, s) in bad.items() if d == s]
    error = None
    if whole:
        error = (f"every seed diverged at {len(whole)} grid point(s): {', '.join(whole)}; "
                 "lower the learning rate")
    return warning, error
