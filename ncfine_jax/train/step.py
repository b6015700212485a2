"""Pure training step, the step of a stack of k models, epoch drivers and evaluation.

``make_train_step`` builds the pure single-model ``train_step(state, batch, rng)``. The
trainer always runs a *stack* of k >= 1 models (a single run is k = 1, a grid chunk k > 1)
that share data, batches and augmentation keys: :func:`make_stack_step` vmaps the step
over the stacked states only, so the batch and its augmentation are computed once, and
freezes a model whose loss stops being finite or explodes. :func:`make_epoch_runner`
drives one epoch of such a stack either as one ``lax.scan`` (accelerators) or as a
Python loop over one jitted step (CPU); both use the same batches and keys.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ncfine_jax.errors import ConfigError
from ncfine_jax.train.augment import normalize, random_crop_flip
from ncfine_jax.train.sharding import MODELS_AXIS, constrain_batch
from ncfine_jax.train.state import TrainState, current_lr

Batch = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
EPOCH_MODES = ("scan", "loop")


def apply_model(model: nn.Module, params: Any, batch_stats: Any, x: jax.Array,
                train: bool) -> tuple[jax.Array, jax.Array, Any]:
    """Run the backbone on normalised ``x``.

    Returns:
      (logits [b, C], features [b, d], batch_stats): the updated statistics in train mode,
      the given ones in eval mode (and ``{}`` for models without BatchNorm).
    """
    if not batch_stats:
        logits, features = model.apply({"params": params}, x, train=train)
        return logits, features, batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        logits, features = model.apply(variables, x, train=False)
        return logits, features, batch_stats
    (logits, features), updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, features, updated["batch_stats"]


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, mean: jax.Array,
                    std: jax.Array, *, augment: bool, compute_dtype=jnp.float32,
                    mesh: Mesh | None = None) -> StepFn:
    """Build ``train_step(state, batch, rng) -> (state, metrics)``.

    Args:
      model: backbone returning (logits, features).
      tx: optimizer (``state.make_optimizer``).
      mean, std: normalisation, [c] or [d] float32 (``TrainData.normalization``).
      augment: pad-4 random crop + flip (images only).
      compute_dtype: dtype of the normalised input (the model's own dtype sets the rest).
      mesh: if given, the batch is constrained to the "data" axis.

    Returns:
      ``train_step`` where ``batch = {"inputs": [b, h, w, c] uint8 | [b, d] float,
      "labels": [b] int32}`` and ``rng`` is a PRNG key (``fold_in(aug_key, step)``).
      ``metrics`` holds float32 scalars ``loss`` (mean cross-entropy of the batch),
      ``accuracy`` (fraction of the batch whose argmax equals the label, in train mode on
      augmented inputs) and ``lr`` (used by this step). Pure; jit it with the state donated.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        inputs = constrain_batch(batch["inputs"], mesh)
        labels = constrain_batch(batch["labels"], mesh)
        if augment:
            inputs = random_crop_flip(rng, inputs)
        x = normalize(inputs, mean, std, compute_dtype)

        def loss_fn(params):
            logits, _, new_stats = apply_model(model, params, state.batch_stats, x, train=True)
            logits = logits.astype(jnp.float32)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, batch_stats=new_stats, opt_state=opt_state,
                                  step=state.step + 1)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return new_state, {"loss": loss, "accuracy": accuracy,
                           "lr": current_lr(new_state).astype(jnp.float32)}

    return train_step


