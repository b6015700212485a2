"""What makes the flagship fast on a GPU, checked on a CPU: one compilation per program
however many epochs run, the state donated to the step, bf16 convolutions with float32
parameters under bf16 precision, "auto" precision resolved and recorded, the ResNet-18
cost and the persistent compilation cache."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_image_data
from ncfine_jax.errors import ConfigError
from ncfine_jax.models import get_model
from ncfine_jax.train import TrainConfig, build_engine
from ncfine_jax.train.config import EVAL_COST_PER_IMAGE, resolve_precision
from ncfine_jax.train.state import create_train_state, make_optimizer
from ncfine_jax.train.step import make_train_step

warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/backend_compile_duration")


def tiny_resnet_config(**kw) -> TrainConfig:
    """ResNet-18 at width 4 on 32 fake images, batch 16: 2 steps per epoch."""
    return TrainConfig(**{**dict(arch="resnet18", width=4, lr=0.05, epochs=3, batch_size=16,
                                 schedule="step", augment=True, eval_batch_size=16), **kw})


def tiny_data():
    return make_image_data(n=32, m=16)


class CompileCounter:
    """Counts jax's trace and XLA-compile events while active."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


@pytest.mark.parametrize("mode", ["loop", "scan"])
def test_train_and_eval_compile_once_whatever_the_epochs(mode):
    engine = build_engine(tiny_resnet_config(), tiny_data(), epoch_mode=mode)
    state = engine.init_state()
    with CompileCounter() as first:
        state, _ = engine.epoch(state)
        logits, _ = engine.evaluate(*jax.tree.map(lambda a: a[None], (state.params,
                                                                       state.batch_stats)),
                                    engine.x_test)
        jax.block_until_ready(logits)
    assert first.count > 0  # the counter sees compilations at all
    with CompileCounter() as later:
        for _ in range(2):
            state, _ = engine.epoch(state)
            logits, _ = engine.evaluate(*jax.tree.map(lambda a: a[None], (
                state.params, state.batch_stats)), engine.x_test)
        jax.block_until_ready(logits)
    assert later.count == 0
    if mode == "loop":
        assert engine.run_epoch.step_fn._cache_size() == 1


def test_state_init_is_one_program_bit_identical_to_the_eager_one():
    from ncfine_jax.train.state import create_train_state

    config = tiny_resnet_config(width=3)  # a width no other test compiles
    engine = build_engine(config, tiny_data())
    with CompileCounter() as init:
        state = engine.init_state()
    eager = create_train_state(config, engine.model, engine.input_shape, engine.tx)
    # Traced and compiled once (plus the replication onto the mesh), where the eager
    # initialisers dispatch a one-op program per parameter tensor.
    assert 0 < init.count <= 4, init.count
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(eager)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def _donated_inputs(lowered) -> int:
    text = lowered.as_text()
    return text.count("tf.aliasing_output") + text.count("jax.buffer_donor")


@pytest.mark.parametrize("mode", ["loop", "scan"])
def test_train_step_donates_the_state(mode):
    engine = build_engine(tiny_resnet_config(), tiny_data(), epoch_mode=mode)
    states, alive = engine.stack([engine.init_state()]), engine.alive(1)
    key = engine.init_state().key
    n_state = len(jax.tree.leaves(states))
    if mode == "loop":
        batches = jnp.zeros((engine.steps_per_epoch, 16), jnp.int32)
        lowered = engine.run_epoch.step_fn.lower(states, alive, engine.x_train,
                                                 engine.y_train, batches, jnp.int32(0), key,
                                                 jnp.int32(0))
    else:
        lowered = engine.run_epoch.lower(states, alive, key, np.int32(0), engine.x_train,
                                         engine.y_train)
    # Every state leaf is donated (aliased to an output or marked a donor), nothing else.
    assert _donated_inputs(lowered) == n_state
    undonated = jax.jit(lambda s: jax.tree.map(lambda a: a + 0, s)).lower(states)
    assert _donated_inputs(undonated) == 0  # the probe can tell


def _conv_operand_dtypes(jaxpr) -> list[tuple]:
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(tuple(v.aval.dtype for v in eqn.invars))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                found += _conv_operand_dtypes(inner)
    return found


@pytest.mark.parametrize("precision,dtype", [("bf16", jnp.bfloat16), ("fp32", jnp.float32)])
def test_bf16_convolutions_with_float32_parameters(precision, dtype):
    config = tiny_resnet_config(precision=precision)
    data = tiny_data()
    model = get_model("resnet18", data.num_labels, dtype=config.compute_dtype, width=4)
    tx = make_optimizer(config, 2)
    state = create_train_state(config, model, (32, 32, 3), tx)
    mean, std = data.normalization()
    step = make_train_step(model, tx, mean, std, augment=True,
                           compute_dtype=config.compute_dtype)
    batch = {"inputs": jnp.asarray(data.x_train[:16]),
             "labels": jnp.asarray(data.train_labels[:16], jnp.int32)}
    closed, out_shape = jax.make_jaxpr(step, return_shape=True)(state, batch,
                                                                jax.random.PRNGKey(0))
    convs = _conv_operand_dtypes(closed.jaxpr)
    assert len(convs) >= 20 * 2  # 20 convs forward, more for their gradients
    assert all(d == dtype for ops in convs for d in ops)
    new_state = out_shape[0]
    for tree in (state.params, new_state.params, new_state.opt_state):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)
                if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}


