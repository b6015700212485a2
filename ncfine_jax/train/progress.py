"""Progress bars: ``tqdm`` when it is installed, else a silent stand-in with the same
calls, so training runs on hosts that have only jax, flax, optax and orbax."""

from __future__ import annotations

import sys
from typing import Any, Iterable

try:
    from tqdm.auto import tqdm
except ImportError:  # optional at run time; pyproject installs it
    class tqdm:  # noqa: N801 - mirrors the tqdm API used by the trainers
        """No bar: iterates ``iterable``; ``set_postfix`` and ``close`` do nothing."""

        def __init__(self, iterable: Iterable | None = None, *args: Any, **kwargs: Any):
            self.iterable = iterable if iterable is not None else ()

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

        @staticmethod
        def write(message: str) -> None:
            print(message, file=sys.stderr)

__all__ = ["tqdm"]
