"""Linear probe: multinomial logistic regression on standardised features.

The probe is what the paper trains on frozen last-layer features, both on the
original labels (LPO) and on cluster-reconstructed labels (CLP). Features are
standardised with the training set's per-dimension mean and standard deviation,
then a softmax regression with a weak L2 penalty is fitted to convergence.

Objective (identical for both solvers, and identical to scikit-learn's
``LogisticRegression(C=C)``)::

    mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)

Solvers:
  * ``"jax"`` (default): full-batch L-BFGS from optax (zoom line search), run
    inside one jitted ``lax.while_loop`` until the largest absolute gradient entry
    is below ``tol`` or ``max_iter`` iterations are done. Chosen because it is
    several times faster than scikit-learn at the paper's size (50,000 x 512
    features, 10 classes) with the same iterations and accuracy; the README has the
    numbers of ``python benchmarks/analysis_bench.py``. It also runs on the
    accelerator when one is present.
  * ``"sklearn"``: ``sklearn.linear_model.LogisticRegression(solver="lbfgs")`` in
    float64, kept as a reference (the tests check that both reach the same
    accuracy and nearly the same weights).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from ncfine_jax.errors import NcfineError

Solver = Literal["jax", "sklearn"]


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted probe (all arrays float64/int64 NumPy).

    Attributes:
        mean: [d] per-dimension training mean used for standardisation.
        scale: [d] per-dimension training standard deviation (1 where it is 0).
        weights: [d, k] weights acting on standardised features.
        bias: [k] intercepts.
        classes: [k] the label value each output column stands for (sorted).
        n_iter: solver iterations taken.
        converged: whether the gradient tolerance was reached before ``max_iter``.
        solver: "jax" or "sklearn".
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    classes: np.ndarray
    n_iter: int
    converged: bool
    solver: str

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Logits [n, k] for features [n, d]."""
        features = check_features(features)
        if features.shape[1] != self.mean.shape[0]:
            raise NcfineError(
                f"features: dimension {features.shape[1]} does not match the probe's "
                f"{self.mean.shape[0]}"
            )
        z = (features - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted label values [n] (taken from ``classes``)."""
        return self.classes[np.argmax(self.decision_function(features), axis=1)]

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Fraction of ``labels`` [n] predicted correctly."""
        labels = np.asarray(labels)
        return float(np.mean(self.predict(features) == labels))


def check_features(features, name: str = "features") -> np.ndarray:
    """``features`` as a NumPy [n, d] array (n, d >= 1, all finite), else NcfineError."""
    arr = np.asarray(features)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise NcfineError(f"{name}: expected a non-empty [n, d] array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NcfineError(f"{name}: contains NaN or infinite values")
    return arr


def _check_inputs(features, labels) -> tuple[np.ndarray, np.ndarray]:
    features = check_features(features)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise NcfineError(
            f"labels: expected shape [{features.shape[0]}] to match features, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise NcfineError(f"labels: expected integers, got dtype {labels.dtype}")
    return features, labels


def standardize_stats(features: np.ndarray, chunk_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean [d] and std [d] (std 0 replaced by 1), in float64.

    The squared deviations are summed over row chunks, so no second [n, d] array is made.
    """
    x = np.asarray(features)
    mean = x.mean(axis=0, dtype=np.float64)
    sq = np.zeros_like(mean)
    for lo in range(0, x.shape[0], chunk_rows):
        dev = x[lo : lo + chunk_rows] - mean
        sq += np.einsum("ij,ij->j", dev, dev)
    scale = np.sqrt(sq / x.shape[0])
    # Constant dimensions carry no information; dividing by 1 keeps them at 0.
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale


@functools.lru_cache(maxsize=None)
def _jax_lbfgs_solver():
    """Build the jitted solver once per process (shapes still specialise the trace)."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(params, x, y_onehot, l2):
        w, b = params
        logits = x @ w + b
        ce = -jnp.sum(y_onehot * jax.nn.log_softmax(logits), axis=1)
        return jnp.mean(ce) + 0.5 * l2 * jnp.sum(w * w)

    @functools.partial(jax.jit, static_argnames=("max_iter",))
    def solve(x, y_onehot, l2, tol, max_iter):
        d, k = x.shape[1], y_onehot.shape[1]
        params = (jnp.zeros((d, k), x.dtype), jnp.zeros((k,), x.dtype))
        fun = functools.partial(loss_fn, x=x, y_onehot=y_onehot, l2=l2)
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(fun)

        def grad_max(state):
            grad = optax.tree.get(state, "grad")
            return jnp.maximum(jnp.max(jnp.abs(grad[0])), jnp.max(jnp.abs(grad[1])))

        def step(carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(
                grad, state, params, value=value, grad=grad, value_fn=fun
            )
            return optax.apply_updates(params, updates), state

        def keep_going(carry):
            _, state = carry
            count = optax.tree.get(state, "count")
            # The state's gradient is only meaningful after the first step.
            return (count == 0) | ((count < max_iter) & (grad_max(state) >= tol))

        params, state = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
        return params, optax.tree.get(state, "count"), grad_max(state)

    return solve


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    C: float = 1.0,
    tol: float = 1e-5,
    max_iter: int = 1000,
    solver: Solver = "jax",
) -> LinearProbe:
    """Fit softmax regression on standardised ``features``.

    Args:
        features: [n, d] float training features.
        labels: [n] int label values (any integers; at least 2 distinct values).
        C: inverse L2 strength on the summed loss, as in scikit-learn (1.0 there too).
        tol: stop when max |gradient| of the mean objective is below this.
        max_iter: L-BFGS iteration cap.
        solver: "jax" (optax L-BFGS, jitted) or "sklearn" (float64 reference).

    Returns:
        The fitted ``LinearProbe``.
    """
    features, labels = _check_inputs(features, labels)
    if C <= 0 or tol <= 0 or max_iter < 1:
        raise NcfineError(f"probe: need C > 0, tol > 0, max_iter >= 1; got {C}, {tol}, {max_iter}")
    classes, y = np.unique(labels, return_inverse=True)
    if classes.shape[0] < 2:
        raise NcfineError(f"labels: need at least 2 distinct values, got {classes.tolist()}")
    if solver not in ("jax", "sklearn"):
        raise NcfineError(f"solver: unknown {solver!r}; choose 'jax' or 'sklearn'")
    mean, scale = standardize_stats(features)
    # Standardised in float64 row chunk by row chunk, stored in the solver's precision:
    # one [n, d] copy, float32 for the JAX solver, float64 for the reference.
    z = np.empty(features.shape, np.float32 if solver == "jax" else np.float64)
    for lo in range(0, z.shape[0], 8192):
        z[lo : lo + 8192] = (features[lo : lo + 8192] - mean) / scale
    n, k = z.shape[0], classes.shape[0]
    l2 = 1.0 / (C * n)

    if solver == "jax":
        import jax.numpy as jnp

        y_onehot = np.eye(k, dtype=np.float32)[y]
        (w, b), count, gmax = _jax_lbfgs_solver()(jnp.asarray(z), jnp.asarray(y_onehot), l2, tol, max_iter)
        weights, bias = np.asarray(w, np.float64), np.asarray(b, np.float64)
        n_iter, converged = int(count), bool(float(gmax) < tol)
    elif solver == "sklearn":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=C, tol=tol, max_iter=max_iter, solver="lbfgs")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(z, y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        weights, bias = model.coef_.T.astype(np.float64), model.intercept_.astype(np.float64)
        if k == 2:
            # sklearn stores one column for binary problems: logits (0, w x + b).
            weights = np.concatenate([np.zeros_like(weights), weights], axis=1)
            bias = np.concatenate([np.zeros_like(bias), bias])
        n_iter = int(np.max(model.n_iter_))
    else:
        raise NcfineError(f"solver: unknown {solver!r}; choose 'jax' or 'sklearn'")

    return LinearProbe(
        mean=mean, scale=scale, weights=weights, bias=bias, classes=classes,
        n_iter=n_iter, converged=converged, solver=solver,
    )


def linear_probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    **kwargs,
) -> tuple[float, LinearProbe]:
    """Fit on train, return (test accuracy, probe). ``kwargs`` go to ``fit_linear_probe``."""
    _check_inputs(test_features, test_labels)  # before the fit, not after it
    probe = fit_linear_probe(train_features, train_labels, **kwargs)
    return probe.accuracy(test_features, test_labels), probe
