"""Test configuration: CPU only, 2 forced host devices so sharding is exercised; the fake
data and tiny training configs shared by the engine, grid and reliability tests."""

import math
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=2"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("MPLBACKEND", "Agg")
# XLA's persistent compilation cache, fresh for each test session and shared with the
# subprocesses tests start: many tests compile the same tiny programs (the same engine in
# a resumed run, the same step in every process of a multi-process run).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="ncfine-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
else:
    _CACHE_DIR = None
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10_JPEG = REPO_ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


def pytest_sessionfinish(session, exitstatus):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cifar10_jpeg() -> Path:
    """Path to ../shared/data/cifar10_jpeg.tar.gz; skips the test when absent."""
    if not SHARED_CIFAR10_JPEG.exists():
        pytest.skip(f"{SHARED_CIFAR10_JPEG} not present")
    return SHARED_CIFAR10_JPEG


@pytest.fixture(scope="session")
def shared_cifar10_cache(tmp_path_factory) -> Path:
    """One decoded-data cache for every test that loads the shared JPEG CIFAR-10, so the
    60,000 JPEGs are decoded once per session."""
    return tmp_path_factory.mktemp("shared_cifar10_cache")


def tiny_config():
    """An MLP with BatchNorm on 32x32 images (compiles in seconds); 70 training images at
    batch 16 -> 4 steps per epoch and 6 samples dropped per epoch."""
    from ncfine_jax.train import TrainConfig

    return TrainConfig(arch="mlp", width=16, model_kwargs={"batch_norm": True}, lr=0.05,
                       weight_decay=5e-4, epochs=4, batch_size=16, schedule="step", seed=3,
                       augment=True, save_features_at=(0, 2, 4), checkpoint_every=2,
                       eval_batch_size=16, eval_every=1)


def make_image_data(seed: int = 0, n: int = 70, m: int = 24):
    """Fake images with class-dependent brightness; training labels = class // 2."""
    from ncfine_jax.train import TrainData

    rng = np.random.default_rng(seed)
    train_classes = rng.integers(0, 8, n).astype(np.int32)
    test_classes = rng.integers(0, 8, m).astype(np.int32)
    x_train = np.clip(rng.normal(100 + 15 * train_classes[:, None, None, None], 40,
                                 (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    x_test = np.clip(rng.normal(100 + 15 * test_classes[:, None, None, None], 40,
                                (m, 32, 32, 3)), 0, 255).astype(np.uint8)
    return TrainData(x_train, train_classes // 2, train_classes, x_test, test_classes // 2,
                     test_classes, num_labels=4).validate()


def diverging_config():
    """lr 1000 on ``make_diverging_data``: the loss explodes in epoch 1; with only the
    NaN/inf check (``disable_degeneracy_checks``) a few finite epochs, then inf/NaN."""
    from ncfine_jax.train import TrainConfig

    return TrainConfig(arch="mlp", width=8, epochs=6, batch_size=16, lr=1000.0,
                       schedule="constant", augment=False, checkpoint_every=1,
                       eval_batch_size=16, eval_every=1)


def make_diverging_data():
    """64 Gaussian feature vectors with 4 random labels."""
    from ncfine_jax.train import TrainData

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64).astype(np.int32)
    return TrainData(x, y, y, x[:16], y[:16], y[:16], 4)


def disable_degeneracy_checks(monkeypatch) -> None:
    """Leave only the NaN/inf divergence check on (the loss may explode, features collapse)."""
    monkeypatch.setattr("ncfine_jax.train.engine.EXPLODED_LOSS_FACTOR", math.inf)
    monkeypatch.setattr("ncfine_jax.train.loop.COLLAPSED_SPREAD", -1.0)


@pytest.fixture(scope="session")
def image_data():
    return make_image_data()


@pytest.fixture(scope="session")
def train_config():
    return tiny_config()


@pytest.fixture
def no_degeneracy_checks(monkeypatch):
    disable_degeneracy_checks(monkeypatch)


@pytest.fixture(scope="session")
def other_image_data():
    """Like ``image_data`` from another seed (a different data fingerprint)."""
    return make_image_data(seed=1)


@pytest.fixture
def diverging():
    """(config, data) of a run that diverges (``diverging_config``)."""
    return diverging_config(), make_diverging_data()
