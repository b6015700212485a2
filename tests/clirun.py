"""Run a command-line ``main`` in-process as its script does (shared by the CLI tests)."""

import io
from contextlib import redirect_stderr, redirect_stdout

from ncfine_jax.cli import run_main


def run_in_process(main, argv):
    """``run_main(main, argv)`` with stdout / stderr captured: (exit code, stdout, stderr);
    argparse errors (SystemExit) give their exit code."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run_main(main, argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()