def make_stack_step(train_step: StepFn, max_loss: float = float("inf")) -> Callable:
    """Build ``stack_step(states, alive, batch, rng) -> (states, alive, metrics)``.

    ``train_step`` vmapped over the k stacked states only (``batch`` and ``rng`` shared,
    so the augmentation runs once for all models; the vmapped axis is split over the
    mesh's "models" axis). A model whose loss at this step is not finite or exceeds
    ``max_loss`` is frozen: its state keeps the value before the step and its ``alive``
    entry turns False; a frozen model stays frozen.

    Args:
      train_step: the pure single-model step.
      max_loss: largest mean batch loss still counted as training (cross-entropy far
        above log(num_labels) means the logits blew up, even while still finite).

    Returns:
      ``stack_step``: ``states`` a TrainState with a leading [k] axis, ``alive`` [k] bool;
      ``metrics`` ``loss``, ``accuracy``, ``lr`` of shape [k].
    """
    vstep = jax.vmap(train_step, in_axes=(0, None, None), spmd_axis_name=MODELS_AXIS)

    def stack_step(states, alive, batch, rng):
        new_states, metrics = vstep(states, batch, rng)
        loss = metrics["loss"]
        ok = alive & jnp.isfinite(loss) & (loss <= max_loss)

        def keep(new, old):
            return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)

        return jax.tree.map(keep, new_states, states), ok, metrics

    return stack_step


