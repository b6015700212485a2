"""stderr of a command carries the project's own lines only: the libraries' log records
(absl, orbax, JAX) are kept off it, shown with --verbose, and the one that matters becomes
one of our warning lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

COMMAND = textwrap.dedent("""
    import logging, sys
    from absl import logging as absl_logging
    from ncfine_jax.cli import ArgumentParser, run_main
    from ncfine_jax.logs import add_verbose_flag

    def main(argv):
        parser = ArgumentParser(prog="cmd")
        add_verbose_flag(parser)
        parser.parse_args(argv)
        absl_logging.info("orbax chatter")
        absl_logging.warning("Attempted to create temporary directory /x/3 which already exists")
        absl_logging.error("Failed to json parse Metadata file: /x/_CHECKPOINT_METADATA")
        logging.getLogger("jax._src.xla_bridge").warning(
            "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not "
            "installed. Falling back to cpu.")
        print("done")

    code = run_main(main, sys.argv[1:])
    absl_logging.warning("logged after the command ended")
    sys.exit(code)
""")


def run(*argv: str, script: str = COMMAND) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, timeout=120)


def test_library_records_stay_off_stderr_and_what_matters_is_our_warning_line():
    proc = run()
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("warning: JAX runs on the CPU: a GPU is present but the "
                               "installed jaxlib has no CUDA support")


def test_verbose_shows_the_library_records():
    proc = run("--verbose")
    assert proc.returncode == 0, proc.stderr
    for line in ("[library] INFO absl: orbax chatter",
                 "[library] WARNING absl: Attempted to create temporary directory",
                 "[library] ERROR absl: Failed to json parse Metadata file",
                 "[library] WARNING jax._src.xla_bridge: An NVIDIA GPU may be present"):
        assert line in proc.stderr, proc.stderr
    assert "logged after the command ended" not in proc.stderr


def test_control_without_the_routing_absl_prints_its_own_lines():
    # What a command printed before: the test above can fail.
    script = COMMAND.replace("code = run_main(main, sys.argv[1:])",
                             "main(sys.argv[1:]); code = 0")
    proc = run(script=script)
    assert "WARNING:absl:Attempted to create temporary directory" in proc.stderr
    assert "ERROR:absl:Failed to json parse" in proc.stderr


def test_in_process_commands_restore_logging(capsys):
    import logging

    from ncfine_jax.cli import run_main
    from ncfine_jax.logs import add_verbose_flag

    def main(argv):
        from ncfine_jax.cli import ArgumentParser

        parser = ArgumentParser(prog="cmd")
        add_verbose_flag(parser)
        parser.parse_args(argv)
        logging.getLogger("orbax.test").warning("seen with --verbose")

    root = logging.getLogger()
    level, handlers = root.level, len(root.handlers)
    assert run_main(main, ["--verbose"]) == 0
    assert "[library] WARNING orbax.test: seen with --verbose" in capsys.readouterr().err
    assert run_main(main, []) == 0  # the next command is quiet again
    assert capsys.readouterr().err == ""
    assert root.level == level and len(root.handlers) <= handlers + 1


@pytest.mark.parametrize("flagged", ["experiment", "grid", "analyze", "paper"])
def test_the_commands_take_verbose(flagged):
    from ncfine_jax.analyze import build_parser as analyze_parser
    from ncfine_jax.experiment import EXPERIMENTS
    from ncfine_jax.experiment.cli import build_grid_parser, build_parser
    from ncfine_jax.paper.command import build_parser as paper_parser

    parser = {"experiment": lambda: build_parser(EXPERIMENTS["coarse_digits"]),
              "grid": lambda: build_grid_parser(EXPERIMENTS["coarse_digits"]),
              "analyze": analyze_parser,
              "paper": paper_parser}[flagged]()
    assert "--verbose" in parser.format_help()
