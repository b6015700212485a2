"""Exception types for bad input.

Every error raised for bad user input is an ``NcfineError`` whose message is one
line naming the input and the problem, e.g.
``DataError("cifar10: /data/cifar-10-python.tar.gz is truncated or corrupt (...)")``.
CLIs catch ``NcfineError`` and exit with status 2 without a traceback
(see ``ncfine_jax.cli.run_main``).
"""


class NcfineError(ValueError):
    """Bad input: the message names the input and the problem in one line."""


class DataError(NcfineError):
    """A dataset, archive, path or checksum is missing, corrupt or malformed."""


class ConfigError(NcfineError):
    """A configuration value or command-line flag is invalid."""


class WorkdirError(NcfineError):
    """A workdir cannot be used: in use by another command, holds another run or files
    this project did not write, is unreadable or corrupt, or cannot be written."""
