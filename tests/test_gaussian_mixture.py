"""Gaussian-mixture MLP study: data, parameterisations against float64 NumPy, vmap == loop,
diverged runs, CLIs."""

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
                    steps=40, lr=2.0, parameterization="ntk", input_scaling="rms")
SMALL_FLAGS = ["--d-input", "16", "--d-hidden", "16", "--samples-per-cluster", "40",
               "--steps", "40", "--lr", "2", "--parameterization", "ntk", "--input-scaling", "rms"]


def _load_cli(name="gaussian_mixture.py"):
    spec = importlib.util.spec_from_file_location(f"gm_cli_{name[:-3]}", REPO / "experiments" / name)
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
    params0 = gm.init_mlp(jax.random.key(seed + 1), 16, 16, 4, "ntk")
    xs = x * jax.lax.rsqrt(jnp.mean(x * x))
    params, losses = jax.jit(gm.train_mlp, static_argnums=(3, 6))(
        params0, xs, coarse, 40, SMALL.lr, 1e-2, "ntk")
    ref, hidden_ref = gm.numpy_reference_run(
        SMALL, np.asarray(x), np.asarray(coarse),
        {k: np.asarray(v) for k, v in params0.items()}, weight_decay=1e-2, steps=40)
    for k in params:
        np.testing.assert_allclose(np.asarray(params[k]), ref[k], rtol=2e-4, atol=2e-5, err_msg=k)
    _, hidden = gm.mlp_apply(params, xs, "ntk")
    np.testing.assert_allclose(np.asarray(hidden), hidden_ref, rtol=2e-4, atol=2e-5)
    assert float(losses[-1]) < float(losses[0])


@pytest.mark.parametrize("parameterization,input_scaling,lr", [
    ("standard", "none", 0.05), ("standard", "rms", 0.3), ("mup", "rms", 0.5), ("mup", "none", 0.05),
])
def test_parameterizations_match_float64_numpy(parameterization, input_scaling, lr):
    # The reference writes each parameterisation's multipliers out on its own, so a wrong
    # forward multiplier, step multiplier or input scaling in either path fails here.
    # 4 steps: training is chaotic in float32 (a rounding difference grows ~10x every two
    # steps at these learning rates), so after 15 steps a fresh seed occasionally drifts
    # past float32 tolerance although both paths are right; every multiplier acts from the
    # first step on.
    seed = int(np.random.SeedSequence().entropy % 2**31)
    cfg = gm.GMConfig(samples_per_cluster=20, d_input=12, d_hidden=24, steps=4, lr=lr,
                      parameterization=parameterization, input_scaling=input_scaling)
    x, _, coarse = gm.make_gaussian_mixture(jax.random.key(seed), 8, 20, 12, sigma2=2.0)
    params0 = gm.init_mlp(jax.random.key(seed + 1), 12, 24, 4, parameterization)
    xs = gm.scale_inputs(x, input_scaling)
    params, losses = jax.jit(gm.train_mlp, static_argnums=(3, 6))(
        params0, xs, coarse, cfg.steps, lr, 1e-2, parameterization)
    ref, hidden_ref = gm.numpy_reference_run(
        cfg, np.asarray(x), np.asarray(coarse), {k: np.asarray(v) for k, v in params0.items()},
        weight_decay=1e-2)
    for k in params:
        np.testing.assert_allclose(np.asarray(params[k]), ref[k], rtol=2e-4, atol=2e-5, err_msg=k)
    _, hidden = gm.mlp_apply(params, xs, parameterization)
    np.testing.assert_allclose(np.asarray(hidden), hidden_ref, rtol=2e-4, atol=2e-5)
    assert float(losses[-1]) < float(losses[0])


