"""Joining a multi-process JAX job and checks shared by its processes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

# Set by ``spawn`` for each local worker; read by ``initialize()``.
ENV_COORDINATOR = "L2D_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "L2D_NUM_PROCESSES"
ENV_PROCESS_ID = "L2D_PROCESS_ID"
ENV_TIMEOUT = "L2D_INIT_TIMEOUT"
ENV_HEARTBEAT = "L2D_HEARTBEAT_TIMEOUT"

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_HEARTBEAT_S = 30

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _env_int(name: str) -> int | None:
  text = os.environ.get(name)
  if text is None or not text.strip():
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got "
                     f"{text!r}.") from None


def _env_float(name: str) -> float | None:
  text = os.environ.get(name)
  if text is None or not text.strip():
    return None
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"environment variable {name} must be a number, got "
                     f"{text!r}.") from None


def check_address(address: str) -> tuple[str, int]:
  """Splits ``'host:port'`` and checks it; returns ``(host, port)``.

  Raises:
    ValueError: not ``host:port`` with a port in ``[1, 65535]``.
  """
  m = _ADDRESS.match(str(address))
  if not m or not 1 <= int(m.group(2)) <= 65535:
    raise ValueError(
        f"`coordinator_address` must be 'host:port' with a port in [1, 65535]"
        f", got {address!r}.")
  return m.group(1).strip("[]"), int(m.group(2))


def check_process_id(process_id: Any, num_processes: Any) -> tuple[int, int]:
  """Checks ``num_processes >= 1`` and ``0 <= process_id < num_processes``.

  Returns:
    ``(process_id, num_processes)`` as Python ints.

  Raises:
    TypeError: a non-integer value.
    ValueError: a value out of range.

  Example:
    >>> check_process_id(1, 2)
    (1, 2)
  """
  for name, value in (("num_processes", num_processes),
                      ("process_id", process_id)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"`{name}` must be an int, got {value!r}.")
  if num_processes < 1:
    raise ValueError(f"`num_processes` must be >= 1, got {num_processes}.")
  if not 0 <= process_id < num_processes:
    raise ValueError(
        f"`process_id` must lie in [0, {num_processes}) for num_processes="
        f"{num_processes}, got {process_id}.")
  return int(process_id), int(num_processes)


def _wait_reachable(host: str, port: int, timeout_s: float) -> bool:
  """Whether a TCP connection to ``host:port`` opens within ``timeout_s``."""
  deadline = time.monotonic() + timeout_s
  while True:
    left = deadline - time.monotonic()
    try:
      with socket.create_connection((host, port),
                                    timeout=max(0.1, min(2.0, left))):
        return True
    except OSError:
      if time.monotonic() >= deadline:
        return False
      time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, *,
               timeout_s: float | None = None,
               heartbeat_timeout_s: int | None = None,
               local_device_ids: int | Sequence[int] | None = None) -> bool:
  """Joins a multi-process JAX job (``jax.distributed.initialize``).

  Three ways to call it:

  - ``initialize('10.0.0.1:1234', num_processes=2, process_id=i)`` in
    process ``i``: explicit arguments.
  - ``initialize()`` in a worker started by :func:`spawn`: the arguments come
    from the ``L2D_*`` environment variables it sets.
  - ``initialize()`` elsewhere: JAX's cluster auto-detection (SLURM, Open
    MPI, TPU pods, ...): ``jax.distributed.initialize()`` with no arguments.

  With ``num_processes=1`` (and no coordinator) nothing is started. On CPU,
  cross-process collectives use gloo
  (``jax_cpu_collectives_implementation='gloo'``). Call it before any other
  JAX call; calling it again in an initialised process does nothing.

  Args:
    coordinator_address: ``'host:port'`` of process 0's coordinator service.
    num_processes: total number of processes.
    process_id: this process's index, in ``[0, num_processes)``.
    timeout_s: how long to wait for the coordinator (processes ``>= 1``) or
      for every process to join (process 0). Default: ``$L2D_INIT_TIMEOUT``
      or 120 s.
    heartbeat_timeout_s: a process silent this long is declared dead and the
      job stops (default ``$L2D_HEARTBEAT_TIMEOUT`` or 30 s).
    local_device_ids: restrict this process to these local devices.

  Returns:
    ``True`` when a multi-process runtime is running, ``False`` for a plain
    single process.

  Raises:
    ValueError: a malformed address, ``num_processes < 1`` or a
      ``process_id`` out of range.
    TypeError: non-integer ``num_processes`` / ``process_id``.
    ConnectionError: the coordinator did not answer (or the processes did not
      all join) within ``timeout_s``; the message names the address.

  Example:
    >>> initialize(num_processes=1)  # a single process: nothing to join
    False
  """
  if jax.distributed.is_initialized():
    return True
  from_env = (coordinator_address is None and num_processes is None
              and process_id is None and os.environ.get(ENV_NUM_PROCESSES))
  if from_env:
    coordinator_address = os.environ.get(ENV_COORDINATOR) or None
    num_processes = _env_int(ENV_NUM_PROCESSES)
    process_id = _env_int(ENV_PROCESS_ID)
  if timeout_s is None:
    timeout_s = _env_float(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S
  if heartbeat_timeout_s is None:
    heartbeat_timeout_s = _env_int(ENV_HEARTBEAT) or DEFAULT_HEARTBEAT_S
  if not timeout_s > 0:
    raise ValueError(f"`timeout_s` must be > 0, got {timeout_s}.")
  if (coordinator_address is None and num_processes is None
      and process_id is None):
    # A cluster (SLURM, MPI, TPU pod) describes the job itself.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
      jax.distributed.initialize(
          initialization_timeout=math.ceil(timeout_s),
          heartbeat_timeout_seconds=int(heartbeat_timeout_s),
          local_device_ids=local_device_ids)
    except ValueError as e:  # no cluster detected
      raise ValueError(
          f"initialize() found no job to join ({e}): pass "
          "coordinator_address, num_processes and process_id, start the "
          "workers with distributed.spawn, or run under a cluster that JAX "
          "detects (SLURM, Open MPI, a TPU pod).") from e
    return True
  if num_processes is None:
    raise ValueError("`num_processes` is required with a "
                     "`coordinator_address` or `process_id`.")
  if process_id is None:
    if num_processes == 1:
      process_id = 0
    else:
      raise ValueError(f"`process_id` is required with num_processes="
                       f"{num_processes}.")
  process_id, num_processes = check_process_id(process_id, num_processes)
  if num_processes == 1 and coordinator_address is None:
    return False
  if coordinator_address is None:
    raise ValueError(f"`coordinator_address` ('host:port' of process 0) is "
                     f"required with num_processes={num_processes}.")
  host, port = check_address(coordinator_address)
  if process_id != 0 and not _wait_reachable(host, port, timeout_s):
    raise ConnectionError(
        f"process {process_id} of {num_processes} could not reach the "
        f"jax.distributed coordinator at {coordinator_address} within "
        f"{timeout_s:g} s; start process 0 first (it hosts the coordinator) "
        "and check the host, the port and the firewall.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes, process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=math.ceil(timeout_s),
        heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  except Exception as e:  # jaxlib raises its own runtime error types.
    if "before any JAX" in str(e):  # called too late: not a network error
      raise
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    who = ("waited for the other processes" if process_id == 0
           else "could not join")
    raise ConnectionError(
        f"process {process_id} of {num_processes} {who} at the "
        f"jax.distributed coordinator {coordinator_address} (timeout "
        f"{timeout_s:g} s): {first}") from e
  return True


def is_main_process() -> bool:
  """Whether this is process 0 (the one that writes logs and reports)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op alone)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def allgather(tree: Any) -> Any:
  """Stacks each process's numpy/array leaves: ``[P, ...]`` on every process.

  Every process must pass leaves of the same shapes and dtypes. With one
  process the leaves get a leading axis of size 1.

  Example:
    >>> allgather({"x": np.arange(3)})["x"].shape
    (1, 3)
  """
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(x)[None], tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree))


