"""Metrics kernels vs plain float64 NumPy references, known answers, streaming, errors.

Random inputs use a fresh seed per run (printed on failure via the ``rng`` fixture's
id in the assertion messages) so repeated runs explore new cases.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncfine_jax import metrics
from ncfine_jax.errors import ConfigError, DataError

SEED = int(np.random.SeedSequence().entropy % 2**32)


@pytest.fixture
def rng(request):
    seed = (SEED + hash(request.node.name)) % 2**32
    print(f"seed={seed}")
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------
# float64 NumPy references (brute force; the definitions written out literally)
# ---------------------------------------------------------------------------------------


def ref_means(x, y, c):
    return np.stack([x[y == k].mean(0) for k in range(c)])


def ref_distance_matrix(x, y, c):
    """Eq. (6) by brute force: mean over all pairs (x_i in class i, x_j in class j)."""
    d = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            a, b = x[y == i], x[y == j]
            d[i, j] = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).mean()
    return d


def ref_nc1(x, y, c):
    """(1/C) Tr(Sigma_W Sigma_B^+) with explicit d x d matrices, pinv cut at rank C-1."""
    mu = ref_means(x, y, c)
    mu_g = x.mean(0)
    dim = x.shape[1]
    sigma_w = np.zeros((dim, dim))
    for k in range(c):
        dev = x[y == k] - mu[k]
        sigma_w += dev.T @ dev / len(dev)
    sigma_w /= c
    m = mu - mu_g
    sigma_b = m.T @ m / c
    w, v = np.linalg.eigh(sigma_b)
    keep = np.argsort(w)[::-1][: min(c - 1, dim)]
    pinv = (v[:, keep] / w[keep]) @ v[:, keep].T
    return np.trace(sigma_w @ pinv) / c


def ref_nc2(x, y, c):
    m = ref_means(x, y, c) - x.mean(0)
    g = m @ m.T
    etf = (np.eye(c) - np.ones((c, c)) / c) / np.sqrt(c - 1)
    return np.linalg.norm(g / np.linalg.norm(g) - etf)


def ref_cdnv(x, y, c):
    mu = ref_means(x, y, c)
    var = np.array([((x[y == k] - mu[k]) ** 2).sum(1).mean() for k in range(c)])
    vals = [
        (var[i] + var[j]) / (2 * ((mu[i] - mu[j]) ** 2).sum())
        for i in range(c)
        for j in range(i + 1, c)
    ]
    return np.mean(vals)


def ref_msdr(d, s):
    c = len(s)
    within = [d[i, j] for i in range(c) for j in range(c) if i != j and s[i] == s[j]]
    return np.mean(within) / np.mean(np.diag(d))


def ref_nc3(x, y, c, kernel):
    m = ref_means(x, y, c) - x.mean(0)
    w = kernel.T
    return (((w / np.linalg.norm(w)) - m / np.linalg.norm(m)) ** 2).sum()


def ref_nc4(x, y, c, kernel, bias):
    mu = ref_means(x, y, c)
    clf = np.argmax(x @ kernel + bias, axis=1)
    ncc = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    return np.mean(clf != ncc)


def make_data(rng, n, d, c, spread=3.0, offset=0.0):
    """Gaussian clusters; every class present, unequal class sizes."""
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    rng.shuffle(y)
    centres = rng.normal(size=(c, d)) * spread + offset
    x = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(c, 1))[y]
    return x, y.astype(np.int32)


# (n, d, C): d > C, d < C - 1 (rank cut at d), tiny C = 2, moderate.
SHAPES = [(120, 12, 5), (90, 3, 6), (40, 4, 2), (400, 32, 10)]


# ---------------------------------------------------------------------------------------
# Kernels vs references
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d,c", SHAPES)
def test_all_metrics_match_float64_reference(rng, n, d, c):
    x, y = make_data(rng, n, d, c, offset=rng.normal() * 5)
    s = rng.integers(0, max(c // 2, 1), size=c)
    s[:2] = 0  # at least one superclass with >= 2 classes
    got = metrics.neural_collapse_metrics(x.astype(np.float32), y, c, s)
    ref_d = ref_distance_matrix(x, y, c)
    np.testing.assert_allclose(got["class_distance_matrix"], ref_d, rtol=2e-5, atol=1e-5 * ref_d.max())
    np.testing.assert_allclose(got["msdr"], ref_msdr(ref_d, s), rtol=2e-5)
    np.testing.assert_allclose(got["nc1"], ref_nc1(x, y, c), rtol=1e-4)
    np.testing.assert_allclose(got["nc2"], ref_nc2(x, y, c), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["cdnv"], ref_cdnv(x, y, c), rtol=1e-4)


def test_public_functions_match_reference_and_fused_call(rng):
    n, d, c = SHAPES[0]
    x, y = make_data(rng, n, d, c)
    x32 = x.astype(np.float32)
    kernel = rng.normal(size=(d, c))
    bias = rng.normal(size=c)
    ref_d = ref_distance_matrix(x, y, c)
    np.testing.assert_allclose(metrics.class_distance_matrix(x32, y, c), ref_d, rtol=2e-5)
    np.testing.assert_allclose(metrics.nc1(x32, y, c), ref_nc1(x, y, c), rtol=1e-4)
    np.testing.assert_allclose(metrics.nc2(x32, y, c), ref_nc2(x, y, c), rtol=1e-4)
    np.testing.assert_allclose(metrics.cdnv(x32, y, c), ref_cdnv(x, y, c), rtol=1e-4)
    np.testing.assert_allclose(metrics.nc3(x32, y, c, kernel), ref_nc3(x, y, c, kernel), rtol=1e-4)
    assert float(metrics.nc4(x32, y, c, kernel, bias)) == pytest.approx(ref_nc4(x, y, c, kernel, bias), abs=1.5 / n)
    stats = metrics.class_statistics(x32, y, c)
    np.testing.assert_allclose(stats.count, np.bincount(y, minlength=c))
    np.testing.assert_allclose(stats.mean, ref_means(x, y, c), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.variance, np.diag(ref_d) / 2, rtol=2e-5)


def test_float64_option_is_exact_and_scoped(rng):
    n, d, c = SHAPES[0]
    x, y = make_data(rng, n, d, c)
    x64_before = jax.config.jax_enable_x64
    got = metrics.neural_collapse_metrics(x, y, c, np.arange(c) // 2, dtype=jnp.float64)
    assert jax.config.jax_enable_x64 == x64_before
    assert got["class_distance_matrix"].dtype == np.float64
    ref_d = ref_distance_matrix(x, y, c)
    np.testing.assert_allclose(got["class_distance_matrix"], ref_d, rtol=1e-12)
    np.testing.assert_allclose(got["msdr"], ref_msdr(ref_d, np.arange(c) // 2), rtol=1e-12)
    np.testing.assert_allclose(got["nc1"], ref_nc1(x, y, c), rtol=1e-9)
    np.testing.assert_allclose(got["nc2"], ref_nc2(x, y, c), rtol=1e-10)
    np.testing.assert_allclose(got["cdnv"], ref_cdnv(x, y, c), rtol=1e-12)
    # Streaming in float64 agrees with the one-shot float64 result.
    stream = metrics.streaming_metrics(lambda: ((x[i : i + 50], y[i : i + 50]) for i in range(0, n, 50)), c,
                                       dtype=np.float64)
    np.testing.assert_allclose(stream["class_distance_matrix"], ref_d, rtol=1e-12)
    np.testing.assert_allclose(stream["nc1"], got["nc1"], rtol=1e-10)
    # Float32 arrays made afterwards are still float32 (x64 did not leak).
    assert jax.config.jax_enable_x64 == x64_before
    assert jnp.asarray(np.ones(2)).dtype == jnp.float32


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------


def test_collapsed_features_give_zero_nc1_and_zero_diagonal(rng):
    c, d, per_class = 5, 12, 8
    centres = rng.integers(-8, 8, size=(c, d)).astype(np.float32)  # exactly representable
    y = np.repeat(np.arange(c), per_class).astype(np.int32)
    x = centres[y]
    dist = np.asarray(metrics.class_distance_matrix(x, y, c))
    assert np.all(np.diag(dist) == 0.0)
    off = ((centres[:, None] - centres[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, off, rtol=1e-6)
    assert abs(float(metrics.nc1(x, y, c))) < 1e-10
    assert float(metrics.cdnv(x, y, c)) == 0.0


def test_simplex_etf_means_give_zero_nc2(rng):
    c, d, per_class = 6, 20, 10
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    etf = np.sqrt(c / (c - 1)) * (np.eye(c) - 1.0 / c)  # rows: simplex ETF in R^C
    means = 7.0 * etf @ rot[:c] + rng.normal(size=d) * 3  # rotated, scaled, shifted
    y = np.repeat(np.arange(c), per_class).astype(np.int32)
    noise = rng.normal(size=(len(y), d))
    noise -= ref_means(noise, y, c)[y]  # class means stay exactly at the ETF
    x = means[y] + noise
    assert float(metrics.nc2(x, y, c, dtype=np.float64)) < 1e-12
    x = x.astype(np.float32)
    assert float(metrics.nc2(x, y, c)) < 1e-5
    # A non-ETF configuration is clearly nonzero.
    assert float(metrics.nc2(x + 4 * (y == 0)[:, None], y, c)) > 0.05


def test_nc1_invariant_to_scale_and_shift(rng):
    n, d, c = SHAPES[0]
    x, y = make_data(rng, n, d, c)
    x = x.astype(np.float32)
    base = float(metrics.nc1(x, y, c))
    assert float(metrics.nc1(x * 1e3, y, c)) == pytest.approx(base, rel=1e-4)
    assert float(metrics.nc1(x * 1e-3 + 2.0, y, c)) == pytest.approx(base, rel=1e-3)


def test_nc3_nc4_zero_for_self_dual_ncc_classifier(rng):
    n, d, c = SHAPES[0]
    x, y = make_data(rng, n, d, c)
    x = x.astype(np.float32)
    mu = ref_means(x.astype(np.float64), y, c)
    centred = mu - x.astype(np.float64).mean(0)
    assert float(metrics.nc3(x, y, c, 3.0 * centred.T)) < 1e-10
    # logits = 2 h.mu_c - |mu_c|^2 rank classes exactly as -|h - mu_c|^2.
    assert float(metrics.nc4(x, y, c, 2.0 * mu.T, -(mu**2).sum(1))) == 0.0
    # Test features against training means.
    x_test = make_data(rng, 50, d, c)[0].astype(np.float32)
    got = metrics.nc4(x_test, np.zeros(50, np.int32), c, 2.0 * mu.T, -(mu**2).sum(1), class_means=mu)
    assert float(got) == 0.0


def test_msdr_hand_example():
    dist = np.array(
        [
            [2.0, 10.0, 50.0, 50.0],
            [10.0, 4.0, 50.0, 50.0],
            [50.0, 50.0, 6.0, 30.0],
            [50.0, 50.0, 30.0, 8.0],
        ]
    )
    # within-superclass mean (10 + 10 + 30 + 30) / 4 = 20; diagonal mean 5.
    assert float(metrics.msdr(dist, np.array([0, 0, 1, 1]))) == pytest.approx(4.0)
    # A singleton superclass still counts in the diagonal mean: (2+4+6+8)/4 = 5, within 10.
    assert float(metrics.msdr(dist, np.array([0, 0, 1, 2]))) == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------
# Streaming, jit, vmap
# ---------------------------------------------------------------------------------------


def test_streaming_equals_one_shot(rng):
    n, d, c = SHAPES[3]
    x, y = make_data(rng, n, d, c, offset=50.0)  # large offset: stresses the merge
    x = x.astype(np.float32)
    order = np.argsort(y, kind="stable")  # sorted: most batches miss most classes
    parts = np.split(order, np.arange(96, n, 96))  # ragged last batch (padded inside)

    def batches():
        return ((x[p], y[p]) for p in parts)

    acc = metrics.ClassStatisticsAccumulator(c)
    for fb, yb in batches():
        acc.update(fb, yb)
    one = metrics.class_statistics(x, y, c)
    np.testing.assert_array_equal(acc.statistics.count, one.count)
    np.testing.assert_allclose(acc.statistics.mean, one.mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(acc.statistics.m2, one.m2, rtol=1e-4)

    s = np.arange(c) // 2
    stream = metrics.streaming_metrics(batches, c, s)
    shot = metrics.neural_collapse_metrics(x, y, c, s)
    for key in ("class_distance_matrix", "msdr", "nc1", "nc2", "cdnv"):
        np.testing.assert_allclose(stream[key], shot[key], rtol=1e-4, err_msg=key)


def test_jit_and_vmap(rng):
    n, d, c = SHAPES[0]
    feats = np.stack([make_data(rng, n, d, c)[0] for _ in range(3)]).astype(np.float32)
    y = make_data(rng, n, d, c)[1]
    s = np.arange(c) // 2

    def f(h):
        return metrics.msdr(metrics.class_distance_matrix(h, y, c), s)

    batched = jax.jit(jax.vmap(f))(feats)
    looped = np.array([float(f(h)) for h in feats])
    np.testing.assert_allclose(batched, looped, rtol=1e-5)

    jitted = jax.jit(metrics.nc1, static_argnames="num_classes")
    assert float(jitted(feats[0], y, num_classes=c)) == pytest.approx(float(metrics.nc1(feats[0], y, c)), rel=1e-5)
    stats = jax.vmap(lambda h: metrics.class_statistics(h, y, c))(feats)
    assert stats.mean.shape == (3, c, d)


def test_empty_class_is_nan_under_tracing_and_error_when_concrete(rng):
    x, y = make_data(rng, 60, 5, 4)
    y = np.where(y == 2, 0, y).astype(np.int32)  # class 2 now empty
    with pytest.raises(DataError, match=r"labels: 1 of 4 classes have no samples \(2\)"):
        metrics.class_distance_matrix(x, y, 4)
    dist = np.asarray(jax.jit(metrics.class_distance_matrix, static_argnums=2)(x, y, 4))
    assert np.isnan(dist[2]).all() and np.isnan(dist[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(dist, 2, 0), 2, 1)).all()


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda x, y: (x, np.where(y == 1, 4, y)), DataError, r"labels: \d+ value\(s\) outside \[0, 4\), e.g. 4"),
        (lambda x, y: (x, np.where(y == 1, -1, y)), DataError, r"outside \[0, 4\), e.g. -1"),
        (lambda x, y: (x, y[:-1]), DataError, r"labels: length 39 does not match features' 40 rows"),
        (lambda x, y: (x, y.astype(np.float32)), DataError, "labels: expected an integer dtype"),
        (lambda x, y: (x[:, :, None], y), DataError, r"features: expected shape \[n, d\]"),
        (lambda x, y: (np.where(np.arange(40)[:, None] == 7, np.nan, x), y), DataError, "row 7"),
        (lambda x, y: (np.where(np.arange(40)[:, None] == 3, np.inf, x), y), DataError, "NaN or inf, e.g. row 3"),
    ],
)
def test_bad_input_raises_one_line_error(rng, mutate, exc, pattern):
    x, y = make_data(rng, 40, 3, 4)
    x, y = mutate(x.astype(np.float32), y)
    for fn in (metrics.class_distance_matrix, metrics.nc1, metrics.nc2, metrics.cdnv):
        with pytest.raises(exc, match=pattern) as info:
            fn(x, y, 4)
        assert "\n" not in str(info.value)


def test_bad_arguments(rng):
    x, y = make_data(rng, 40, 3, 4)
    with pytest.raises(ConfigError, match="num_classes"):
        metrics.nc1(x, y, 1)
    with pytest.raises(ConfigError, match="num_classes"):
        metrics.class_distance_matrix(x, y, 4.0)
    with pytest.raises(ConfigError, match="dtype"):
        metrics.nc1(x, y, 4, dtype=np.int32)
    with pytest.raises(DataError, match="superclass_of_class: every superclass holds one class"):
        metrics.msdr(np.eye(4) + 1, np.arange(4))
    with pytest.raises(DataError, match=r"superclass_of_class: expected shape \[4\]"):
        metrics.msdr(np.eye(4) + 1, np.zeros(3, np.int32))
    with pytest.raises(DataError, match="distance_matrix: contains NaN"):
        metrics.msdr(np.full((4, 4), np.nan), np.zeros(4, np.int32))
    with pytest.raises(DataError, match=r"kernel: expected shape \[3, 4\]"):
        metrics.nc3(x, y, 4, np.ones((4, 3)))
    with pytest.raises(DataError, match=r"bias: expected shape \[4\]"):
        metrics.nc4(x, y, 4, np.ones((3, 4)), np.ones(3))
    acc = metrics.ClassStatisticsAccumulator(4)
    with pytest.raises(DataError, match="batches: no batches were added"):
        acc.statistics
    acc.update(x[:10], np.zeros(10, np.int32))
    with pytest.raises(DataError, match=r"labels: classes \[1, 2, 3\] have no samples in any batch"):
        acc.statistics
    with pytest.raises(DataError, match="features: batch has dimension 2, earlier batches 3"):
        acc.update(x[:10, :2], y[:10])
    if not jax.config.jax_enable_x64:
        with pytest.raises(ConfigError, match="float64 under jit/vmap"):
            jax.vmap(lambda h: metrics.nc1(h, y, 4, dtype=np.float64))(np.stack([x, x]))


@pytest.mark.parametrize("spread", [1.0, 1e-2])
def test_nc1_well_and_ill_conditioned_means(rng, spread):
    """spread 1: Gram-matrix route; spread 1e-2 (s_max/s_min ~ 100): QR route."""
    n, d, c = 300, 16, 6
    y = np.repeat(np.arange(c), n // c).astype(np.int32)
    q, _ = np.linalg.qr(rng.normal(size=(d, c)))
    scales = np.geomspace(1.0, spread, c)
    centres = (q * scales).T * 10.0  # singular values of the means span 1 .. spread
    x = centres[y] + 0.05 * rng.normal(size=(n, d))
    got = float(metrics.nc1(x.astype(np.float32), y, c))
    assert got == pytest.approx(ref_nc1(x.astype(np.float32).astype(np.float64), y, c), rel=2e-4)


# ---------------------------------------------------------------------------------------
# Streaming NC3 / NC4 and chunked (memory-mapped) arrays
# ---------------------------------------------------------------------------------------


def test_streaming_nc3_nc4_match_float64_reference(rng):
    n, d, c = SHAPES[0]
    x, y = make_data(rng, n, d, c)
    x32 = x.astype(np.float32)
    kernel, bias = rng.normal(size=(d, c)), rng.normal(size=c)
    parts = np.array_split(rng.permutation(n), 5)
    got = metrics.streaming_metrics(lambda: ((x32[p], y[p]) for p in parts), c, kernel=kernel, bias=bias)
    np.testing.assert_allclose(got["nc3"], ref_nc3(x, y, c, kernel), rtol=1e-4)
    assert float(got["nc4"]) == pytest.approx(ref_nc4(x, y, c, kernel, bias), abs=1.5 / n)
    assert float(got["nc4"]) == pytest.approx(float(metrics.nc4(x32, y, c, kernel, bias)), abs=1.5 / n)
    # A classifier that is the nearest-class-mean rule itself: NC4 exactly 0 over every chunk.
    mu = ref_means(x32.astype(np.float64), y, c)
    ncc = metrics.streaming_metrics(lambda: ((x32[p], y[p]) for p in parts), c,
                                    kernel=2.0 * mu.T, bias=-(mu**2).sum(1))
    assert float(ncc["nc4"]) == 0.0
    without = metrics.streaming_metrics(lambda: ((x32[p], y[p]) for p in parts), c)
    assert "nc3" not in without and "nc4" not in without


def test_streaming_metrics_of_memory_mapped_arrays(rng, tmp_path):
    n, d, c = 203, 9, 5
    x, y = make_data(rng, n, d, c, offset=20.0)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    kernel, bias = rng.normal(size=(d, c)), rng.normal(size=c)
    s = np.arange(c) // 2
    # 37 rows per chunk: ragged last chunk, every chunk padded to 64 rows.
    got = metrics.streaming_metrics_of_arrays(mapped, y, c, s, kernel=kernel, bias=bias, chunk_rows=37)
    ref_d = ref_distance_matrix(x, y, c)
    np.testing.assert_allclose(got["class_distance_matrix"], ref_d, rtol=1e-4, atol=1e-5 * ref_d.max())
    np.testing.assert_allclose(got["msdr"], ref_msdr(ref_d, s), rtol=1e-4)
    np.testing.assert_allclose(got["nc1"], ref_nc1(x, y, c), rtol=1e-3)
    np.testing.assert_allclose(got["nc2"], ref_nc2(x, y, c), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got["cdnv"], ref_cdnv(x, y, c), rtol=1e-3)
    np.testing.assert_allclose(got["nc3"], ref_nc3(x, y, c, kernel), rtol=1e-4)
    assert float(got["nc4"]) == pytest.approx(ref_nc4(x, y, c, kernel, bias), abs=1.5 / n)
    # Bad rows are named by their row in the whole array, not in the chunk.
    bad = np.array(mapped)
    bad[150, 3] = np.nan
    with pytest.raises(DataError, match=r"features: 1 row\(s\) contain NaN or inf, e.g. row 150"):
        metrics.streaming_metrics_of_arrays(bad, y, c, chunk_rows=37)
    with pytest.raises(DataError, match=r"kernel: expected shape \[9, 5\]"):
        metrics.streaming_metrics_of_arrays(mapped, y, c, kernel=kernel.T, chunk_rows=37)
