"""Plain NumPy transcription of the study's training, the float64 reference of the tests.

Written out from the definitions in ``ncfine_jax.gaussian_mixture.model``'s docstring
(forward multipliers, per-parameter step multipliers, weight decay), sharing no code
with the JAX path, so a slip in either shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np

from ncfine_jax.gaussian_mixture.config import GMConfig


def _multipliers(parameterization: str, d_in: int, d_h: int):
    """(a1, a2, step multipliers) written out per parameterisation."""
    if parameterization == "standard":
        return 1.0, 1.0, {"w1": 1.0, "b1": 1.0, "w2": 1.0, "b2": 1.0}
    if parameterization == "ntk":
        return d_in ** -0.5, d_h ** -0.5, {"w1": 1.0, "b1": 1.0, "w2": 1.0, "b2": 1.0}
    if parameterization == "mup":
        return d_in ** -0.5, 1.0 / d_h, {"w1": d_h, "b1": d_h, "w2": d_h, "b2": 1.0}
    raise ValueError(f"parameterization: unknown {parameterization!r}")


def numpy_reference_run(config: GMConfig, x: np.ndarray, coarse_labels: np.ndarray,
                        params: dict[str, np.ndarray], weight_decay: float = 0.0,
                        steps: int | None = None, dtype=np.float64
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Plain NumPy training with the same model, loss and update as ``train_mlp``.

    Used as a float64 reference in tests and as the single-run timing reference in
    the benchmark. ``config.parameterization``, ``config.input_scaling`` and
    ``config.learning_rate`` apply.

    Args:
        config: sizes, parameterisation, input scaling and step size.
        x: [n, d_input] inputs (unscaled); coarse_labels: [n] int.
        params: initial parameters (as from ``init_mlp``, converted to NumPy).
        weight_decay: weight-decay coefficient (see ``train_mlp``).
        steps: overrides ``config.steps``.
        dtype: float dtype of the computation.

    Returns:
        (final params, [n, d_hidden] final hidden activation).
    """
    steps = config.steps if steps is None else steps
    lr = config.learning_rate
    x = np.asarray(x, dtype)
    if config.input_scaling == "rms":
        x = x / np.sqrt(np.mean(x * x))
    p = {k: np.array(v, dtype) for k, v in params.items()}
    n = x.shape[0]
    d_in, d_h = p["w1"].shape
    a1, a2, step_mult = _multipliers(config.parameterization, d_in, d_h)
    onehot = np.eye(p["b2"].shape[0], dtype=dtype)[np.asarray(coarse_labels)]

    def forward(p):
        pre = x @ p["w1"] * a1 + p["b1"]
        hidden = np.maximum(pre, 0)
        return pre, hidden, hidden @ p["w2"] * a2 + p["b2"]

    for _ in range(steps):
        pre, hidden, logits = forward(p)
        logits = logits - logits.max(1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
        g_logits = (prob - onehot) / n
        g_hidden = g_logits @ p["w2"].T * a2
        g_pre = g_hidden * (pre > 0)
        grads = {"w2": hidden.T @ g_logits * a2, "b2": g_logits.sum(0),
                 "w1": x.T @ g_pre * a1, "b1": g_pre.sum(0)}
        p = {k: p[k] - lr * (step_mult[k] * grads[k] + weight_decay * p[k]) for k in p}
    return p, forward(p)[1]
