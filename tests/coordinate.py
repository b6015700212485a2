"""One process of a multi-process command whose processes are out of step (run by
``python -m ncfine_jax.launch`` in tests/test_coordination.py).

Usage: python tests/coordinate.py late SECONDS | slow-end SECONDS

``late``: process 1 reaches ``agree``, ``gather`` and ``barrier`` SECONDS after process 0
(gloo's rendezvous of a new device group gives up after 30 s). ``slow-end``: process 0
works SECONDS longer than the others before its command ends, under a jax.distributed
shutdown timeout of 3 s.
"""

import os
import sys
import time

import jax

from ncfine_jax import distributed
from ncfine_jax.cli import run_main

SHUTDOWN_TIMEOUT_S = 3


def late(seconds: float) -> None:
    if jax.process_index() == 1:
        time.sleep(seconds)
    distributed.agree(None, "late")
    values = distributed.gather(10 + jax.process_index(), "late values")
    distributed.barrier("late barrier")
    print(f"gathered {values}", flush=True)


def slow_end(seconds: float) -> None:
    if jax.process_index() == 0:
        time.sleep(seconds)
    print("done", flush=True)


if __name__ == "__main__":
    mode, seconds = sys.argv[1], float(sys.argv[2])
    if mode == "slow-end":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ[distributed.ENV_COORDINATOR],
                                   int(os.environ[distributed.ENV_NUM_PROCESSES]),
                                   int(os.environ[distributed.ENV_PROCESS_ID]),
                                   shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
        distributed._initialized = True  # as distributed.initialize leaves it
    else:
        distributed.initialize()
    sys.exit(run_main(lambda argv: (late if mode == "late" else slow_end)(seconds)))