def _macs(jaxpr) -> float:
    """Multiply-adds of the convolutions (kernel HWIO: h*w*in per output element) and
    matrix products of a jaxpr, padded positions included (the conventional count)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval.shape
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            total += np.prod(out) * np.prod(kernel[:-1]) / eqn.params["feature_group_count"]
        elif eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            total += np.prod(out) * np.prod([eqn.invars[0].aval.shape[i] for i in contract])
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                total += _macs(inner)
    return total


def test_resnet18_cost_at_cifar_size():
    # Conventional count of a CIFAR ResNet-18 (3x3 stem, no max-pool, widths 64..512):
    # 0.556 GMAC per 32x32 image (stem 1.8 M, stages 151/117/116/116 M, shortcuts 4.2 M,
    # classifier 5 k). XLA's cost model skips the multiply-adds on the zero padding and
    # reports 0.966 GFLOP (2 FLOPs per multiply-add) for the same forward pass; both
    # measured here with jax 0.10.2, locked within 2%.
    model = get_model("resnet18", 10)
    x = jnp.zeros((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))

    def forward(v, x):
        return model.apply(v, x, train=False)

    gmac_per_image = _macs(jax.make_jaxpr(forward)(variables, x).jaxpr) / 2 / 1e9
    assert gmac_per_image == pytest.approx(0.5554, rel=0.02)
    cost = jax.jit(forward).lower(variables, x).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert cost["flops"] / 2 / 1e9 == pytest.approx(0.966, rel=0.02)
    # The training step (forward, backward, SGD update) at batch 8: 2.91 GFLOP per image,
    # 3.0x the forward pass (``train.config.EVAL_COST_PER_IMAGE`` is its inverse).
    config = TrainConfig(arch="resnet18", precision="fp32", augment=False)
    tx = make_optimizer(config, 10)
    state = jax.eval_shape(lambda: create_train_state(config, model, (32, 32, 3), tx))
    step = make_train_step(model, tx, np.zeros(3, np.float32), np.ones(3, np.float32),
                           augment=False)
    batch = {"inputs": jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.uint8),
             "labels": jax.ShapeDtypeStruct((8,), jnp.int32)}
    step_cost = jax.jit(step).lower(state, batch, jax.random.PRNGKey(0)).cost_analysis()
    step_cost = step_cost[0] if isinstance(step_cost, (list, tuple)) else step_cost
    assert step_cost["flops"] / 8 / 1e9 == pytest.approx(2.91, rel=0.02)
    assert step_cost["flops"] / 8 / (cost["flops"] / 2) == pytest.approx(
        1 / EVAL_COST_PER_IMAGE, rel=0.05)


def test_auto_precision_resolves_per_backend(monkeypatch):
    assert resolve_precision("auto") == "fp32"  # the tests run on CPU
    assert resolve_precision("auto", "gpu") == "bf16" == resolve_precision("auto", "tpu")
    assert resolve_precision("fp32", "gpu") == "fp32"
    auto = TrainConfig()  # the default
    assert auto.precision == "auto" and auto.compute_dtype == jnp.float32
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert auto.resolved().precision == "bf16"
    assert auto.compute_dtype == jnp.bfloat16
    assert TrainConfig(precision="fp32").resolved().precision == "fp32"


def test_auto_precision_is_recorded_resolved(tmp_path, monkeypatch):
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.cli import main

    monkeypatch.setenv("NCFINE_NO_COMPILE_CACHE", "1")
    workdir = tmp_path / "run"
    main(EXPERIMENTS["coarse_digits"], ["--epochs", "1", "--workdir", str(workdir),
                                        "--no-progress", "--no-analysis", "--precision", "auto"])
    experiment = json.loads((workdir / "experiment.json").read_text())
    engine = json.loads((workdir / "config.json").read_text())
    assert experiment["precision"] == "fp32" == engine["config"]["precision"]
    # The resolved value is the identity: the same command with --precision fp32 resumes.
    main(EXPERIMENTS["coarse_digits"], ["--epochs", "1", "--workdir", str(workdir),
                                        "--no-progress", "--no-analysis",
                                        "--precision", "fp32"])


def test_compile_cache_default_and_opt_out(tmp_path, monkeypatch):
    from ncfine_jax.train import compile_cache

    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NCFINE_NO_COMPILE_CACHE", raising=False)
    previous = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache.enable_compile_cache() == tmp_path / "jax"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert compile_cache.enable_compile_cache() == tmp_path / "mine"  # kept
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("NCFINE_NO_COMPILE_CACHE", "1")
        assert compile_cache.enable_compile_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
    monkeypatch.delenv("NCFINE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.compile_cache_dir() == tmp_path / "xdg" / "ncfine_jax" / "jax"


def test_nothing_compiles_after_the_first_epoch(tmp_path):
    # Features of the training set are saved at epoch 3: without compiling evaluation
    # for that shape before training, its program would be compiled in the middle of the
    # run (after epoch 2).
    from ncfine_jax.train import train

    config = tiny_resnet_config(epochs=4, save_features_at=(3,), eval_every=1,
                                checkpoint_every=1, width=2)
    compiled_after = []
    counter = CompileCounter()
    ended = []

    def on_epoch_end(epoch, record):
        ended.append(epoch)
        compiled_after.append(counter.count)

    with counter:
        train(config, tiny_data(), tmp_path / "run", progress=False, on_epoch_end=on_epoch_end)
    assert ended == [1, 2, 3, 4]
    assert compiled_after[0] > 0  # the epoch program and evaluation compiled before
    assert compiled_after[-1] == compiled_after[0], compiled_after


class HostFetchCounter:
    """Counts device-to-host fetches: every read of a jax array's value (``np.asarray``,
    ``float``, ``int``, printing) goes through ``ArrayImpl._value``."""

    def __init__(self, monkeypatch):
        from jax._src import array

        if not isinstance(getattr(array.ArrayImpl, "_value", None), property):
            pytest.skip("this jax has no ArrayImpl._value to count host fetches with")
        self.count = 0
        value = array.ArrayImpl._value

        def counted(a):
            self.count += 1
            return value.fget(a)

        monkeypatch.setattr(array.ArrayImpl, "_value", property(counted))


@pytest.mark.parametrize("mode", ["loop", "scan"])
def test_host_fetches_per_epoch_do_not_grow_with_the_steps(tmp_path, monkeypatch, mode):
    from ncfine_jax.train import TrainData, train

    def fetches(n_train: int, epochs: int) -> int:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n_train, 8)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32)
        data = TrainData(x, y, y, x[:16], y[:16], y[:16], 2)
        config = TrainConfig(arch="mlp", width=8, epochs=epochs, batch_size=8, augment=False,
                             eval_every=1, eval_batch_size=16, checkpoint_every=100,
                             schedule="constant", lr=0.01)
        counter = HostFetchCounter(monkeypatch)
        train(config, data, tmp_path / f"{mode}_{n_train}_{epochs}", progress=False,
              epoch_mode=mode)
        return counter.count

    # 2 and 8 steps per epoch; one epoch more adds the same fetches whatever the steps.
    per_epoch = [fetches(n, 3) - fetches(n, 2) for n in (16, 64)]
    assert per_epoch[0] == per_epoch[1] > 0, per_epoch
    assert fetches(64, 2) == fetches(16, 2)


def test_eval_every_evaluates_the_test_set_every_n_epochs_and_at_the_end(tmp_path):
    from ncfine_jax.train import TrainData, train
    from ncfine_jax.train.config import eval_interval

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    data = TrainData(x, y, y, x[:32], y[:32], y[:32], 2)
    config = TrainConfig(arch="mlp", width=8, epochs=7, batch_size=16, augment=False,
                         eval_every=3, save_features_at=(5,), eval_batch_size=16,
                         schedule="constant", lr=0.01)
    result = train(config, data, tmp_path / "run", progress=False)
    evaluated = [r["epoch"] for r in result.log if r["test_accuracy"] is not None]
    assert evaluated == [3, 5, 6, 7]  # every 3rd, the features epoch and the last
    assert all(r["train_accuracy"] is not None for r in result.log)
    # Evaluation reads the state and changes nothing: the weights are those of a run
    # evaluating every epoch.
    every = train(dataclasses.replace(config, eval_every=1), data, tmp_path / "every",
                  progress=False)
    assert all(r["test_accuracy"] is not None for r in every.log)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(every.state.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # "auto": the cheapest interval within 3% of the training compute.
    assert eval_interval("auto", 10_000, 49_920) == 3  # full CIFAR-10
    assert eval_interval("auto", 1_000, 49_920) == 1
    assert eval_interval("auto", 1_000, 2_432) == 5  # the cpu paper scale
    assert eval_interval(7, 10_000, 100) == 7
    with pytest.raises(ConfigError, match="eval_every"):
        TrainConfig(eval_every=0).validate()
    with pytest.raises(ConfigError, match="eval_every"):
        TrainConfig(eval_every="sometimes").validate()
