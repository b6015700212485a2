"""A grid point trains as its single run, for every backbone family (3 points, wd = 0 among them).

Float32 training of these nets is chaotic: a 1e-7 change anywhere grows about tenfold every
two steps, so after many steps a fixed tolerance would measure the chaos, not the code.
Hence three comparisons, each the right one for its claim:

* ``vectorize=False`` (one-model stacks, one after the other) runs the single run's code
  with the single run's compiled programs: equal bit for bit.
* ``vectorize=True`` (the models stacked and vmapped) after ONE step: equal to float
  rounding in parameters, BatchNorm statistics, momentum and features.
* ``vectorize=True`` after several steps: no farther from the single run than a
  float-noise control measured here, times a small factor. The control is the drift of
  the same single run from initial parameters perturbed by 1e-7 (relative): as far as
  float rounding alone carries these nets in that many steps. That drift is bimodal:
  usually ~3e-7, but now and then a ReLU or max-pool near-tie flips and the run jumps to
  ~1e-4 (which inputs flip depends on the CPU's code generation). A grid point may hit
  such a flip too, so the control is the largest drift of several nudges (seeds) of
  every point, the float-noise spread of this net on these data.

DenseNet-121 takes minutes to compile on a CPU, so its case is marked ``heavy`` (run with
``make test-heavy``); ResNet-18 and VGG-11 run in the default suite.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ncfine_jax.io import read_jsonl
from ncfine_jax.train import TrainConfig, TrainData, build_engine, train, train_grid

pytestmark = pytest.mark.filterwarnings("ignore:.*donated buffers were not usable")

POINTS = ((0.01, 5e-4), (0.01, 0.0), (0.005, 5e-4))  # point 1 has wd = 0
STEPS = 6  # one step per epoch (32 samples, batch 32)
# How far beyond the float-noise control a vmapped grid point may drift.
CONTROL_FACTOR = 10.0
# Nudged runs per point in the several-step control (pooled over the points).
CONTROL_SEEDS = 3


def tiny_images(n: int = 32, m: int = 16, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, n + m).astype(np.int32)
    x = np.clip(rng.normal(90 + 30 * classes[:, None, None, None], 50, (n + m, 32, 32, 3)),
                0, 255).astype(np.uint8)
    return TrainData(x[:n], classes[:n], classes[:n], x[n:], classes[n:], classes[n:], 4)


def configs_of(arch: str, width: int) -> list[TrainConfig]:
    base = TrainConfig(arch=arch, width=width, epochs=STEPS, batch_size=32, schedule="constant",
                       seed=1, save_features_at=(1, STEPS), checkpoint_every=STEPS,
                       eval_batch_size=16)
    return [dataclasses.replace(base, lr=lr, weight_decay=wd) for lr, wd in POINTS]


def perturbed(engine, stack, scale: float = 1e-7, seed: int = 0):
    """``stack`` with every parameter multiplied by (1 + scale * N(0, 1))."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: np.asarray(a) * (1 + scale * rng.standard_normal(a.shape))
                          .astype(np.float32), stack.params)
    return engine.stack([engine.unstack(stack.replace(params=params), 0)])


