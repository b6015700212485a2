"""The 2-layer ReLU MLP of the Gaussian-mixture study under three parameterisations.

The network is ``d_input -> d_hidden (ReLU) -> K``:
``hidden = relu(a1 * x @ w1 + b1)``, ``logits = a2 * hidden @ w2 + b2``, trained by
full-batch gradient descent where parameter ``p`` takes the step
``-lr * (m_p * grad_p + weight_decay * p)`` with a per-parameter learning-rate multiplier
``m_p``. Where ``m_p = 1`` (``standard``, ``ntk``) this is PyTorch
``SGD(weight_decay=...)`` (coupled L2); the decay itself is never scaled by ``m_p``, so
every parameter shrinks by the same factor ``1 - lr * weight_decay`` per step at every
width (under ``mup`` a decay scaled by ``m_p = d_hidden`` would exceed 1 at the paper's
weight decays).
A parameterisation fixes the initial distribution, the forward multipliers ``a1, a2``
and the learning-rate multipliers ``m_p``:

``standard`` -- PyTorch ``nn.Linear`` defaults: ``w1, b1 ~ U(-1/sqrt(d_input),
    1/sqrt(d_input))``, ``w2, b2 ~ U(-1/sqrt(d_hidden), 1/sqrt(d_hidden))``
    (``kaiming_uniform_(a=sqrt(5))`` and the bias rule), ``a1 = a2 = 1``, all
    ``m_p = 1``. With a fixed ``lr`` the tangent kernel grows like ``d_hidden`` (output
    layer) and like ``|x|^2 ~ d_input (1 + sigma2)`` on raw inputs (input layer), so
    width changes the effective step size.
``ntk`` -- neural-tangent parameterisation: unit-normal weights, zero biases,
    ``a1 = 1/sqrt(d_input)``, ``a2 = 1/sqrt(d_hidden)``, all ``m_p = 1``. The tangent
    kernel is O(1) in both widths; hidden features move O(1/sqrt(d_hidden)) (lazy as
    width grows). Equals standard Gaussian init with per-layer rates ``lr / fan_in``.
``mup`` -- maximal-update parameterisation for one hidden layer, i.e. the mean-field
    parameterisation with a width-scaled step: unit-normal weights, zero biases,
    ``a1 = 1/sqrt(d_input)``, ``a2 = 1/d_hidden``, ``m_p = d_hidden`` for ``w1``, ``b1``,
    ``w2`` and ``m_p = 1`` for ``b2``. In plain storage (``W1 = a1 w1``, ``W2 = a2 w2``)
    this is Table 3 of Yang et al., "Tensor Programs V" (2021), SGD column: ``W1`` and
    biases init variance ``1/fan_in``, output ``W2`` init variance ``1/fan_in^2`` with
    step ``lr / fan_in``, ``b1`` step ``lr * fan_out`` -- except that the input layer's
    step is ``lr * d_hidden / d_input`` instead of ``lr * d_hidden`` (the table treats
    ``d_input`` as a fixed dimension; here ``d_input`` is swept too, so it is scaled like
    a width), the output bias steps with ``lr`` and biases start at 0 (the table:
    variance ``1/fan_in``). Hidden features then move O(1) per
    step at every width (feature learning that does not vanish as width grows).

Inputs may first be divided by their global root-mean-square entry
(``input_scaling="rms"``): one scalar, so no distance ratio (and no MSDR) changes, but
the curvature no longer grows with ``sigma2``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from ncfine_jax.errors import ConfigError
from ncfine_jax.gaussian_mixture.config import (DEFAULT_PARAMETERIZATION, INPUT_SCALINGS,
                                                check_parameterization)


Params = dict[str, jax.Array]


def forward_multipliers(parameterization: str, d_input: int, d_hidden: int
                        ) -> tuple[float, float]:
    """``(a1, a2)``: the constants multiplying ``x @ w1`` and ``hidden @ w2``."""
    check_parameterization(parameterization)
    if parameterization == "standard":
        return 1.0, 1.0
    a1 = 1.0 / math.sqrt(d_input)
    return a1, (1.0 / math.sqrt(d_hidden) if parameterization == "ntk" else 1.0 / d_hidden)


def lr_multipliers(parameterization: str, d_input: int, d_hidden: int) -> dict[str, float]:
    """Per-parameter learning-rate multipliers ``m_p`` (keys of :func:`init_mlp`)."""
    check_parameterization(parameterization)
    if parameterization == "mup":
        return {"w1": float(d_hidden), "b1": float(d_hidden), "w2": float(d_hidden), "b2": 1.0}
    return {"w1": 1.0, "b1": 1.0, "w2": 1.0, "b2": 1.0}


def init_mlp(key: jax.Array, d_input: int, d_hidden: int, num_outputs: int,
             parameterization: str = DEFAULT_PARAMETERIZATION) -> Params:
    """Initial parameters under ``parameterization`` (see the module docstring).

    Returns:
        {"w1": [d_input, d_hidden], "b1": [d_hidden], "w2": [d_hidden, num_outputs],
        "b2": [num_outputs]}, float32.
    """
    check_parameterization(parameterization)
    k1, k2 = jax.random.split(key)
    if parameterization == "standard":
        def uniform(k, shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        k1w, k1b = jax.random.split(k1)
        k2w, k2b = jax.random.split(k2)
        return {"w1": uniform(k1w, (d_input, d_hidden), d_input),
                "b1": uniform(k1b, (d_hidden,), d_input),
                "w2": uniform(k2w, (d_hidden, num_outputs), d_hidden),
                "b2": uniform(k2b, (num_outputs,), d_hidden)}
    return {
        "w1": jax.random.normal(k1, (d_input, d_hidden), jnp.float32),
        "b1": jnp.zeros((d_hidden,), jnp.float32),
        "w2": jax.random.normal(k2, (d_hidden, num_outputs), jnp.float32),
        "b2": jnp.zeros((num_outputs,), jnp.float32),
    }


def mlp_apply(params: Params, x: jax.Array,
              parameterization: str = DEFAULT_PARAMETERIZATION) -> tuple[jax.Array, jax.Array]:
    """Forward pass.

    Args:
        params: from :func:`init_mlp` (same ``parameterization``).
        x: [n, d_input] inputs (already scaled, see :func:`scale_inputs`).
        parameterization: one of PARAMETERIZATIONS.

    Returns:
        logits [n, K] and hidden (the representation) [n, d_hidden].
    """
    d_input, d_hidden = params["w1"].shape
    a1, a2 = forward_multipliers(parameterization, d_input, d_hidden)
    hidden = jax.nn.relu((x @ params["w1"]) * a1 + params["b1"])
    logits = (hidden @ params["w2"]) * a2 + params["b2"]
    return logits, hidden


def scale_inputs(x: jax.Array, input_scaling: str) -> jax.Array:
    """``x`` unchanged (``"none"``) or divided by its global RMS entry (``"rms"``)."""
    if input_scaling == "none":
        return x
    if input_scaling == "rms":
        return x * jax.lax.rsqrt(jnp.mean(x * x))
    raise ConfigError(f"input_scaling: unknown {input_scaling!r}; choose from "
                      f"{', '.join(INPUT_SCALINGS)}")


def loss_fn(params: Params, x: jax.Array, labels: jax.Array,
            parameterization: str = DEFAULT_PARAMETERIZATION) -> jax.Array:
    """Mean softmax cross-entropy over the full batch (the regulariser is in the optimiser)."""
    logits, _ = mlp_apply(params, x, parameterization)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def train_mlp(params: Params, x: jax.Array, labels: jax.Array, steps: int,
              lr: float | jax.Array, weight_decay: float | jax.Array = 0.0,
              parameterization: str = DEFAULT_PARAMETERIZATION) -> tuple[Params, jax.Array]:
    """Full-batch gradient descent with weight decay, ``lax.scan`` over steps.

    Args:
        params: initial parameters.
        x: [n, d_input] inputs; labels: [n] int training labels.
        steps: number of GD steps (static).
        lr, weight_decay: scalars (may be traced); parameter ``p`` steps by
            ``-lr * (m_p * grad_p + weight_decay * p)``, ``m_p`` from :func:`lr_multipliers`.
        parameterization: one of PARAMETERIZATIONS (static).

    Returns:
        (final params, [steps] loss before each step).
    """
    d_input, d_hidden = params["w1"].shape
    multipliers = lr_multipliers(parameterization, d_input, d_hidden)
    tx = optax.chain(
        optax.stateless(lambda grads, _: {k: g * multipliers[k] for k, g in grads.items()}),
        optax.add_decayed_weights(weight_decay),
        optax.sgd(lr),
    )
    opt_state = tx.init(params)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, x, labels, parameterization)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), None, length=steps)
    return params, losses
