"""Local multi-process launcher: N workers on loopback, watched together."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from l2d_jax.distributed import _runtime

_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")


class WorkerError(RuntimeError):
  """A spawned worker failed or the job ran out of time; all were stopped."""


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port free on ``host`` now (the OS picks it).

  Example:
    >>> 0 < free_port() < 65536
    True
  """
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return int(s.getsockname()[1])


def _signal_name(code: int) -> str:
  if code < 0:
    try:
      return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"was killed by signal {-code}"
  return f"exited with code {code}"


def _tail(path: pathlib.Path | None, lines: int = 12) -> str:
  if path is None or not path.exists():
    return ""
  text = path.read_text(encoding="utf-8", errors="replace").splitlines()
  keep = [l for l in text if l.strip()][-lines:]
  return "\n".join("  | " + l for l in keep)


def _kill(proc: subprocess.Popen, sig: int) -> None:
  """Signals the worker's process group (it runs in its own session)."""
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def worker_env(process_id: int, num_processes: int, address: str, *,
               devices_per_process: int | None = None,
               timeout_s: float | None = None,
               heartbeat_timeout_s: int | None = None,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of local worker ``process_id`` (see :func:`spawn`)."""
  env = dict(os.environ if base is None else base)
  env[_runtime.ENV_COORDINATOR] = address
  env[_runtime.ENV_NUM_PROCESSES] = str(num_processes)
  env[_runtime.ENV_PROCESS_ID] = str(process_id)
  if timeout_s is not None:
    env[_runtime.ENV_TIMEOUT] = str(timeout_s)
  if heartbeat_timeout_s is not None:
    env[_runtime.ENV_HEARTBEAT] = str(int(heartbeat_timeout_s))
  if devices_per_process is not None:
    flags = _COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    flags.append(
        f"--xla_force_host_platform_device_count={int(devices_per_process)}")
    env["XLA_FLAGS"] = " ".join(flags)
  return env


def spawn(argv: Sequence[str], num_processes: int, *,
          devices_per_process: int | None = None,
          timeout_s: float | None = None,
          init_timeout_s: float = 60.0,
          heartbeat_timeout_s: int = 30,
          grace_s: float = 5.0,
          log_dir: str | os.PathLike[str] | None = None,
          env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> list[int]:
  """Runs ``argv`` as ``num_processes`` local workers of one JAX job.

  Each worker is ``argv`` (e.g. ``[sys.executable, '-m', 'pkg', ...]``) with
  ``L2D_COORDINATOR_ADDRESS=127.0.0.1:<free port>``, ``L2D_NUM_PROCESSES``
  and ``L2D_PROCESS_ID`` set, so that :func:`initialize` with no arguments
  joins the job; with ``devices_per_process`` each worker's CPU platform
  gets that many devices (``--xla_force_host_platform_device_count``).

  The workers are watched together: when one fails (non-zero exit or a
  signal) the others get ``grace_s`` seconds to stop by themselves, then
  SIGTERM, then SIGKILL, and :class:`WorkerError` names the first failure
  and shows the end of its log. Nothing is left running.

  Args:
    argv: the worker command line.
    num_processes: how many workers (>= 1).
    devices_per_process: forced CPU devices per worker (default: unchanged).
    timeout_s: wall-clock limit of the whole job (default: none).
    init_timeout_s: each worker's limit to reach the coordinator.
    heartbeat_timeout_s: a worker silent this long is declared dead by the
      others' runtimes.
    grace_s: how long the others may take to stop after a failure.
    log_dir: write worker ``i``'s stdout and stderr to
      ``log_dir/process_<i>.log`` (default: inherit this process's streams;
      process 0's output goes to this process's stdout either way).
    env: extra environment variables for every worker.
    cwd: working directory of the workers.

  Returns:
    The exit codes (all 0).

  Raises:
    ValueError: ``num_processes < 1`` or an empty ``argv``.
    WorkerError: a worker failed or the job passed ``timeout_s``.
  """
  if not argv:
    raise ValueError("`argv` must name the worker command.")
  if isinstance(num_processes, bool) or int(num_processes) != num_processes \
      or num_processes < 1:
    raise ValueError(f"`num_processes` must be an int >= 1, got "
                     f"{num_processes!r}.")
  num_processes = int(num_processes)
  address = f"127.0.0.1:{free_port()}"
  logs: list[pathlib.Path | None] = [None] * num_processes
  if log_dir is not None:
    pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
    logs = [pathlib.Path(log_dir) / f"process_{i}.log"
            for i in range(num_processes)]
  base = dict(os.environ)
  base.update(env or {})
  procs: list[subprocess.Popen] = []
  files = []
  try:
    for i in range(num_processes):
      out = None
      if logs[i] is not None:
        out = open(logs[i], "wb")  # pylint: disable=consider-using-with
        files.append(out)
      procs.append(subprocess.Popen(
          list(argv), cwd=cwd, stdout=out,
          stderr=subprocess.STDOUT if out is not None else None,
          env=worker_env(i, num_processes, address,
                         devices_per_process=devices_per_process,
                         timeout_s=init_timeout_s,
                         heartbeat_timeout_s=heartbeat_timeout_s, base=base),
          start_new_session=True))
    return _watch(procs, logs, timeout_s=timeout_s, grace_s=grace_s,
                  address=address)
  finally:
    for p in procs:
      if p.poll() is None:
        _kill(p, signal.SIGKILL)
        p.wait()
    for f in files:
      f.close()


def _watch(procs, logs, *, timeout_s, grace_s, address) -> list[int]:
  start = time.monotonic()
  n = len(procs)
  while True:
    codes = [p.poll() for p in procs]
    failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
    if failed or all(c == 0 for c in codes):
      break
    if timeout_s is not None and time.monotonic() - start > timeout_s:
      for p in procs:
        _kill(p, signal.SIGKILL)
      for p in procs:
        p.wait()
      raise WorkerError(
          f"the {n} workers (coordinator {address}) did not finish within "
          f"{timeout_s:g} s; all were killed.")
    time.sleep(0.05)
  if not failed:
    return [int(c) for c in codes]
  first = failed[0]
  first_code = codes[first]
  # The others usually fail on their own (a lost peer); give them a moment.
  deadline = time.monotonic() + grace_s
  while time.monotonic() < deadline and any(p.poll() is None for p in procs):
    time.sleep(0.05)
  stopped = []
  for sig in (signal.SIGTERM, signal.SIGKILL):
    running = [i for i, p in enumerate(procs) if p.poll() is None]
    for i in running:
      _kill(procs[i], sig)
      stopped.append(i)
    end = time.monotonic() + 3.0
    while time.monotonic() < end and any(p.poll() is None for p in procs):
      time.sleep(0.05)
  for p in procs:
    p.wait()
  others = [f"process {i} {_signal_name(p.returncode)}"
            for i, p in enumerate(procs) if i != first]
  how = ("stopped by this launcher: " if stopped else "") + ", ".join(others)
  tail = _tail(logs[first])
  raise WorkerError(
      f"process {first} of {n} {_signal_name(first_code)}; "
      f"{how or 'no other process'}."
      + (f"\nlast lines of process {first}'s log ({logs[first]}):\n{tail}"
         if tail else ""))


def python_module_argv(module: str, args: Sequence[str]) -> list[str]:
  """``[sys.executable, '-m', module, *args]``."""
  return [sys.executable, "-m", module, *args]
