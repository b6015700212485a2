"""Is there fine structure? MSDR, cluster accuracy and CLP against permutation nulls.

MSDR >= 1 by construction when each label merges two classes (``D_ij = |mu_i - mu_j|^2 +
v_i + v_j`` and ``D_ii = 2 v_i``), and the best cluster-to-class mapping lifts even random
clusters above 1 / classes per label: neither number is evidence by itself. The null
here keeps everything the network was trained on and removes only what the question is
about: the original-class identities of the samples are shuffled *inside each training
label* (labels and per-class counts kept), so a class of the null is a random subset of
its label. Then

* MSDR is recomputed per permutation from per-class sums of ``x`` and ``|x|^2`` over
  the permuted classes (vmapped over draws, in chunks; each label's samples are summed
  only into that label's classes; no pairwise matrices);
* cluster accuracy keeps the CLP clusters and recomputes the best mapping per label
  (``clp.best_cluster_mapping``) against the shuffled classes;
* train-mapped CLP keeps the probe's test predictions and shuffles the test classes
  inside each test label.

p-value = (1 + #{null >= observed}) / (1 + permutations). Bootstrap 95% intervals resample
the samples inside each class (counts kept) for MSDR and the test samples inside each
class for CLP; they are basic (reverse-percentile) intervals, which correct the upward
bias of a resample's MSDR (see ``_interval``). For "fine" runs the roles swap: D is over
the training labels grouped by original class, and the null shuffles the training labels
inside each class.

Everything is seeded by ``SignificanceOptions.seed``: the same inputs give the same block.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from ncfine_jax.analysis.clp import best_cluster_mapping
from ncfine_jax.analysis.options import SignificanceOptions
from ncfine_jax.errors import ConfigError
from ncfine_jax.metrics.kernels import msdr_unchecked

# Draws evaluated per vmapped call (at most; memory bounds it further, see msdr_draws).
_CHUNK = 32
CI_LEVEL = 0.95
# Largest |mean - offset|^2 / variance a draw may have before it is recomputed with its
# own means as offsets: float32 then keeps the variance to ~1e-5 relative.
_MAX_CANCELLATION = 100.0
# MSDR draws within this relative distance of the observed value count as ties: the
# float32 kernel's rounding (see test_significance's float64 comparison, 2e-5).
_FLOAT32_TIES = 1e-5


def check_groups(members: np.ndarray, groups_of_member: np.ndarray, what: str) -> None:
    """ConfigError unless every group has >= 2 members and every member >= 2 samples.

    Args:
      members: [n] the shuffled identity of each sample (class, or training label for
        "fine").
      groups_of_member: [M] the group of each member (its training label; its class for
        "fine").
      what: names the members in the message ("class" / "training label").
    """
    counts = np.bincount(members, minlength=groups_of_member.size)
    few = np.flatnonzero(counts < 2)
    if few.size:
        raise ConfigError(f"fine-structure test: {what} {int(few[0])} has {int(counts[few[0]])} "
                          f"training sample(s); each needs >= 2 for its variance")
    sizes = np.bincount(groups_of_member)
    single = np.flatnonzero(sizes == 1)
    if single.size:
        raise ConfigError(f"fine-structure test: group {int(single[0])} holds a single {what}; "
                          "nothing inside it can be separated")


def permute_within(groups: np.ndarray, members: np.ndarray, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """[count, n] copies of ``members`` shuffled among the samples of each group.

    Sorting the samples by group + a random key in [0, 1) orders each group's samples at
    random; writing the members in that order into the group-sorted positions moves each
    member only inside its group.
    """
    by_group = np.argsort(groups, kind="stable")
    order = np.argsort(groups[None, :] + rng.random((count, groups.size)), axis=1)
    out = np.empty((count, members.size), members.dtype)
    out[:, by_group] = members[order]
    return out


@functools.lru_cache(maxsize=None)
def _msdr_kernel(slots: int):
    import jax
    import jax.numpy as jnp

    def one(z, zz, base, slot, weight, member_index, superclass):
        # z [G, m, d]: the samples of each offset set (padded rows carry weight 0); a
        # member is one of the ``slots`` slots of its set, so the sums are one small
        # batched matmul per set, never a sample x all-members product. The offsets keep
        # the sums small, so the variance q/n - |s/n|^2 does not cancel (see msdr_draws).
        a = weight[..., None] * (slot[..., None] == jnp.arange(slots))  # [G, m, slots]
        n = jnp.sum(a, axis=1).reshape(-1)[member_index]
        sums = jnp.einsum("gmk,gmd->gkd", a, z, precision="highest")
        sums = sums.reshape(-1, z.shape[-1])[member_index]
        q = jnp.einsum("gmk,gm->gk", a, zz, precision="highest").reshape(-1)[member_index]
        shift = sums / n[:, None]
        var = jnp.maximum(q / n - jnp.sum(shift * shift, axis=1), 0.0)
        mu = base + shift
        diff = mu[:, None, :] - mu[None, :, :]
        D = jnp.sum(diff * diff, axis=-1) + var[:, None] + var[None, :]
        # |shift|^2 / var bounds the relative float32 error of var (eps times it).
        cancel = jnp.max(jnp.sum(shift * shift, axis=1) / jnp.maximum(var, 1e-30))
        return msdr_unchecked(D, superclass), cancel

    return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0, 0, None, None)))


def _offset_layout(assignments: np.ndarray, offset_of: np.ndarray, M: int):
    """Samples grouped by offset set, padded to one length, and each member's set and slot.

    Returns (order [G, m] sample index, -1 = padding; set_of_member [M]; slot_of_member [M];
    slots). ValueError when a draw moves a member out of its set or leaves one empty.
    """
    sets, set_of_sample = np.unique(offset_of, return_inverse=True)
    sizes = np.bincount(set_of_sample)
    order = np.full((sets.size, sizes.max()), -1, np.int64)
    by_set = np.argsort(set_of_sample, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order[set_of_sample[by_set], np.arange(by_set.size) - starts[set_of_sample[by_set]]] = by_set
    set_of_member = np.full(M, -1)
    set_of_member[assignments[0]] = set_of_sample
    if (set_of_member < 0).any():
        raise ValueError("msdr_draws: a member has no sample")
    if (set_of_member[assignments] != set_of_sample[None, :]).any():
        raise ValueError("msdr_draws: a draw moves a member out of its offset set")
    slot_of_member = np.zeros(M, np.int64)
    for g in range(sets.size):
        mine = np.flatnonzero(set_of_member == g)
        slot_of_member[mine] = np.arange(mine.size)
    return order, set_of_member, slot_of_member, int(slot_of_member.max()) + 1


def msdr_draws(features: np.ndarray, assignments: np.ndarray, weights: np.ndarray,
               superclass: np.ndarray, offset_of: np.ndarray, refine: bool = True) -> np.ndarray:
    """MSDR of each row of (``assignments``, ``weights``), vmapped in chunks on device.

    Args:
      features: [n, d] float features.
      assignments: [P, n] int member of each sample per draw.
      weights: [P, n] float sample weights per draw (1 = once; bootstrap multiplicities).
      superclass: [M] group of each member.
      offset_of: [n] int offset set of each sample; in every draw the samples of one
        member must lie in one set. Members' means are computed as the set's mean plus a
        small shift, which keeps float32 exact: the class of each sample for the
        observed value and the bootstrap (the shift is 0 / resampling noise), its group
        (the training label) for the permutation null (a random class of a label has
        nearly the label's mean). Only the members of a set are summed over its samples.
      refine: a draw whose members' means lie far from their offsets next to their
        spread (a null class that happens to be nearly one true class of a collapsed
        label) is recomputed with its own means as offsets, so every draw keeps float32
        accuracy, not only the typical one.

    Returns:
      [P] float64 MSDR per draw.
    """
    import jax.numpy as jnp

    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    scale = np.sqrt(np.mean(np.sum(x * x, axis=1))) or 1.0
    x = x / scale  # MSDR is scale-free; unit scale keeps float32 far from overflow
    M = int(superclass.size)
    order, set_of_member, slot_of_member, slots = _offset_layout(assignments, offset_of, M)
    pad = order < 0
    rows = np.where(pad, 0, order)
    centres = np.stack([x[g[g >= 0]].mean(axis=0) for g in order])  # [G, d]
    z = np.where(pad[..., None], 0.0, x[rows] - centres[:, None, :])  # [G, m, d]
    base = jnp.asarray(centres[set_of_member], jnp.float32)
    zj = jnp.asarray(z, jnp.float32)
    zz = jnp.asarray(np.sum(z * z, axis=-1), jnp.float32)
    member_index = jnp.asarray(set_of_member * slots + slot_of_member, jnp.int32)
    kernel = _msdr_kernel(slots)
    sc = jnp.asarray(superclass, jnp.int32)
    # Draws per call: the assignment block chunk x G x m x slots stays near 64 MB.
    chunk = int(max(1, min(_CHUNK, assignments.shape[0], 2 ** 24 // (order.size * slots))))
    out, cancel = [], []
    for i in range(0, assignments.shape[0], chunk):
        a = slot_of_member[assignments[i:i + chunk]][:, rows]  # [p, G, m]
        w = np.where(pad[None], 0.0, weights[i:i + chunk][:, rows])
        short = chunk - a.shape[0]  # one compiled shape for every call
        if short:
            a = np.concatenate([a, np.repeat(a[:1], short, 0)])
            w = np.concatenate([w, np.repeat(w[:1], short, 0)])
        r, c = kernel(zj, zz, base, jnp.asarray(a, jnp.int32), jnp.asarray(w, jnp.float32),
                      member_index, sc)
        out.append(np.asarray(r, np.float64)[:chunk - short])
        cancel.append(np.asarray(c, np.float64)[:chunk - short])
    out = np.concatenate(out)
    if refine:
        for i in np.flatnonzero(np.concatenate(cancel) > _MAX_CANCELLATION):
            out[i] = msdr_draws(features, assignments[i:i + 1], weights[i:i + 1], superclass,
                                assignments[i], refine=False)[0]
    return out


def bootstrap_weights(members: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, n] multiplicities of a resample with replacement inside each member."""
    w = np.zeros((count, members.size), np.float64)
    for m in np.unique(members):
        idx = np.flatnonzero(members == m)
        picks = rng.integers(0, idx.size, size=(count, idx.size))
        picks += np.arange(count)[:, None] * idx.size  # one bincount for every resample
        w[:, idx] = np.bincount(picks.ravel(), minlength=count * idx.size).reshape(count, idx.size)
    return w


def p_value(observed: float, null: np.ndarray, rtol: float = 0.0) -> float:
    """(1 + #{null >= observed}) / (1 + draws): never 0, exact under exchangeability.

    ``rtol``: null values within this relative distance below ``observed`` count as ties
    (>=), for statistics computed in float32 where a draw equal to the observed
    assignment may round a few ulps lower; counting them keeps the p-value conservative.
    """
    return float((1 + np.sum(null >= observed - rtol * abs(observed))) / (1 + null.size))


def _percentiles(null: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(null, 50)), float(np.percentile(null, 99))


def _interval(observed: float, draws: np.ndarray, at: float | None = None
              ) -> list[float] | None:
    """Basic (reverse-percentile) bootstrap interval ``[2t - q_hi, 2t - q_lo]``: MSDR of a
    resample is biased upwards (duplicated samples shrink the variances, the means gain
    noise), and the basic interval moves against that bias where the plain percentile
    interval would follow it. ``at``: the estimate the interval is placed around, when it
    was computed by another call than the draws (shifted by the difference)."""
    if draws.size == 0:
        return None
    lo = (1 - CI_LEVEL) / 2 * 100
    q_lo, q_hi = np.percentile(draws, lo), np.percentile(draws, 100 - lo)
    shift = 0.0 if at is None else at - observed
    return [float(2 * observed - q_hi + shift), float(2 * observed - q_lo + shift)]


def msdr_significance(features: np.ndarray, groups: np.ndarray, members: np.ndarray,
                      superclass: np.ndarray, options: SignificanceOptions,
                      salt: int = 0, interval: bool = True) -> dict:
    """MSDR of (features, members) against its within-group permutation null.

    Args:
      features: [n, d] training features.
      groups: [n] what the null keeps (training label; original class for "fine").
      members: [n] what it shuffles inside each group (original class; training label).
      superclass: [M] group of each member (D's grouping).
      options: alpha, permutations, bootstrap, seed.
      salt: mixed into the seed (e.g. the epoch) so epochs draw independent nulls.
      interval: draw the bootstrap interval (False: ``msdr_ci`` None; the per-epoch
        table has no interval, only the block's epoch needs one).

    Returns:
      dict: msdr, msdr_p_value, msdr_null_p50, msdr_null_p99, msdr_ci ([lo, hi] or None).
    """
    rng = np.random.default_rng([options.seed, salt, 1])
    n = members.size
    perms = permute_within(groups, members, options.permutations, rng)
    # The observed assignment is draw 0 of the null's own call: the observed value and
    # the null draws go through one kernel with one layout, so they round alike.
    draws = msdr_draws(features, np.concatenate([members[None], perms]),
                       np.ones((perms.shape[0] + 1, n)), superclass, groups)
    observed, null = float(draws[0]), draws[1:]
    ci = None
    if options.bootstrap and interval:
        # Resamples inside each class; draw 0 (weight 1 everywhere) is their centre.
        w = np.concatenate([np.ones((1, n)), bootstrap_weights(members, options.bootstrap, rng)])
        boot = msdr_draws(features, np.broadcast_to(members, w.shape), w, superclass, members)
        ci = _interval(float(boot[0]), boot[1:], observed)
    p50, p99 = _percentiles(null)
    lo, hi = np.percentile(null, [100 * (1 - CI_LEVEL) / 2, 100 * (1 + CI_LEVEL) / 2])
    return {"msdr": observed, "msdr_p_value": p_value(observed, null, _FLOAT32_TIES),
            "msdr_null_p50": p50, "msdr_null_p99": p99, "msdr_null_p025": float(lo),
            "msdr_null_p975": float(hi), "msdr_ci": ci}


def cluster_accuracies(clusters: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                       classes_of_label: Sequence[Sequence[int]], ks: Sequence[int]) -> np.ndarray:
    """Cluster accuracy (best mapping per label, as CLP) for each row of ``classes``.

    Args:
      clusters: [n] global reconstructed label (CLP's ``reconstructed_train_labels``).
      labels: [n] training label.
      classes: [P, n] original classes per draw.
      classes_of_label: L lists of the classes of each label.
      ks: [L] clusters per label (offsets of the global ids).

    Returns:
      [P] fraction of samples whose cluster maps to their class.
    """
    offsets = np.concatenate([[0], np.cumsum(ks)[:-1]]).astype(np.int64)
    correct = np.zeros(classes.shape[0])
    for l, cs in enumerate(classes_of_label):
        idx = np.flatnonzero(labels == l)
        cs = np.sort(np.asarray(cs))  # searchsorted below needs the order
        rows = clusters[idx] - offsets[l]
        cols = np.searchsorted(cs, classes[:, idx])  # [P, n_l]
        k, m = int(ks[l]), cs.size
        flat = rows[None, :] * m + cols + (np.arange(classes.shape[0]) * k * m)[:, None]
        counts = np.bincount(flat.ravel(), minlength=classes.shape[0] * k * m)
        for i, cnt in enumerate(counts.reshape(classes.shape[0], k, m)):
            correct[i] += cnt[np.arange(k), best_cluster_mapping(cnt)].sum()
    return correct / labels.size


def cluster_significance(clusters, labels, classes, classes_of_label, ks,
                         options: SignificanceOptions) -> dict:
    """Cluster accuracy against the null (clusters fixed, classes shuffled in labels), and
    its bootstrap interval (training samples resampled inside each class, the clusters and
    their mapping to classes kept)."""
    rng = np.random.default_rng([options.seed, 0, 2])
    draws = cluster_accuracies(clusters, labels,
                               np.concatenate([classes[None],
                                               permute_within(labels, classes,
                                                              options.permutations, rng)]),
                               classes_of_label, ks)
    observed, null = float(draws[0]), draws[1:]
    ci = None
    if options.bootstrap:
        correct = _cluster_correct(clusters, labels, classes, classes_of_label, ks)
        w = bootstrap_weights(classes, options.bootstrap, rng)
        ci = _interval(observed, w @ correct / classes.size)
    p50, p99 = _percentiles(null)
    return {"cluster_accuracy": observed, "cluster_accuracy_p_value": p_value(observed, null),
            "cluster_accuracy_null_p50": p50, "cluster_accuracy_null_p99": p99, "chance": p50,
            "cluster_accuracy_ci": ci}


def _cluster_correct(clusters, labels, classes, classes_of_label, ks) -> np.ndarray:
    """[n] 1 where a sample's cluster maps (best mapping per label) to its class, else 0."""
    offsets = np.concatenate([[0], np.cumsum(ks)[:-1]]).astype(np.int64)
    correct = np.zeros(labels.size)
    for l, cs in enumerate(classes_of_label):
        idx = np.flatnonzero(labels == l)
        cs = np.sort(np.asarray(cs))
        rows, cols = clusters[idx] - offsets[l], np.searchsorted(cs, classes[idx])
        counts = np.zeros((int(ks[l]), cs.size), np.int64)
        np.add.at(counts, (rows, cols), 1)
        mapping = best_cluster_mapping(counts)
        correct[idx] = mapping[rows] == cols
    return correct


def clp_significance(predicted: np.ndarray, test_labels: np.ndarray, test_classes: np.ndarray,
                     options: SignificanceOptions, lpo_predicted: np.ndarray | None = None
                     ) -> dict:
    """Train-mapped CLP against the null (test classes shuffled inside their labels), its
    bootstrap interval (test samples resampled inside each class) and, given LPO's test
    predictions, the paired interval of CLP - LPO (the same resamples for both)."""
    rng = np.random.default_rng([options.seed, 0, 3])
    correct = predicted == test_classes
    observed = float(np.mean(correct))
    perms = permute_within(test_labels, test_classes, options.permutations, rng)
    null = np.mean(perms == predicted[None, :], axis=1)
    ci = diff_ci = None
    diff = None if lpo_predicted is None else observed - float(np.mean(lpo_predicted
                                                                       == test_classes))
    if options.bootstrap:
        w = bootstrap_weights(test_classes, options.bootstrap, rng)
        ci = _interval(observed, w @ correct / test_classes.size)
        if diff is not None:
            paired = correct.astype(np.float64) - (lpo_predicted == test_classes)
            diff_ci = _interval(diff, w @ paired / test_classes.size)
    p50, p99 = _percentiles(null)
    return {"clp_train_mapping": observed, "clp_p_value": p_value(observed, null),
            "clp_null_p50": p50, "clp_null_p99": p99, "clp_ci": ci,
            "clp_minus_lpo": diff, "clp_minus_lpo_ci": diff_ci,
            "test_samples": int(test_classes.size)}


EPOCH_KEYS = ("msdr", "msdr_p_value", "msdr_null_p50", "msdr_null_p99", "msdr_null_p025",
              "msdr_null_p975")
KEYS = ("alpha", "permutations", "bootstrap", "seed", "epoch", "verdict", "reason", "p_value",
        "msdr", "msdr_p_value", "msdr_null_p50", "msdr_null_p99", "msdr_null_p025",
        "msdr_null_p975", "msdr_ci", "msdr_excess", "msdr_excess_ci",
        "cluster_accuracy", "cluster_accuracy_p_value", "cluster_accuracy_null_p50",
        "cluster_accuracy_null_p99", "chance", "cluster_accuracy_ci", "cluster_effect",
        "cluster_effect_ci", "clp_train_mapping", "clp_p_value", "clp_null_p50",
        "clp_null_p99", "clp_ci", "clp_effect", "clp_effect_ci", "clp_minus_lpo",
        "clp_minus_lpo_ci", "test_samples", "by_epoch")


def fine_structure_block(options: SignificanceOptions, epoch: int, msdr_by_epoch: dict,
                         clusters: dict | None, clp: dict | None,
                         reason: str | None = None) -> dict:
    """results.json["fine_structure"]: the verdict at ``options.alpha`` and its numbers.

    Args:
      epoch: the last analysed epoch (the block's MSDR, clusters and CLP are from it).
      msdr_by_epoch: epoch -> ``msdr_significance`` dict (None where not computable:
        that epoch's ``by_epoch`` entry then holds None values).
      clusters, clp: ``cluster_significance`` / ``clp_significance`` dicts or None.
      reason: why there is no verdict, when there is none.

    The verdict is "present" when the largest p-value of MSDR and cluster accuracy (MSDR
    alone without a clustering) is <= alpha, "absent" otherwise, None without MSDR.
    """
    block = dict.fromkeys(KEYS)
    block.update(alpha=options.alpha, permutations=options.permutations,
                 bootstrap=options.bootstrap, seed=options.seed, epoch=epoch, reason=reason)
    last = msdr_by_epoch.get(epoch)
    block["by_epoch"] = {e: {k: None if m is None else m[k] for k in EPOCH_KEYS}
                         for e, m in msdr_by_epoch.items()}
    if last is None:
        block["reason"] = reason or "MSDR is not computable at the last epoch"
        return block
    block.update(last)
    block.update(clusters or {})
    block.update(clp or {})
    # Effect sizes: each statistic's excess over its null's median, with the interval of
    # the statistic moved by the same amount (the null median is a fixed reference).
    for name, value, interval, median in (
            ("msdr_excess", "msdr", "msdr_ci", "msdr_null_p50"),
            ("cluster_effect", "cluster_accuracy", "cluster_accuracy_ci",
             "cluster_accuracy_null_p50"),
            ("clp_effect", "clp_train_mapping", "clp_ci", "clp_null_p50")):
        ci = block.get(interval)
        if block.get(value) is not None:
            block[name] = block[value] - block[median]
            block[f"{name}_ci"] = None if ci is None else [ci[0] - block[median],
                                                           ci[1] - block[median]]
    ps = [last["msdr_p_value"]] + ([clusters["cluster_accuracy_p_value"]] if clusters else [])
    block["p_value"] = max(ps)
    block["verdict"] = "present" if block["p_value"] <= options.alpha else "absent"
    if not math.isfinite(block["msdr"]):
        block.update(verdict=None, reason="MSDR is not finite")
    return block
