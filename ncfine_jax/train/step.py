"""Pure training step, a whole epoch under ``lax.scan``, and batched evaluation.

``make_train_step``, ``make_epoch_fn`` and ``make_eval_fn`` return pure, unjitted
functions (no Python side effects, randomness only from keys in the arguments); they
vmap over a leading axis of stacked states (e.g. different learning rates held in
``opt_state.hyperparams``) with the dataset shared. ``make_epoch_runner`` returns the
jitted, state-donating epoch driver that ``loop.build_engine`` uses.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ncfine_jax.train.augment import normalize, random_crop_flip
from ncfine_jax.train.sharding import constrain_batch
from ncfine_jax.train.state import TrainState, current_lr

Batch = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]


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
      "labels": [b] int32}`` and ``rng`` is a PRNG key (the loop passes
      ``fold_in(aug_key, state.step)``). ``metrics`` holds float32 scalars ``loss``
      (mean cross-entropy of the batch), ``accuracy`` (fraction of the batch whose argmax
      equals the label, in train mode on augmented inputs) and ``lr`` (used by this
      step). The step is pure; jit it with ``donate_argnums=0``.
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


def run_keys(state_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(augmentation key, shuffle key) derived from the run key."""
    aug_key, shuffle_key = jax.random.split(state_key)
    return aug_key, shuffle_key


def epoch_batches(run_key: jax.Array, epoch_index: jax.Array, n: int, steps_per_epoch: int,
                  batch_size: int) -> jax.Array:
    """[steps_per_epoch, batch_size] sample indices of epoch ``epoch_index`` (0-based):
    a permutation drawn from ``fold_in(shuffle_key, epoch_index)``, its tail dropped."""
    _, shuffle_key = run_keys(run_key)
    perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch_index), n)
    return perm[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)


def batch_and_key(x_train: jax.Array, y_train: jax.Array, idx: jax.Array, run_key: jax.Array,
                  step: jax.Array) -> tuple[Batch, jax.Array]:
    """The batch at sample indices ``idx`` and the augmentation key of optimizer step
    ``step``: ``fold_in(aug_key, step)``. Single runs and the vmapped grid both use it,
    so a grid point sees exactly the single run's batches and keys."""
    aug_key, _ = run_keys(run_key)
    batch = {"inputs": x_train[idx], "labels": y_train[idx]}
    return batch, jax.random.fold_in(aug_key, step)


def _epoch_batches(state: TrainState, n: int, steps_per_epoch: int,
                   batch_size: int) -> jax.Array:
    """``epoch_batches`` of the epoch that ``state`` is in."""
    return epoch_batches(state.key, state.step // steps_per_epoch, n, steps_per_epoch,
                         batch_size)


def _indexed_step(train_step: StepFn, state: TrainState, x_train: jax.Array,
                  y_train: jax.Array, idx: jax.Array):
    return train_step(state, *batch_and_key(x_train, y_train, idx, state.key, state.step))


def make_epoch_fn(train_step: StepFn, steps_per_epoch: int, batch_size: int) -> Callable:
    """Build ``run_epoch(state, x_train, y_train) -> (state, metrics)`` (pure, one scan).

    One epoch = ``steps_per_epoch`` steps of ``batch_size`` samples under ``lax.scan``,
    on a fresh permutation of the training set drawn from
    ``fold_in(shuffle_key, epoch_index)`` (epoch_index = state.step // steps_per_epoch,
    shuffle_key from ``run_keys(state.key)``); step s uses the augmentation key
    ``fold_in(aug_key, s)``. The last ``n mod batch_size`` samples of each permutation
    are dropped (a different few every epoch), so every step has the full batch and one
    compiled shape.

    Args:
      train_step: from ``make_train_step``.
      steps_per_epoch: ``n // batch_size``.
      batch_size: global batch size.

    Returns:
      ``run_epoch``; ``x_train`` [n, ...] and ``y_train`` [n] int32 are device arrays
      (replicated); ``metrics`` has [steps_per_epoch] float32 arrays
      ``loss``, ``accuracy``, ``lr``.
    """

    def run_epoch(state: TrainState, x_train: jax.Array, y_train: jax.Array):
        batches = _epoch_batches(state, x_train.shape[0], steps_per_epoch, batch_size)

        def body(state, idx):
            return _indexed_step(train_step, state, x_train, y_train, idx)

        return jax.lax.scan(body, state, batches)

    return run_epoch


def make_epoch_runner(train_step: StepFn, steps_per_epoch: int, batch_size: int, *,
                      mode: str, out_sharding: Any = None) -> Callable:
    """Jitted epoch driver with the signature and results of ``make_epoch_fn``.

    Args:
      train_step, steps_per_epoch, batch_size: as for ``make_epoch_fn``.
      mode: "scan" (one jitted ``lax.scan`` per epoch, state donated: what accelerators
        want) or "loop" (a Python loop over a jitted, donated single step with the same
        batches and keys). XLA:CPU runs convolutions inside a while loop about 40x
        slower than outside one (measured here: ResNet-18/w16 4 vs 140-210 images/s),
        so "loop" is the CPU default; per-step dispatch costs nothing at CPU speeds.
      out_sharding: sharding of the outputs (replicated), or None.
    """
    if mode == "scan":
        return jax.jit(make_epoch_fn(train_step, steps_per_epoch, batch_size),
                       donate_argnums=0, out_shardings=out_sharding)
    if mode != "loop":
        raise ValueError(f"epoch mode must be 'scan' or 'loop', got {mode!r}")
    batches_fn = jax.jit(lambda state, n: _epoch_batches(state, n, steps_per_epoch, batch_size),
                         static_argnums=1, out_shardings=out_sharding)
    step_fn = jax.jit(lambda state, x, y, batches, i: _indexed_step(
        train_step, state, x, y, batches[i]), donate_argnums=0, out_shardings=out_sharding)

    def run_epoch(state: TrainState, x_train: jax.Array, y_train: jax.Array):
        batches = batches_fn(state, x_train.shape[0])
        metrics = []
        for i in range(steps_per_epoch):
            state, m = step_fn(state, x_train, y_train, batches, i)
            metrics.append(m)
        return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

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