def config_hash(config: Any) -> str:
  """SHA-256 of a JSON-able config (keys sorted; other values by ``repr``)."""
  text = json.dumps(config, sort_keys=True, default=repr,
                    separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_same_config(config: Any, *, what: str = "config") -> str:
  """Checks that every process holds the same ``config``; returns its hash.

  Each process hashes its ``config`` (:func:`config_hash`) and the hashes
  are exchanged (an all-gather), so processes started with different
  arguments stop at once, before any work, instead of training different
  models that silently share one checkpoint.

  Args:
    config: any JSON-able value (e.g. ``vars(args)``).
    what: what the config is, for the message.

  Returns:
    The hex digest, the same on every process.

  Raises:
    ValueError: processes disagree; the message names them and their hashes.

  Example:
    >>> len(check_same_config({"lr": 0.1}))
    64
  """
  digest = config_hash(config)
  if jax.process_count() == 1:
    return digest
  words = np.frombuffer(bytes.fromhex(digest), np.uint8).astype(np.int32)
  every = allgather(words)
  mine = jax.process_index()
  hashes = [bytes(row.astype(np.uint8)).hex() for row in every]
  differ = [i for i, h in enumerate(hashes) if h != hashes[0]]
  if differ:
    listing = ", ".join(f"process {i}: {h[:12]}" for i, h in enumerate(hashes))
    raise ValueError(
        f"the {len(hashes)} processes disagree on the {what} (this is process "
        f"{mine}; {listing}); start every process with the same arguments, "
        "data and code.")
  return digest