def test_init_distributions():
    d_in, d_h = 400, 300
    std = gm.init_mlp(jax.random.key(0), d_in, d_h, 50, "standard")
    # PyTorch nn.Linear: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
    # the layer's input size; variance bound^2 / 3.
    for k, fan_in in (("w1", d_in), ("b1", d_in), ("w2", d_h), ("b2", d_h)):
        v, bound = np.asarray(std[k], np.float64), 1 / np.sqrt(fan_in)
        assert np.abs(v).max() <= bound, k
        if v.size > 1000:
            assert np.abs(v).max() > 0.99 * bound, k
            assert abs(v.var() / (bound**2 / 3) - 1) < 0.05, k
            assert abs(v.mean()) < 0.02 * bound, k
    for p13n in ("ntk", "mup"):
        p = gm.init_mlp(jax.random.key(0), d_in, d_h, 50, p13n)
        for k in ("w1", "w2"):
            v = np.asarray(p[k], np.float64)
            assert abs(v.std() - 1) < 0.02 and abs(v.mean()) < 0.02, (p13n, k)
        assert not np.any(np.asarray(p["b1"])) and not np.any(np.asarray(p["b2"]))
    with pytest.raises(ConfigError, match="parameterization"):
        gm.init_mlp(jax.random.key(0), 4, 4, 2, "sp")


def test_feature_movement_scales_with_width_as_the_parameterization_says():
    # One GD step from the same data: under NTK the hidden layer moves ~ 1/sqrt(d_hidden)
    # (lazy at large width); under muP it moves O(1) at every width.
    x, _, coarse = gm.make_gaussian_mixture(jax.random.key(7), 8, 20, 16, sigma2=4.0)
    x = gm.scale_inputs(x, "rms")

    def moved(p13n, d_hidden, lr):
        p0 = gm.init_mlp(jax.random.key(8), 16, d_hidden, 4, p13n)
        p1, _ = gm.train_mlp(p0, x, coarse, 1, lr, 0.0, p13n)
        return float(gm.feature_movement(gm.mlp_apply(p0, x, p13n)[1], gm.mlp_apply(p1, x, p13n)[1]))

    ntk_ratio = moved("ntk", 32, 2.0) / moved("ntk", 2048, 2.0)
    mup_ratio = moved("mup", 32, 0.5) / moved("mup", 2048, 0.5)
    assert 5.0 < ntk_ratio < 12.0, ntk_ratio  # sqrt(2048 / 32) = 8
    assert 0.6 < mup_ratio < 1.6, mup_ratio


@pytest.fixture(scope="module")
def sweep():
    seeds, sigma2s, wds = [0, 3], [0.0, 16.0], [0.0, 1e-3]
    return seeds, sigma2s, wds, gm.run_sweep(SMALL, seeds, sigma2s, None, wds)


