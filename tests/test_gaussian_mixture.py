"""Gaussian-mixture MLP study: data, training against float64 NumPy, vmap == loop, CLI."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncfine_jax import gaussian_mixture as gm
from ncfine_jax.cli import run_main
from ncfine_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# Tiny sizes: every test below reuses this one config, so it compiles once per shape.
SMALL = gm.GMConfig(num_clusters=8, samples_per_cluster=40, d_input=16, d_hidden=16,
                    steps=40, lr=gm.DEFAULT_LR)


def _load_cli():
    spec = importlib.util.spec_from_file_location("gm_cli", REPO / "experiments" / "gaussian_mixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_shapes_labels_and_determinism():
    seed = np.random.SeedSequence().entropy % 2**31
    key = jax.random.key(seed)
    x, clusters, coarse = gm.make_gaussian_mixture(key, 8, 30, 12, sigma2=2.0)
    assert x.shape == (240, 12) and x.dtype == jnp.float32
    assert clusters.dtype == jnp.int32 and coarse.dtype == jnp.int32
    np.testing.assert_array_equal(np.bincount(np.asarray(clusters)), [30] * 8)
    np.testing.assert_array_equal(np.asarray(coarse), np.asarray(clusters) % 4)  # eq. 4
    x2, c2, s2 = gm.make_gaussian_mixture(key, 8, 30, 12, sigma2=2.0)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x2))
    x3, _, _ = gm.make_gaussian_mixture(jax.random.key(seed + 1), 8, 30, 12, sigma2=2.0)
    assert not np.allclose(np.asarray(x), np.asarray(x3))


def test_generator_statistics():
    # Large d so empirical moments are tight: noise variance 1, mean spread sigma2.
    x, clusters, _ = gm.make_gaussian_mixture(jax.random.key(3), 8, 200, 400, sigma2=9.0)
    x, clusters = np.asarray(x, np.float64), np.asarray(clusters)
    means = np.stack([x[clusters == c].mean(0) for c in range(8)])
    within = np.mean([x[clusters == c].var(0).mean() for c in range(8)])
    assert abs(within - 1.0) < 0.05
    assert abs(means.var() - 9.0) < 1.0


def test_tau2_variant_similar_superclasses():
    assert gm.similar_superclasses(8) == (0, 1)
    x, clusters, coarse = gm.make_gaussian_mixture(jax.random.key(5), 8, 100, 200,
                                                   sigma2=16.0, tau2=0.0)
    x, clusters = np.asarray(x, np.float64), np.asarray(clusters)
    means = np.stack([x[clusters == c].mean(0) for c in range(8)])
    gap = lambda a, b: np.sum((means[a] - means[b]) ** 2) / 200  # noqa: E731
    # tau2 = 0: the two clusters of a similar superclass share one mean (only sampling
    # noise, ~2/100 per coordinate); dissimilar ones are ~2 * sigma2 apart.
    assert gap(0, 4) < 0.1 and gap(1, 5) < 0.1
    assert gap(2, 6) > 20 and gap(3, 7) > 20
    # Without tau2 the same key gives the plain App. B draw.
    x_b, _, _ = gm.make_gaussian_mixture(jax.random.key(5), 8, 100, 200, sigma2=16.0)
    assert not np.allclose(np.asarray(x_b)[clusters == 0].mean(0), means[0])


def test_generator_bad_input():
    with pytest.raises(ConfigError, match="num_clusters"):
        gm.make_gaussian_mixture(jax.random.key(0), num_clusters=7)
    with pytest.raises(ConfigError, match="d_input"):
        gm.make_gaussian_mixture(jax.random.key(0), d_input=0)
    with pytest.raises(ConfigError, match="sigma2"):
        gm.make_gaussian_mixture(jax.random.key(0), sigma2=-1.0)


def test_training_matches_float64_numpy():
    seed = int(np.random.SeedSequence().entropy % 2**31)
    x, _, coarse = gm.make_gaussian_mixture(jax.random.key(seed), 8, 40, 16, sigma2=1.0)
    params0 = gm.init_mlp(jax.random.key(seed + 1), 16, 16, 4)
    xs = x * jax.lax.rsqrt(jnp.mean(x * x))
    params, losses = jax.jit(gm.train_mlp, static_argnums=3)(params0, xs, coarse, 40, SMALL.lr, 1e-2)
    ref, hidden_ref = gm.numpy_reference_run(
        SMALL, np.asarray(x), np.asarray(coarse),
        {k: np.asarray(v) for k, v in params0.items()}, weight_decay=1e-2, steps=40)
    for k in params:
        np.testing.assert_allclose(np.asarray(params[k]), ref[k], rtol=2e-4, atol=2e-5, err_msg=k)
    _, hidden = gm.mlp_apply(params, xs)
    np.testing.assert_allclose(np.asarray(hidden), hidden_ref, rtol=2e-4, atol=2e-5)
    assert float(losses[-1]) < float(losses[0])


@pytest.fixture(scope="module")
def sweep():
    seeds, sigma2s, wds = [0, 3], [0.0, 16.0], [0.0, 1e-3]
    return seeds, sigma2s, wds, gm.run_sweep(SMALL, seeds, sigma2s, None, wds)


def test_sweep_shapes_and_determinism(sweep):
    seeds, sigma2s, wds, out = sweep
    assert set(out) == {"msdr", "msdr_similar", "msdr_dissimilar", "train_acc", "loss"}
    for v in out.values():
        assert v.shape == (2, 2) and np.all(np.isfinite(v))
    again = gm.run_sweep(SMALL, seeds, sigma2s, None, wds, batch_size=2)  # chunked vmap
    for k in out:
        np.testing.assert_allclose(again[k], out[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_vmapped_equals_looped(sweep):
    seeds, sigma2s, wds, out = sweep
    for i, (s2, wd) in enumerate(zip(sigma2s, wds)):
        for j, seed in enumerate(seeds):
            single = gm.run_single_jit(SMALL, seed, s2, weight_decay=wd)
            for k in out:
                np.testing.assert_allclose(single[k], out[k][i, j], rtol=1e-4, atol=1e-5,
                                           err_msg=f"{k} sigma2={s2} seed={seed}")


def test_msdr_near_one_when_clusters_coincide_and_large_when_separated(sweep):
    _, _, _, out = sweep
    # sigma2 = 0: all clusters are one Gaussian, so subclasses are exchangeable and
    # MSDR = 1 up to sampling noise (~1/n_c). sigma2 = 16: means ~sqrt(2*16*d) apart.
    assert np.all(np.abs(out["msdr"][0] - 1.0) < 0.1), out["msdr"][0]
    assert np.all(out["msdr"][1] > 3.0), out["msdr"][1]
    assert np.all(out["train_acc"][1] == 1.0)


def test_tau2_sweep_similar_near_one():
    # Same shapes and config as test_cli_end_to_end, which then reuses this compile.
    out = gm.run_sweep(SMALL, [0, 1], [16.0], tau2s=[0.0, 16.0])
    assert np.all(np.abs(out["msdr_similar"][0] - 1.0) < 0.15), out["msdr_similar"]
    assert np.all(out["msdr_dissimilar"] > 3.0)
    assert np.all(out["msdr_similar"][1] > 3.0)


def test_sweep_bad_input():
    with pytest.raises(ConfigError, match="sigma2"):
        gm.run_sweep(SMALL, [0], [])
    with pytest.raises(ConfigError, match="seeds"):
        gm.run_sweep(SMALL, [], [1.0])
    with pytest.raises(ConfigError, match="steps"):
        gm.run_sweep(gm.GMConfig(steps=0), [0], [1.0])
    with pytest.raises(ConfigError, match="vary"):
        gm.run_study("width", SMALL, [0])


def test_cli_end_to_end(tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / "fig21"
    args = ["--vary", "tau2", "--values", "0", "16", "--sigma2", "16", "--d-input", "16",
            "--d-hidden", "16", "--samples-per-cluster", "40", "--steps", "40", "--seeds", "2",
            "--out", str(out)]
    assert run_main(cli.main, args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["vary"] == "tau2" and len(res["records"]) == 6
    keys = {"vary", "value", "sigma2", "tau2", "subclasses", "msdr_mean", "msdr_std",
            "train_acc_min"}
    for r in res["records"]:
        assert set(r) == keys and r["subclasses"] in ("similar", "dissimilar", "all")
    assert (out / "gaussian_mixture_tau2.png").stat().st_size > 1000
    (out / "gaussian_mixture_tau2.png").unlink()
    assert run_main(cli.main, ["--replot", "--out", str(out)]) == 0
    assert (out / "gaussian_mixture_tau2.png").stat().st_size > 1000


@pytest.mark.parametrize("args", [
    ["--vary", "width"],
    [],  # no --vary
    ["--replot"],  # no results.json in OUT
    ["--vary", "sigma2", "--steps", "0"],
    ["--vary", "sigma2", "--d-input", "-4"],
    ["--vary", "d_hidden", "--d-hidden", "0"],
    ["--vary", "sigma2", "--seeds", "0"],
    ["--vary", "sigma2", "--values"],
    ["--vary", "d_input", "--sigma2"],
    ["--vary", "sigma2", "--sigma2", "-1"],
    ["--vary", "tau2", "--sigma2", "1", "2"],
    ["--vary", "sigma2", "--batch-size", "0"],
    ["--vary", "sigma2", "--weight-decay", "-1"],
])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, args):
    cli = _load_cli()
    out = tmp_path / "out"
    try:
        code = run_main(cli.main, args + ["--out", str(out)])
    except SystemExit as e:  # argparse errors exit directly
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    assert not out.exists()
