"""Start N local processes of one command as a multi-process JAX run.

Usage:
  python -m ncfine_jax.launch -n N [--devices-per-process D] -- SCRIPT [ARGS...]

SCRIPT is a Python file (run with this interpreter), ``-m MODULE``, or any command. Every
process gets the coordinator address of a free port on 127.0.0.1 and its index through
``NCFINE_COORDINATOR`` / ``NCFINE_NUM_PROCESSES`` / ``NCFINE_PROCESS_ID`` (read by every
experiment script, see ``ncfine_jax.distributed``). On a CPU host each process gets D
forced CPU devices (gloo collectives between processes); on a GPU host (``nvidia-smi``
lists GPUs) one process per GPU (``CUDA_VISIBLE_DEVICES``), N defaulting to the GPU count.

Each output line is prefixed with ``[i]``, the process index. When a process exits with a
non-zero code, the others are stopped (SIGTERM, then SIGKILL after a grace period) and
the launcher returns that code (128 + signal for a process killed by a signal). On a
cluster, run the same script under ``srun`` instead (JAX detects SLURM itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from ncfine_jax.cli import ArgumentParser, run_main
from ncfine_jax.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from ncfine_jax.errors import ConfigError

GRACE_S = 3.0  # between SIGTERM and SIGKILL when stopping the other processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    """GPUs ``nvidia-smi -L`` lists (0 without the tool or a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def command_of(argv: Sequence[str]) -> list[str]:
    """The command each process runs: ``python SCRIPT.py ...``, ``python -m MOD ...`` or as is."""
    argv = list(argv)
    if argv[0] == "-m" or argv[0].endswith(".py") or Path(argv[0]).suffix == ".py":
        return [sys.executable, *argv]
    return argv


def _pump(stream, out, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            out.write(prefix + line.decode(errors="replace"))
            out.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        remaining = deadline - time.monotonic()
        try:
            p.wait(timeout=max(remaining, 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def launch(command: Sequence[str], num_processes: int, devices_per_process: int | None = None,
           platform: str = "auto") -> int:
    """Run ``command`` as ``num_processes`` processes of one JAX run; returns the exit code.

    Args:
      command: the command line of every process (see ``command_of``).
      num_processes: N >= 1.
      devices_per_process: CPU: forced devices per process (default 1); GPU: must be 1.
      platform: "cpu", "gpu" or "auto" (GPU when ``nvidia-smi`` lists GPUs).
    """
    gpus = gpu_count() if platform != "cpu" else 0
    if platform == "gpu" and gpus == 0:
        raise ConfigError("--platform gpu: nvidia-smi lists no GPU on this host")
    use_gpu = gpus > 0 and platform in ("gpu", "auto")
    if use_gpu and num_processes > gpus:
        raise ConfigError(f"-n {num_processes}: this host has {gpus} GPU(s), one per process")
    if use_gpu and devices_per_process not in (None, 1):
        raise ConfigError(f"--devices-per-process {devices_per_process}: on GPUs each process "
                          "drives one GPU")
    port = free_port()
    lock = threading.Lock()
    procs, pumps = [], []
    for i in range(num_processes):
        env = dict(os.environ)
        env.update({ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_NUM_PROCESSES: str(num_processes),
                    ENV_PROCESS_ID: str(i), "PYTHONUNBUFFERED": "1"})
        if use_gpu:
            env["CUDA_VISIBLE_DEVICES"] = str(i)
        else:
            env["JAX_PLATFORMS"] = "cpu"
            flags = [f for f in env.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count")]
            flags.append(f"--xla_force_host_platform_device_count={devices_per_process or 1}")
            env["XLA_FLAGS"] = " ".join(flags)
        try:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as e:
            _stop(procs)
            raise ConfigError(f"{command[0]}: cannot be started ({e.strerror})") from None
        procs.append(proc)
        sys.stdout.write(f"launch: process {i} pid {proc.pid}\n")
        sys.stdout.flush()
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            t = threading.Thread(target=_pump, args=(stream, out, f"[{i}] ", lock), daemon=True)
            t.start()
            pumps.append(t)
    code = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                code = _exit_code(failed[0])
                _stop(procs)
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs)
        code = 130
    for t in pumps:
        t.join(timeout=5)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:split], argv[split + 1:]
    parser = ArgumentParser(prog="python -m ncfine_jax.launch",
                            description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--num-processes", type=int, default=None,
                        help="number of processes (default: the GPU count on a GPU host, "
                             "else 2)")
    parser.add_argument("--devices-per-process", type=int, default=None, metavar="D",
                        help="CPU: forced CPU devices per process (default 1)")
    parser.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto",
                        help="where the processes run (auto: GPUs when nvidia-smi lists any)")
    args = parser.parse_args(own)  # --help prints the usage and exits here
    if "--" not in argv:
        raise ConfigError("command: give it after --, e.g. python -m ncfine_jax.launch -n 2 -- "
                          "experiments/coarse_digits.py --epochs 5")
    if not command:
        raise ConfigError("command: nothing after --")
    n = args.num_processes
    if n is None:
        n = (gpu_count() if args.platform != "cpu" else 0) or 2
    if n < 1:
        raise ConfigError(f"-n {n}: must be >= 1")
    if args.devices_per_process is not None and args.devices_per_process < 1:
        raise ConfigError(f"--devices-per-process {args.devices_per_process}: must be >= 1")
    if Path(command[0]).suffix == ".py" and not Path(command[0]).is_file():
        raise ConfigError(f"{command[0]}: no such script")
    return launch(command_of(command), n, args.devices_per_process, args.platform)


if __name__ == "__main__":
    code = {}
    status = run_main(lambda argv: code.setdefault("rc", main(argv)))
    sys.exit(status or code.get("rc", 0))