def run_keys(run_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(augmentation key, shuffle key) derived from the run key."""
    aug_key, shuffle_key = jax.random.split(run_key)
    return aug_key, shuffle_key


def epoch_batches(run_key: jax.Array, epoch_index: jax.Array, n: int, steps_per_epoch: int,
                  batch_size: int) -> jax.Array:
    """[steps_per_epoch, batch_size] sample indices of epoch ``epoch_index`` (0-based):
    a permutation drawn from ``fold_in(shuffle_key, epoch_index)``, its tail dropped (a
    different few samples every epoch, so every step has the full batch)."""
    _, shuffle_key = run_keys(run_key)
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch_index), n)
    return perm[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)


def batch_and_key(x_train: jax.Array, y_train: jax.Array, idx: jax.Array, run_key: jax.Array,
                  step: jax.Array) -> tuple[Batch, jax.Array]:
    """The batch at sample indices ``idx`` and the augmentation key of optimizer step
    ``step``: ``fold_in(aug_key, step)``."""
    aug_key, _ = run_keys(run_key)
    batch = {"inputs": x_train[idx], "labels": y_train[idx]}
    return batch, jax.random.fold_in(aug_key, step)


def make_epoch_fn(stack_step: Callable, steps_per_epoch: int, batch_size: int) -> Callable:
    """Build the pure ``run_epoch(states, alive, run_key, epoch_index, x_train, y_train)``.

    One epoch = ``steps_per_epoch`` stack steps under ``lax.scan`` on the batches of
    :func:`epoch_batches`; step i of epoch e uses the augmentation key
    ``fold_in(aug_key, e * steps_per_epoch + i)``. ``x_train`` [n, ...] and ``y_train`` [n]
    are device arrays (replicated); ``run_key`` is the run key shared by the stack (every
    model of a stack has the same seed); ``epoch_index`` is 0-based.

    Returns:
      ``(states, alive, metrics)`` with ``loss``, ``accuracy``, ``lr`` of shape
      [steps_per_epoch, k].
    """

    def run_epoch(states, alive, run_key, epoch_index, x_train, y_train):
        batches = epoch_batches(run_key, epoch_index, x_train.shape[0], steps_per_epoch,
                                batch_size)
        first_step = epoch_index * steps_per_epoch

        def body(carry, inputs):
            i, idx = inputs
            batch, rng = batch_and_key(x_train, y_train, idx, run_key, first_step + i)
            states, alive, metrics = stack_step(*carry, batch, rng)
            return (states, alive), metrics

        steps = jnp.arange(steps_per_epoch, dtype=jnp.int32)
        (states, alive), metrics = jax.lax.scan(body, (states, alive), (steps, batches))
        return states, alive, metrics

    return run_epoch


def make_epoch_runner(stack_step: Callable, steps_per_epoch: int, batch_size: int, *,
                      mode: str, state_sharding: Any = None,
                      replicated_sharding: Any = None) -> Callable:
    """Jitted epoch driver with the signature and results of :func:`make_epoch_fn`.

    Args:
      stack_step, steps_per_epoch, batch_size: as for :func:`make_epoch_fn`.
      mode: "scan" (one jitted ``lax.scan`` per epoch, states donated: what accelerators
        want) or "loop" (a Python loop over one jitted, donated stack step with the same
        batches and keys). XLA:CPU runs convolutions inside a while loop far slower than
        outside one, so "loop" is the CPU default; per-step dispatch costs nothing there.
      state_sharding: sharding of the stacked states (None: left to XLA).
      replicated_sharding: sharding of the alive mask, metrics and batch indices.
    """
    if mode not in EPOCH_MODES:
        raise ConfigError(f"epoch_mode={mode!r}: must be 'scan' or 'loop'")
    out = (state_sharding, replicated_sharding, replicated_sharding)
    if mode == "scan":
        return jax.jit(make_epoch_fn(stack_step, steps_per_epoch, batch_size),
                       donate_argnums=0, out_shardings=out)
    batches_fn = jax.jit(lambda key, epoch, n: epoch_batches(key, epoch, n, steps_per_epoch,
                                                             batch_size),
                         static_argnums=2, out_shardings=replicated_sharding)

    def one_step(states, alive, x, y, batches, i, key, step):
        batch, rng = batch_and_key(x, y, batches[i], key, step)
        return stack_step(states, alive, batch, rng)

    step_fn = jax.jit(one_step, donate_argnums=0, out_shardings=out)

    def run_epoch(states, alive, run_key, epoch_index, x_train, y_train):
        batches = batches_fn(run_key, epoch_index, x_train.shape[0])
        first_step = int(epoch_index) * steps_per_epoch
        metrics = []
        for i in range(steps_per_epoch):
            states, alive, m = step_fn(states, alive, x_train, y_train, batches,
                                       jnp.int32(i), run_key, jnp.int32(first_step + i))
            metrics.append(m)
        return states, alive, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

    run_epoch.step_fn = step_fn  # the one jitted program per step (compile-count checks)
    run_epoch.batches_fn = batches_fn  # (to compile the step before the first epoch)
    return run_epoch


def make_eval_fn(model: nn.Module, mean: jax.Array, std: jax.Array, batch_size: int, *,
                 compute_dtype=jnp.float32, mesh: Mesh | None = None) -> Callable:
    """Build ``evaluate(params, batch_stats, x) -> (logits [n, C], features [n, d])``.

    Eval mode (BatchNorm running averages), no augmentation, every sample: ``x`` is
    zero-padded to a multiple of ``batch_size`` and mapped over in chunks with
    ``lax.map``; the padding rows are cut off. Outputs are float32.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def evaluate(params: Any, batch_stats: Any, x: jax.Array):
        n = x.shape[0]
        num_chunks = -(-n // batch_size)
        pad = num_chunks * batch_size - n
        xp = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        chunks = xp.reshape(num_chunks, batch_size, *x.shape[1:])

        def forward(chunk):
            chunk = constrain_batch(chunk, mesh)
            logits, features, _ = apply_model(model, params, batch_stats,
                                              normalize(chunk, mean, std, compute_dtype), False)
            return logits.astype(jnp.float32), features.astype(jnp.float32)

        logits, features = jax.lax.map(forward, chunks)
        return (logits.reshape(-1, logits.shape[-1])[:n],
                features.reshape(-1, features.shape[-1])[:n])

    return evaluate


def make_stack_eval(evaluate: Callable) -> Callable:
    """``evaluate`` vmapped over stacked params and statistics (``x`` shared):
    ``(params [k..], batch_stats [k..], x) -> (logits [k, n, C], features [k, n, d])``."""
    return jax.vmap(evaluate, in_axes=(0, 0, None), spmd_axis_name=MODELS_AXIS)


def feature_spread(features: jax.Array) -> jax.Array:
    """[k, n, d] -> [k]: per model, the largest range of any feature over the samples,
    relative to the largest magnitude. 0 when every sample has the same features."""
    spread = jnp.max(jnp.max(features, axis=1) - jnp.min(features, axis=1), axis=-1)
    scale = jnp.maximum(jnp.max(jnp.abs(features), axis=(1, 2)), 1e-30)
    return spread / scale
