"""Model registry: parameter counts, shapes/dtypes, BatchNorm semantics, bf16 compute.

Shapes come from ``jax.eval_shape`` / ``jax.make_jaxpr`` (tracing only, no compile), so
the whole file costs seconds; the numeric checks use a small MLP with BatchNorm and a
single convolution against float64 NumPy references.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncfine_jax.errors import ConfigError
from ncfine_jax.models import BACKBONES, get_model, param_count
from ncfine_jax.models.common import conv
from ncfine_jax.models.vgg import VGG

# Trainable parameters at 10 classes of kuangliu/pytorch-cifar's PyTorch models
# (its README table / torchsummary), which these backbones reproduce.
PYTORCH_REFERENCE_COUNTS = {
    "resnet18": 11_173_962,
    "densenet121": 6_956_298,
    "vgg11": 9_231_114,
    "vgg13": 9_416_010,
    "vgg16": 14_728_266,
    "vgg19": 20_040_522,
}

TINY = 4  # width for shape tests


def _densenet_feature_dim(k: int, blocks=(6, 12, 24, 16)) -> int:
    channels = 2 * k
    for i, n in enumerate(blocks):
        channels += n * k
        if i < len(blocks) - 1:
            channels = channels // 2
    return channels


def _feature_dim(name: str, width: int) -> int:
    if name == "densenet121":
        return _densenet_feature_dim(width)
    if name == "mlp":
        return width
    return 8 * width  # ResNet last stage and VGG last stage have 8x the base width


def test_registry_names_match_design():
    assert set(BACKBONES) == {"resnet18", "densenet121", "vgg11", "vgg13", "vgg16", "vgg19",
                           "mlp"}


@pytest.mark.parametrize("name", sorted(PYTORCH_REFERENCE_COUNTS))
def test_param_count_matches_pytorch_reference(name):
    assert param_count(name, 10) == PYTORCH_REFERENCE_COUNTS[name]


def test_param_count_scales_with_classes_and_mlp_input():
    # Only the classifier depends on C: d_feat * C + C.
    assert param_count("resnet18", 100) - param_count("resnet18", 10) == 90 * (512 + 1)
    assert param_count("densenet121", 20) - param_count("densenet121", 10) == 10 * (1024 + 1)
    d, w, depth, c = 64, 33, 3, 7
    expected = (d * w + w) + (depth - 1) * (w * w + w) + (w * c + c)
    assert param_count("mlp", c, input_shape=(d,), width=w, depth=depth) == expected
    # With BatchNorm the hidden Dense drops its bias and BN adds scale + bias.
    assert (param_count("mlp", c, input_shape=(d,), width=w, depth=depth, batch_norm=True)
            == expected + depth * w)


def _abstract_apply(model, x, train):
    def run(key, x):
        variables = model.init(key, x, train=False)
        if train:
            out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        else:
            out, updates = model.apply(variables, x, train=False), {}
        return variables, out, updates

    return jax.eval_shape(run, jax.random.key(0), x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_output_shapes_and_dtypes(name, dtype):
    num_classes, batch = 5, 2
    model = get_model(name, num_classes, width=TINY, dtype=dtype)
    x = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
    variables, (logits, features), updates = _abstract_apply(model, x, train=True)
    d = _feature_dim(name, TINY)
    assert BACKBONES[name].features(TINY) == d  # the registry's feature dimension
    assert logits.shape == (batch, num_classes) and logits.dtype == jnp.float32
    assert features.shape == (batch, d) and features.dtype == jnp.float32
    assert variables["params"]["classifier"]["kernel"].shape == (d, num_classes)
    assert variables["params"]["classifier"]["bias"].shape == (num_classes,)
    # Parameters (and BN statistics) stay float32 whatever the compute dtype.
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype == jnp.float32
    if name == "mlp":
        assert "batch_stats" not in variables
    else:
        assert jax.tree_util.tree_structure(updates["batch_stats"]) == \
            jax.tree_util.tree_structure(variables["batch_stats"])


def test_mlp_takes_vectors():
    model = get_model("mlp", 3, width=8, depth=1)
    x = jax.ShapeDtypeStruct((4, 64), jnp.float32)
    _, (logits, features), _ = _abstract_apply(model, x, train=False)
    assert logits.shape == (4, 3) and features.shape == (4, 8)


def _dtypes_of(jaxpr, primitive):
    """Input dtypes of every ``primitive`` equation in a jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(tuple(v.aval.dtype for v in eqn.invars))
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(inner, "jaxpr", inner)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    found.extend(_dtypes_of(inner, primitive))
    return found


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "vgg11"])
def test_bf16_convolutions_run_in_bf16(name):
    model = get_model(name, 10, width=2, dtype="bfloat16")
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x).jaxpr
    conv_dtypes = _dtypes_of(jaxpr, "conv_general_dilated")
    assert conv_dtypes, "no convolution found in the jaxpr"
    assert all(dt == (jnp.bfloat16, jnp.bfloat16) for dt in conv_dtypes), conv_dtypes
    # The only matmul is the classifier, kept in float32 on the float32 features.
    assert _dtypes_of(jaxpr, "dot_general") == [(jnp.float32, jnp.float32)]


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError, match="unknown name 'resnet19'.*densenet121.*resnet18"):
        get_model("resnet19", 10)


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 3}, "unknown option"),
    ({"width": 0}, "width must be an integer >= 1"),
    ({"width": 2.5}, "width must be"),
    ({"dtype": "int32"}, "float dtype"),
    ({"dtype": "notatype"}, "not a dtype"),
])
def test_bad_kwargs_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        get_model("resnet18", 10, **kwargs)
    with pytest.raises(ConfigError, match="num_classes"):
        get_model("mlp", 0)
    with pytest.raises(ConfigError, match="batch_norm must be True or False"):
        get_model("mlp", 10, batch_norm="yes")


