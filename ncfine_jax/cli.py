"""Command-line plumbing shared by experiments/ and benchmarks/ scripts.

``run_main(main)`` turns bad input (``NcfineError``, argparse errors) and storage errors
(``OSError``: a path that cannot be created, read or written, no space left) into one
``error: ...`` line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from typing import Callable, Sequence

from ncfine_jax import distributed
from ncfine_jax.errors import NcfineError
from ncfine_jax.settings import FLAG_GROUPS
from ncfine_jax.logs import library_logs
from ncfine_jax.text import squashed


# A negative number in any notation is a flag's value, not a flag: on Python < 3.13
# argparse's own pattern misses "-1e-4", so "--wd -1e-4" was "expected one argument".
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$",
                              re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose errors are one line and exit status 2, and which reads
    ``--flag -1e-4`` as the value -1e-4 (then range-checked by the caller)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        sys.exit(2)


def flag_groups(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """The --help sections of an experiment command (``settings.FLAG_GROUPS``), created once
    per parser in their order, so that the settings' flags and a command's own flags share
    them."""
    groups = getattr(parser, "_ncfine_groups", None)
    if groups is None:
        groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
        parser._ncfine_groups = groups
    return groups


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` of the scripts: ``warning: <message>`` on one line."""
    return f"warning: {' '.join(str(message).split())}\n"


def run_main(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; map ``NcfineError`` and ``OSError`` to one stderr line and exit
    code 2, and argparse's exits (--help, a bad flag) to their codes; warnings are printed
    as one line each."""
    previous_format, warnings.formatwarning = warnings.formatwarning, one_line_warning
    try:
        with library_logs():  # stderr: our lines only (libraries' logs with --verbose)
            main(argv)
            distributed.finish()
    except NcfineError as e:
        msg = squashed(e)  # one line
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except OSError as e:
        path = e.filename if e.filename is not None else "storage"
        cause = e.strerror or squashed(e)
        sys.stderr.write(f"error: {path}: {cause}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, its line written)
        return e.code if isinstance(e.code, int) else 2
    finally:
        warnings.formatwarning = previous_format
    return 0
