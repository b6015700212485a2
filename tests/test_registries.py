"""Each kind of thing is declared once: extending the toolkit is one entry.

A metric registered with ``metrics.registry.register`` appears in results.json, report.md,
the NC-curves figure and the summary, and a finished run whose results lack it is analysed
again, not retrained; a backbone is one ``BACKBONES`` entry; the label kinds are one list.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncfine_jax.cli import run_main
from ncfine_jax.metrics.registry import EPOCH_METRICS, EpochMetric, register, unregister
from ncfine_jax.models import BACKBONES, Backbone, get_model


def trace_ratio(stats):
    """Tr(Sigma_W) / Tr(Sigma_B): within-class over between-class variance (a toy metric
    built from ``ClassStats`` the way a contributor would add one)."""
    weights = stats.count / jnp.sum(stats.count)
    global_mean = jnp.sum(weights[:, None] * stats.mean, axis=0)
    within = jnp.sum(weights * stats.variance)
    between = jnp.sum(weights * jnp.sum((stats.mean - global_mean) ** 2, axis=1))
    return within / between


def trace_ratio_reference(x, y, num_classes):
    x = np.asarray(x, np.float64)
    mu = np.stack([x[y == c].mean(0) for c in range(num_classes)])
    w = np.bincount(y, minlength=num_classes) / len(y)
    within = sum(w[c] * ((x[y == c] - mu[c]) ** 2).sum(1).mean() for c in range(num_classes))
    between = (w[:, None] * (mu - (w[:, None] * mu).sum(0)) ** 2).sum()
    return within / between


@pytest.fixture
def toy_metric():
    metric = register(EpochMetric("trace_ratio", "TR", "Tr(Sigma_W) / Tr(Sigma_B)",
                                  "statistics", f"{__name__}:trace_ratio"))
    yield metric
    unregister(metric.key)


def test_a_registered_metric_reaches_every_output(tmp_path, toy_metric, monkeypatch):
    from ncfine_jax.analysis import outputs
    from ncfine_jax.analysis.options import AnalysisOptions
    from ncfine_jax.analysis.pipeline import analyze_features

    drawn = {}
    original = outputs.figs.plot_nc_curves
    monkeypatch.setattr(outputs.figs, "plot_nc_curves",
                        lambda series, *a, **k: drawn.update(series) or original(series, *a, **k))
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(4), 40)
    x = (rng.normal(size=(160, 6)) + 3.0 * np.eye(6)[classes]).astype(np.float32)
    sets = {e: {"train_features": x * s, "train_classes": classes, "train_labels": classes % 2}
            for e, s in ((1, 1.0), (2, 0.5))}
    results = analyze_features(sets, tmp_path, num_coarse=2, options=AnalysisOptions(
        reduce="none", significance=False))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["trace_ratio"]) == {"1", "2"}
    # Measured on the training labels (2 labels), against a float64 NumPy reference.
    assert on_disk["trace_ratio"]["1"] == pytest.approx(
        trace_ratio_reference(x, classes % 2, 2), rel=1e-5)
    assert list(on_disk)[list(on_disk).index("msdr") + 1] == "trace_ratio"
    report = (tmp_path / "report.md").read_text()
    assert "| TR |" in report and "- TR: Tr(Sigma_W) / Tr(Sigma_B)" in report
    assert set(drawn["TR"]) == {1, 2}
    assert results["trace_ratio"][1] == on_disk["trace_ratio"]["1"]


def test_a_run_analysed_before_a_metric_existed_is_analysed_again_not_retrained(
        tmp_path, capsys, request):
    from ncfine_jax.experiment import EXPERIMENTS, main

    argv = ["--epochs", "2", "--width", "16", "--clp-reduce", "none", "--no-progress",
            "--workdir", str(tmp_path / "w")]
    run = lambda: run_main(lambda a: main(EXPERIMENTS["coarse_digits"], a), argv)  # noqa: E731
    assert run() == 0
    log = (tmp_path / "w" / "log.jsonl").read_bytes()
    assert "trace_ratio" not in json.loads((tmp_path / "w" / "results.json").read_text())
    request.getfixturevalue("toy_metric")
    capsys.readouterr()
    assert run() == 0
    out = capsys.readouterr().out
    assert "analysing again (results.json lacks trace_ratio, added since it was written)" in out
    assert "compiling" not in out
    assert "trace_ratio" in json.loads((tmp_path / "w" / "results.json").read_text())
    assert (tmp_path / "w" / "log.jsonl").read_bytes() == log


def test_the_registry_refuses_a_taken_key_or_an_unknown_source():
    with pytest.raises(ValueError, match="already registered"):
        register(EPOCH_METRICS["nc2"])
    with pytest.raises(ValueError, match="source"):
        register(EpochMetric("x", "X", "x", "elsewhere"))
    with pytest.raises(ValueError, match="names its function"):
        register(EpochMetric("x", "X", "x", "statistics"))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_builds_with_the_registry_feature_dimension(name):
    backbone = BACKBONES[name]
    for width in (None, 4):
        model = get_model(name, 3, width=width)
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        shapes = jax.eval_shape(lambda k, x: model.apply(model.init(k, x), x),
                                jax.random.key(0), x)
        assert shapes[1].shape == (2, backbone.features(width))
    assert name in BACKBONES and (name == "mlp") == backbone.takes_vectors


def test_a_new_backbone_is_one_registry_entry(tmp_path, monkeypatch):
    """What docs/design.md says adding a backbone takes: a builder and one entry."""
    from conftest import make_image_data, tiny_config

    from ncfine_jax.train import train

    monkeypatch.setitem(BACKBONES, "mlp_wide", Backbone(
        "mlp_wide", "ncfine_jax.models.mlp:mlp", "a wider MLP", "hidden units", 64,
        lambda width: width, takes_vectors=True))
    config = dataclasses.replace(tiny_config(), arch="mlp_wide", epochs=1,
                                 save_features_at=(1,))
    result = train(config, make_image_data(), tmp_path, progress=False)
    features = np.load(tmp_path / "features" / "epoch_0001.npz")["train_features"]
    assert features.shape[1] == BACKBONES["mlp_wide"].features(config.width)
    assert result.final["epoch"] == 1


def test_label_kinds_are_one_list():
    from ncfine_jax import labels
    from ncfine_jax.experiment import config

    assert config.KINDS is labels.KINDS and config.COARSE_KINDS is labels.COARSE_KINDS
    assert set(labels.COARSE_KINDS) <= set(labels.KINDS)