def test_sweep_shapes_and_determinism(sweep):
    seeds, sigma2s, wds, out = sweep
    assert set(out) == {"msdr", "msdr_similar", "msdr_dissimilar", "train_acc", "loss",
                        "loss_initial", "feature_movement", "diverged"}
    for v in out.values():
        assert v.shape == (2, 2) and np.all(np.isfinite(v))
    assert not np.any(out["diverged"]) and np.all(out["feature_movement"] > 0)
    assert np.all(out["loss"] < out["loss_initial"])
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
    args = ["--vary", "tau2", "--values", "0", "16", "--sigma2", "16", *SMALL_FLAGS,
            "--seeds", "2", "--out", str(out)]
    assert run_main(cli.main, args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["vary"] == "tau2" and len(res["records"]) == 6
    assert res["config"]["parameterization"] == "ntk" and res["config"]["input_scaling"] == "rms"
    assert res["config"]["lr"] == 2.0 and res["config"]["all_seeds_diverged"] is False
    keys = {"vary", "value", "sigma2", "tau2", "subclasses", "msdr_mean", "msdr_std",
            "train_acc_min", "train_acc_mean", "feature_movement_mean", "feature_movement_std",
            "seeds", "diverged", "msdr_per_seed"}
    for r in res["records"]:
        assert set(r) == keys and r["subclasses"] in ("similar", "dissimilar", "all")
        assert r["seeds"] == 2 and r["diverged"] == 0 and r["feature_movement_mean"] > 0
        assert r["msdr_mean"] == pytest.approx(np.mean(r["msdr_per_seed"]))
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
    ["--vary", "sigma2", "--parameterization", "lazy"],
    ["--vary", "sigma2", "--input-scaling", "std"],
    ["--vary", "sigma2", "--lr", "0"],
    ["--vary", "sigma2", "--lr", "inf"],
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


def test_records_leave_diverged_seeds_out_and_report_them():
    # Grid point 0: seed 1 of 3 diverged; grid point 1: every seed diverged.
    out = {k: np.array([[2.0, np.nan, 4.0], [np.nan, np.inf, 5.0]]) for k in
           ("msdr", "msdr_similar", "msdr_dissimilar", "feature_movement")}
    out["train_acc"] = np.array([[1.0, 0.25, 0.5], [0.25, 0.25, 0.25]])
    out["diverged"] = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    from ncfine_jax.gaussian_mixture.study import _record
    r0 = _record("d_hidden", 64, 4.0, None, "all", out, 0, "msdr")
    assert (r0["msdr_mean"], r0["msdr_std"]) == (3.0, pytest.approx(np.sqrt(2.0)))
    assert (r0["train_acc_min"], r0["train_acc_mean"]) == (0.5, 0.75)
    assert (r0["seeds"], r0["diverged"]) == (3, 1) and r0["msdr_per_seed"] == [2.0, None, 4.0]
    r1 = _record("d_hidden", 64, 16.0, None, "all", out, 1, "msdr")
    assert r1["msdr_mean"] is None and r1["train_acc_min"] is None and r1["diverged"] == 3
    warning, error = gm.divergence_report([r0, r1])
    assert warning.startswith("4 of 6 runs diverged") and "d_hidden=64 sigma2=4 (1/3)" in warning
    assert "\n" not in warning and "\n" not in error
    assert "d_hidden=64 sigma2=16" in error and "sigma2=4" not in error
    warning0, error0 = gm.divergence_report([r0])
    assert warning0.startswith("1 of 3 runs diverged") and warning0.endswith("d_hidden=64 sigma2=4 (1/3)")
    assert error0 is None
    assert gm.divergence_report([_record("d_hidden", 64, 4.0, None, "all",
                                         {**out, "diverged": np.zeros((2, 3))}, 0, "msdr")]) == (None, None)


def test_cli_diverging_lr_writes_results_and_exits_2(tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / "diverged"
    flags = [f for f in SMALL_FLAGS]
    flags[flags.index("--lr") + 1] = "1e6"
    code = run_main(cli.main, ["--vary", "sigma2", "--values", "1", "16", *flags, "--seeds", "2",
                               "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("warning: 4 of 4 runs diverged"), err
    assert err[1].startswith("error: --lr 1e+06: every seed diverged at 2 grid point(s): "
                             "sigma2=1, sigma2=16"), err
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["all_seeds_diverged"] is True and res["config"]["diverged_runs"] == 4
    for r in res["records"]:
        assert r["msdr_mean"] is None and r["diverged"] == r["seeds"] == 2


def test_width_study_script(tmp_path, capsys):
    study = _load_cli("gaussian_mixture_width_study.py")
    out = tmp_path / "width"
    # SMALL's shapes and grid size, so the compiled sweep of the fixture above is reused.
    args = ["--out", str(out), "--setting", "ntk:rms:1.5", "--vary", "d_hidden",
            "--values", "16", "--sigma2", "0", "16", "--d-input", "16",
            "--samples-per-cluster", "40", "--steps", "40", "--seeds", "2"]
    assert run_main(study.main, args) == 0
    res = json.loads((out / "width_study.json").read_text())
    assert [(b["config"]["parameterization"], b["vary"]) for b in res["blocks"]] == [
        ("ntk", "d_hidden")]
    b = res["blocks"][0]
    assert b["config"]["input_scaling"] == "rms" and b["config"]["lr"] == 1.5
    assert [(r["value"], r["sigma2"]) for r in b["records"]] == [(16.0, 0.0), (16.0, 16.0)]
    assert all(r["msdr_mean"] > 0.9 and r["feature_movement_mean"] > 0 for r in b["records"])
    assert b["records"][1]["msdr_mean"] > 3.0
    table = (out / "width_study.md").read_text()
    assert table.count("| ntk/rms, lr 1.5 |") == 2 and "trend" in table
    assert (out / "width_study.png").stat().st_size > 1000
    capsys.readouterr()
    assert run_main(study.main, args) == 0  # rerun: the block is already there
    assert capsys.readouterr().out.count("skip ") == 1
    assert json.loads((out / "width_study.json").read_text()) == res
    for bad in (["--setting", "standard:none"], ["--setting", "sp:none:0.1"],
                ["--setting", "ntk:rms:-1"], ["--vary", "sigma2"]):
        assert run_main(study.main, ["--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()