def leaves(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def relative(a, b) -> float:
    a, b = leaves(a), leaves(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_epochs(engine, stack, epochs: int, first: int = 0):
    """``epochs`` epochs of ``stack`` from epoch index ``first``; stack and test features."""
    key = engine.init_state().key
    for e in range(first, first + epochs):
        stack, alive, _ = engine.run_epoch(stack, engine.alive(stack.step.shape[0]), key,
                                           np.int32(e), engine.x_train, engine.y_train)
        assert np.asarray(alive).all()
    _, features = engine.evaluate(stack.params, stack.batch_stats, engine.x_test)
    return stack, np.asarray(features)


FAMILIES = [("resnet18", 8), ("vgg11", 8),
            pytest.param(("densenet121", 8), marks=pytest.mark.heavy, id="densenet121")]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f[0])
def test_grid_points_equal_single_runs(family, tmp_path):
    arch, width = family
    data = tiny_images()
    configs = configs_of(arch, width)
    two = build_engine(configs[0], data)                   # a single run: 1 x 2 devices
    stack3 = build_engine(configs[0], data, num_models=3)  # the vmapped grid
    assert two.mesh_shape == (1, 2) and stack3.epoch_mode == "loop"

    # One step: the stacked models equal their single runs to float rounding. The absolute
    # tolerance of each part is 2e-6, or 10x the part's largest one-step drift of the single
    # run from parameters nudged by 1e-7 where rounding alone moves a deep net further
    # (DenseNet-121's 120 BatchNorms: ~1e-5 after one step).
    single1 = [run_epochs(two, two.init_stack([c]), 1) for c in configs]
    nudged1 = [run_epochs(two, perturbed(two, two.init_stack([c])), 1) for c in configs]
    grid1, grid1_features = run_epochs(stack3, stack3.init_stack(configs), 1)
    for i, (state, features) in enumerate(single1):
        got = stack3.unstack(grid1, i)
        want = two.unstack(state, 0)
        nudged = two.unstack(nudged1[i][0], 0)
        for part in ("params", "batch_stats", "opt_state"):
            wants = jax.tree.leaves(getattr(want, part))
            control = max((float(np.max(np.abs(np.asarray(z) - np.asarray(y)), initial=0.0))
                           for y, z in zip(wants, jax.tree.leaves(getattr(nudged, part)))),
                          default=0.0)
            atol = max(2e-6, CONTROL_FACTOR * control)
            for x, y in zip(jax.tree.leaves(getattr(got, part)), wants):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=atol,
                                           err_msg=f"{arch} point {i} {part} after one step")
        atol = max(2e-5, CONTROL_FACTOR * float(np.max(np.abs(nudged1[i][1][0] - features[0]))))
        np.testing.assert_allclose(grid1_features[i], features[0], rtol=2e-5, atol=atol)

    # Several steps: grid vs single within a small multiple of the float-noise control.
    grid, grid_features = run_epochs(stack3, grid1, STEPS - 1, first=1)

    def distance(state_a, features_a, state_b, features_b):
        return max(relative(state_a.params, state_b.params), relative(features_a, features_b))

    drifts, controls = [], []
    for i, c in enumerate(configs):
        state, features = run_epochs(two, single1[i][0], STEPS - 1, first=1)
        want = two.unstack(state, 0)
        nudged, nudged_features = run_epochs(two, nudged1[i][0], STEPS - 1, first=1)
        controls.append(distance(two.unstack(nudged, 0), nudged_features[0], want, features[0]))
        for seed in range(1, CONTROL_SEEDS):
            nudged, nudged_features = run_epochs(
                two, perturbed(two, two.init_stack([c]), seed=seed), STEPS)
            controls.append(distance(two.unstack(nudged, 0), nudged_features[0], want,
                                     features[0]))
        drifts.append(distance(stack3.unstack(grid, i), grid_features[i], want, features[0]))
    assert min(controls) > 0  # float rounding alone already separates the control's runs
    assert max(drifts) <= CONTROL_FACTOR * max(controls), (arch, drifts, controls)

    # Sequential grid == the single run, bit for bit, through the workdir API (2 epochs; the
    # wd = 0 point is checked against its single run).
    short = [dataclasses.replace(c, epochs=2, save_features_at=(1, 2), checkpoint_every=2)
             for c in configs]
    seq = train_grid(short, data, [tmp_path / f"seq{i}" for i in range(3)], vectorize=False,
                     progress=False)
    assert [p.diverged for p in seq] == [False] * 3
    single = train(short[1], data, tmp_path / "single", progress=False)
    for x, y in zip(jax.tree.leaves(seq[1].state), jax.tree.leaves(single.state)):
        assert np.array_equal(np.asarray(x), np.asarray(y)), arch
    strip = lambda log: [{k: v for k, v in r.items() if "time" not in k} for r in log]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "seq1" / "log.jsonl")) == \
        strip(read_jsonl(tmp_path / "single" / "log.jsonl"))
    for epoch in (1, 2):
        name = f"features/epoch_{epoch:04d}.npz"
        with np.load(tmp_path / "seq1" / name) as a, np.load(tmp_path / "single" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
