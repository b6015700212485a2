"""Test configuration: CPU only, 2 forced host devices so sharding is exercised."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=2"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10_JPEG = REPO_ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


@pytest.fixture(scope="session")
def shared_cifar10_jpeg() -> Path:
    """Path to ../shared/data/cifar10_jpeg.tar.gz; skips the test when absent."""
    if not SHARED_CIFAR10_JPEG.exists():
        pytest.skip(f"{SHARED_CIFAR10_JPEG} not present")
    return SHARED_CIFAR10_JPEG
