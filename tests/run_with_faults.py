"""An experiment script (or grid.py) as the tests run it, with an optional injected fault.

Usage: python tests/run_with_faults.py EXPERIMENT|grid ARGS...

``NCFINE_TEST_KILL_AT=E`` SIGKILLs every process right after its checkpoint of epoch E is
written; ``NCFINE_TEST_KILL_AT=E:P`` only process P (a multi-process run).
"""

import os
import signal
import sys

from ncfine_jax.train.checkpoint import Checkpointer

_fault = os.environ.get("NCFINE_TEST_KILL_AT")
if _fault:
    _epoch, _, _who = _fault.partition(":")
    _save = Checkpointer.save

    def _save_then_die(self, epoch, state):
        _save(self, epoch, state)
        self.wait()  # committed (saves are asynchronous)
        import jax

        if epoch == int(_epoch) and (not _who or int(_who) == jax.process_index()):
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpointer.save = _save_then_die

from ncfine_jax.cli import run_main  # noqa: E402

if __name__ == "__main__":
    name, argv = sys.argv[1], sys.argv[2:]
    if name == "grid":
        from ncfine_jax.experiment.cli import grid_main

        sys.exit(run_main(grid_main, argv))
    from ncfine_jax.experiment import EXPERIMENTS, main

    sys.exit(run_main(lambda a: main(EXPERIMENTS[name], a), argv))
