"""The libraries' own log records (absl, orbax, JAX, ...) in a command of this project.

A command's stderr carries the project's own lines only: ``error:`` and ``warning:``
lines and progress. Each ``cli.run_main`` command runs inside ``library_logs``: the log
records of the libraries it uses are not printed (absl would otherwise install a stderr
handler on its first record and print ``WARNING:absl:...`` beside our lines); with
``--verbose`` (``VerboseAction``) they are printed, from INFO up, as
``[library] LEVEL name: message``. A record that tells a researcher something the project
does not already say becomes one of our own ``warning:`` lines (``_TRANSLATIONS``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from typing import Iterator

VERBOSE_FLAG = "--verbose"
VERBOSE_HELP = ("print the log records of the libraries (absl, orbax, JAX) on stderr, "
                "from INFO up; by default only this project's own lines are printed")

# (logger name prefix, text in the record, our warning line): records worth a line.
_TRANSLATIONS = (
    ("jax", "Falling back to cpu",
     "JAX runs on the CPU: a GPU is present but the installed jaxlib has no CUDA support "
     "(install jax[cuda12] or jax[cuda13], e.g. `make install JAX=cuda13`)"),
)


class _Translator(logging.Handler):
    """Turns a library record listed in ``_TRANSLATIONS`` into one ``warning:`` line."""

    def emit(self, record: logging.LogRecord) -> None:
        for prefix, text, line in _TRANSLATIONS:
            if record.name.startswith(prefix) and text in record.getMessage():
                warnings.warn(line, stacklevel=2)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        pass  # a record that cannot be read is not worth a traceback on stderr


class _Verbose(logging.StreamHandler):
    """``--verbose``: library records on the stderr of the moment (tests redirect it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("[library] %(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it
        pass


_TRANSLATOR = _Translator(logging.WARNING)
_VERBOSE = _Verbose()
_state = {"level": None}


def _quiet_root() -> None:
    """Take the stderr handlers others installed off the root logger (absl calls
    ``logging.basicConfig`` when the root has none; ours keeps it from doing so)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (
                sys.stderr, sys.__stderr__):
            root.removeHandler(handler)
    if _TRANSLATOR not in root.handlers:
        root.addHandler(_TRANSLATOR)


def show_on_stderr() -> None:
    """Print the libraries' records from INFO up on stderr until the command ends."""
    root = logging.getLogger()
    if _VERBOSE not in root.handlers:
        _state["level"] = root.level
        root.setLevel(logging.INFO)
        root.addHandler(_VERBOSE)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.INFO)


@contextlib.contextmanager
def library_logs() -> Iterator[None]:
    """The libraries' log records kept off stderr for the block (``show_on_stderr``
    prints them); records worth a line become ``warning:`` lines."""
    _quiet_root()
    try:
        yield
    finally:
        root = logging.getLogger()
        if _VERBOSE in root.handlers:
            root.removeHandler(_VERBOSE)
            root.setLevel(_state["level"])
            with contextlib.suppress(ImportError):
                from absl import logging as absl_logging

                absl_logging.set_verbosity(absl_logging.WARNING)
        _quiet_root()  # records a library logs at exit stay off stderr too


class VerboseAction(argparse.Action):
    """``--verbose``: a flag that shows the libraries' log records (``show_on_stderr``)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False,
                         help=kwargs.get("help", VERBOSE_HELP))

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        show_on_stderr()


def add_verbose_flag(parser) -> None:
    """Add ``--verbose`` to an argparse parser (or argument group)."""
    parser.add_argument(VERBOSE_FLAG, action=VerboseAction)
