"""Persistent XLA compilation cache of the experiment scripts.

A ResNet-18 train step takes tens of seconds to compile; with the cache a second run of
the same shapes (a resume, the next grid point, a rerun) loads the executable from disk.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "NCFINE_CACHE_DIR"
OPT_OUT_ENV = "NCFINE_NO_COMPILE_CACHE"


def compile_cache_dir() -> Path:
    """``$NCFINE_CACHE_DIR/jax``, else ``$XDG_CACHE_HOME/ncfine_jax/jax``, else
    ``~/.cache/ncfine_jax/jax``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / "jax"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ncfine_jax" / "jax"


def enable_compile_cache() -> Path | None:
    """Point ``jax_compilation_cache_dir`` at :func:`compile_cache_dir` (created lazily by
    jax) unless ``NCFINE_NO_COMPILE_CACHE=1``; returns the directory in use, or None when
    opted out. A cache directory already configured (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) is kept. Only executables that took >= 1 s to compile are cached
    (jax's default threshold), so tiny CPU programs do not fill the disk."""
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
        return None
    import jax  # local: this module is imported before jax is configured

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = compile_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
