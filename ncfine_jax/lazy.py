"""Packages whose names are imported from their modules on first use.

A command's ``--help`` must answer before jax, flax, matplotlib or scikit-learn load, yet
``from ncfine_jax.train import TrainConfig`` should keep working. A package ``__init__``
therefore lists what it exports and where each name lives, and the module holding a name
is imported when the name is first read (PEP 562)::

    __getattr__, __dir__, __all__ = exports(__name__, {"config": ["TrainConfig"], ...})
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def exports(package: str, names_of_module: dict[str, list[str]]
            ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) of ``package``.

    Args:
      package: the package's ``__name__``.
      names_of_module: submodule name (relative to the package) -> the names it exports.
    """
    module_of = {name: module for module, names in names_of_module.items() for name in names}

    def __getattr__(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next read is a plain lookup
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of})

    return __getattr__, __dir__, sorted(module_of)