def _np_bn_mlp(x, params, stats, train):
    """float64 reference of the MLP with BatchNorm: momentum 0.9, eps 1e-5, running var
    updated with the biased batch var (Flax; PyTorch would use the unbiased one)."""
    h = x.reshape(x.shape[0], -1).astype(np.float64)
    new_stats = {}
    i = 0
    while f"hidden_{i}" in params:
        h = h @ np.asarray(params[f"hidden_{i}"]["kernel"], np.float64)
        bn, st = params[f"bn_{i}"], stats[f"bn_{i}"]
        if train:
            mean, var = h.mean(0), h.var(0)
            new_stats[f"bn_{i}"] = {"mean": 0.9 * np.asarray(st["mean"]) + 0.1 * mean,
                                   "var": 0.9 * np.asarray(st["var"]) + 0.1 * var}
        else:
            mean, var = np.asarray(st["mean"], np.float64), np.asarray(st["var"], np.float64)
        h = (h - mean) / np.sqrt(var + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
        h = np.maximum(h, 0.0)
        i += 1
    w, b = params["classifier"]["kernel"], params["classifier"]["bias"]
    return h @ np.asarray(w, np.float64) + np.asarray(b, np.float64), h, new_stats


def test_batchnorm_train_and_eval_match_float64_reference():
    seed = np.random.SeedSequence().entropy % 2**31
    rng = np.random.default_rng(seed)
    model = get_model("mlp", 6, width=16, depth=2, batch_norm=True)
    x = rng.normal(size=(8, 2, 2, 3)).astype(np.float32)
    variables = model.init(jax.random.key(seed), x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    # Non-trivial scale/bias and running statistics, so eval mode is really tested.
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32), params)
    stats = {k: {"mean": rng.normal(size=16).astype(np.float32),
                 "var": rng.uniform(0.5, 2.0, size=16).astype(np.float32)} for k in stats}
    variables = {"params": params, "batch_stats": stats}

    (logits, features), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    ref_logits, ref_features, ref_stats = _np_bn_mlp(x, params, stats, train=True)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4, err_msg=f"seed {seed}")
    np.testing.assert_allclose(features, ref_features, rtol=1e-4, atol=1e-4)
    for layer, ref in ref_stats.items():
        for key in ("mean", "var"):
            np.testing.assert_allclose(updates["batch_stats"][layer][key], ref[key],
                                       rtol=1e-4, atol=1e-5, err_msg=f"{layer}/{key} seed {seed}")
            assert not np.allclose(updates["batch_stats"][layer][key], stats[layer][key])

    logits_eval, features_eval = model.apply(variables, x, train=False)
    ref_logits, ref_features, _ = _np_bn_mlp(x, params, stats, train=False)
    np.testing.assert_allclose(logits_eval, ref_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features_eval, ref_features, rtol=1e-4, atol=1e-4)
    # Eval mode is per-sample: one sample alone gives the same output as in the batch.
    alone, _ = model.apply(variables, x[:1], train=False)
    np.testing.assert_allclose(alone, logits_eval[:1], rtol=1e-5, atol=1e-5)
    # The classifier reads exactly the returned features.
    w, b = params["classifier"]["kernel"], params["classifier"]["bias"]
    np.testing.assert_allclose(logits_eval, features_eval @ np.asarray(w) + np.asarray(b),
                               rtol=1e-5, atol=1e-5)


def test_conv_net_train_mode_updates_every_batch_stat():
    # A two-stage VGG keeps this eager run cheap; the layers are the registry's.
    model = VGG(num_classes=3, config=(1, "M", 2, "M"), width=2)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    variables = model.init(jax.random.key(1), x, train=False)
    logits, features = model.apply(variables, x, train=False)
    (_, _), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 3) and features.shape == (2, 4)
    assert np.all(np.isfinite(logits)) and np.all(features >= 0)  # features follow a ReLU
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                     updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))


def _np_conv_torch(x, w, stride, pad):
    """float64 PyTorch-semantics conv: x [b, h, w, c], w [k, k, c, o], symmetric padding."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[0]
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w.astype(np.float64))
    return out


@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (1, 2)])
def test_conv_matches_pytorch_padding(kernel, stride):
    seed = np.random.SeedSequence().entropy % 2**31
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    layer = conv(4, kernel, stride, jnp.float32)
    variables = layer.init(jax.random.key(seed), x)
    w = np.asarray(variables["params"]["kernel"])
    # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert np.abs(w).max() <= 1 / math.sqrt(kernel * kernel * 3) + 1e-7
    out = layer.apply(variables, x)
    ref = _np_conv_torch(x, w, stride, (kernel - 1) // 2)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"seed {seed}")


def test_modules_are_linen():
    for name in BACKBONES:
        assert isinstance(get_model(name, 10), nn.Module)
