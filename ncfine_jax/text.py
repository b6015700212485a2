"""How the project writes a missing number and an error in one line of text.

Shared by error messages, report tables and summary lines, so a report and a console
line say the same thing for the same value.
"""

from __future__ import annotations

from typing import Sequence

from ncfine_jax.errors import NcfineError

# What a table or summary line shows for a value that was not measured (None).
MISSING = "n/a"


def number(x: float | None, spec: str = ".4f") -> str:
    """``x`` formatted with the format spec ``spec`` (".3f", ".4g"); MISSING for None."""
    return MISSING if x is None else format(x, spec)


def interval(bounds: Sequence[float] | None, spec: str = ".4f") -> str:
    """``[lo, hi]``; MISSING when there is none."""
    return MISSING if not bounds else f"[{format(bounds[0], spec)}, {format(bounds[1], spec)}]"


def squashed(error: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) collapsed to single
    spaces; its type name when the message is empty."""
    return " ".join(str(error).split()) or type(error).__name__


def described(error: BaseException) -> str:
    """``Type: message`` on one line (the project's own errors are one line already)."""
    text = " ".join(str(error).split())
    return text if isinstance(error, NcfineError) else f"{type(error).__name__}: {text}"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, cut at ``limit`` characters (orbax and
    tensorstore errors span many lines)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def plural(count: int, noun: str) -> str:
    """"1 process", "2 processes", "3 cpu devices"."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's'}"
