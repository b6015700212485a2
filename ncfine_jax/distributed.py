"""Multi-process runs on JAX's own runtime (``jax.distributed``): one command, N processes.

A command started as one of several processes joins the others before touching any
device; ``jax.devices()`` then spans every device of every process and the trainer's
("models", "data") mesh covers them all. Where the processes come from:

* explicit: ``--coordinator HOST:PORT --num-processes N --process-id I`` on every process
  (or the environment variables ``NCFINE_COORDINATOR``, ``NCFINE_NUM_PROCESSES``,
  ``NCFINE_PROCESS_ID``, which ``python -m ncfine_jax.launch`` sets);
* a cluster JAX detects itself: SLURM (``srun``) or Open MPI (``mpirun``) with more than
  one task.

Only process 0 writes files (logs, features, results, reports, figures); every process
computes, and orbax writes each checkpoint once, coordinated. On CPU the processes talk
through gloo collectives.
"""

from __future__ import annotations

import itertools
import os

from ncfine_jax.errors import ConfigError, NcfineError, WorkdirError
from ncfine_jax.text import squashed

ENV_COORDINATOR = "NCFINE_COORDINATOR"
ENV_NUM_PROCESSES = "NCFINE_NUM_PROCESSES"
ENV_PROCESS_ID = "NCFINE_PROCESS_ID"
# Task counts of the clusters jax.distributed.initialize() detects by itself.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")

_initialized = False


def add_distributed_flags(parser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id`` (see the module docstring)."""
    a = parser.add_argument
    a("--coordinator", default=None, metavar="HOST:PORT",
      help=f"multi-process run: address of process 0's coordinator (else ${ENV_COORDINATOR}; "
           "SLURM and Open MPI are detected)")
    a("--num-processes", type=int, default=None, metavar="N",
      help=f"multi-process run: number of processes (else ${ENV_NUM_PROCESSES})")
    a("--process-id", type=int, default=None, metavar="I",
      help=f"multi-process run: this process's index 0..N-1 (else ${ENV_PROCESS_ID})")


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}={value!r}: expected an integer") from None


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict | None:
    """The multi-process settings from flags, else the environment.

    Returns:
      {"coordinator_address", "num_processes", "process_id"} for an explicit setup, {}
      for a cluster JAX detects itself, None for a single-process run.

    Raises:
      ConfigError: incomplete or inconsistent settings.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    if all(v is None for v in given.values()):
        sizes = [_int_env(name) for name in CLUSTER_SIZE_VARIABLES]
        return {} if any(s is not None and s > 1 for s in sizes) else None
    missing = [flag for flag, v in given.items() if v is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: needed for a multi-process run (with "
                          f"{', '.join(f for f in given if f not in missing)})")
    if ":" not in coordinator or not coordinator.rsplit(":", 1)[1].isdigit():
        raise ConfigError(f"--coordinator {coordinator!r}: expected HOST:PORT")
    if num_processes < 1:
        raise ConfigError(f"--num-processes {num_processes}: must be >= 1")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id {process_id}: must lie in 0..{num_processes - 1}")
    if num_processes == 1:
        return None
    return {"coordinator_address": coordinator, "num_processes": num_processes,
            "process_id": process_id}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join the other processes when this is one of several (before any device is used).

    Returns:
      True when running as one of several processes.
    """
    global _initialized
    setup = settings(coordinator, num_processes, process_id)
    if setup is None:
        return False
    if _initialized:
        return True
    import jax

    # CPU devices of several processes exchange data through gloo (accelerators use their
    # own collectives); the setting must precede the first use of the CPU backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**setup)
    except Exception as e:  # noqa: BLE001 - connection failures come as several types
        where = setup.get("coordinator_address", "the cluster's coordinator")
        raise ConfigError(f"multi-process run: cannot join {where} "
                          f"({squashed(e)[:300]})") from None
    _initialized = True
    return True


def initialize_from_args(args) -> bool:
    """``initialize`` from parsed ``add_distributed_flags`` flags."""
    return initialize(args.coordinator, args.num_processes, args.process_id)


# How long a process waits at a barrier or for the others' values: long, because the
# others may be decoding data, compiling or (process 0) analysing for many minutes. A
# process that dies ends the run sooner: the launcher stops the others, and the
# coordinator's heartbeat ends a cluster's.
WAIT_S = 24 * 3600
_coordination_count = itertools.count()


def _coordination_client():
    """jax.distributed's client of the coordination service (barriers and a key-value store
    over its own connection), or None where this JAX lacks it.

    Why not device collectives: on CPU, gloo opens each new group of devices with a
    rendezvous that gives up after 30 s, which a process still compiling or writing can
    miss. orbax reaches the client the same way.
    """
    try:
        from jax._src import distributed as jax_distributed
    except ImportError:
        return None
    client = getattr(jax_distributed.global_state, "client", None)
    needed = ("wait_at_barrier", "key_value_set", "blocking_key_value_get")
    return client if all(hasattr(client, m) for m in needed) else None


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op in one process).

    Every process must call the same barriers in the same order (they are numbered)."""
    import jax

    if jax.process_count() == 1:
        return
    client = _coordination_client()
    key = f"ncfine/{next(_coordination_count)}/{name}"
    if client is None:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(key)
        return
    client.wait_at_barrier(key, WAIT_S * 1000)


def gather(value: int, name: str) -> list[int]:
    """``value`` of every process, in process order (``[value]`` in one process); every
    process must call it, as ``barrier``."""
    import jax

    if jax.process_count() == 1:
        return [int(value)]
    client = _coordination_client()
    key = f"ncfine/{next(_coordination_count)}/{name}"
    if client is None:
        import numpy as np
        from jax.experimental import multihost_utils

        return [int(v) for v in np.asarray(
            multihost_utils.process_allgather(np.int64(value))).reshape(-1)]
    client.key_value_set(f"{key}/{jax.process_index()}", str(int(value)))
    return [int(client.blocking_key_value_get(f"{key}/{i}", WAIT_S * 1000))
            for i in range(jax.process_count())]


def agree(problem: NcfineError | None, what: str) -> None:
    """Raise on every process when any process met a ``problem`` (also a barrier).

    Process 0 alone checks and claims a workdir; without this, the others would wait in
    their next collective until it times out. The process that met the problem raises it;
    the others raise one line naming that process.
    """
    flags = gather(problem is not None, "agree")
    if problem is None and any(flags):
        raise WorkdirError(f"{what}: refused by process {flags.index(1)} (its error line "
                           "says why)")
    if problem is not None:
        raise problem


def finish() -> None:
    """At the end of a command that succeeded: wait for the other processes (no-op unless
    ``initialize`` joined several).

    Process 0 alone analyses after training; the others would otherwise exit first, and
    jax.distributed's shutdown gives up on them after 5 minutes by aborting every process.
    """
    if _initialized:
        barrier("finished")


def is_writer() -> bool:
    """True on the process that writes files (process 0)."""
    import jax

    return jax.process_index() == 0
