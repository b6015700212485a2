"""What a command tells its user while it runs, on stdout: a start block saying what is
being run, one line per slow phase with its time, one line per epoch without a progress
bar, and the analysis steps.

Library calls are silent: a command turns the console on (``enable``) before it starts.
In a run of several processes only process 0 speaks. Errors and warnings stay on stderr
(``cli.run_main``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, Sequence

from ncfine_jax.distributed import is_writer

_enabled = False


def enable(on: bool = True) -> None:
    """Turn the console on (a command) or off (library use, the default)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled and is_writer()


def say(line: str = "") -> None:
    """Print one line (when the console is on)."""
    if enabled():
        print(line, file=sys.stdout, flush=True)


def block(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A titled block of aligned ``name  value`` rows (the start block of a run)."""
    if not enabled():
        return
    width = max((len(name) for name, _ in rows), default=0)
    say(title)
    for name, value in rows:
        say(f"  {name:<{width}}  {value}")


@contextlib.contextmanager
def phase(what: str) -> Iterator[dict]:
    """Say ``  what ...`` when a slow phase starts and complete the line with its time
    (and ``info["detail"]``, which the block may set) when it ends: a user never waits
    without knowing on what."""
    info = {"detail": ""}
    on = enabled()
    if on:
        print(f"  {what} ...", end="", file=sys.stdout, flush=True)
    started = time.perf_counter()
    try:
        yield info
    except BaseException:
        if on:
            print(" stopped", file=sys.stdout, flush=True)
        raise
    if on:
        detail = f" ({info['detail']})" if info["detail"] else ""
        print(f" {seconds_text(time.perf_counter() - started)}{detail}", file=sys.stdout,
              flush=True)


def seconds_text(seconds: float) -> str:
    """12.3 s, 4.5 min or 1.2 h."""
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
