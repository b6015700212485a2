"""ncfine_jax: fine-grained structure of neural-collapse representations in JAX/Flax.

Reproduces and extends "Are Neurons Actually Collapsed? On the Fine-Grained
Structure in Neural Representations": train on coarse (or fine) labels, then ask
whether last-layer features still carry the original class structure.
"""

from ncfine_jax.errors import ConfigError, DataError, NcfineError, WorkdirError

__version__ = "0.2.0"  # the package version (pyproject.toml reads it)

__all__ = ["ConfigError", "DataError", "NcfineError", "WorkdirError", "__version__"]
