"""Independent work items (seeds, settings) shared out over the processes.

Process ``p`` of ``N`` takes the items ``p, p + N, p + 2N, ...`` of a list
(``shard_items``); ``map_sharded`` runs a function over its share and
all-gathers the results (pickled; numbers, numpy arrays and nested
containers come back bit for bit) in the items' order, so every process ends
with the list a single process would have built.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from l2d_jax.distributed import _runtime

T = TypeVar("T")
R = TypeVar("R")


def _job(process_index: int | None, num_processes: int | None
         ) -> tuple[int, int]:
  if num_processes is None:
    num_processes = jax.process_count()
  if process_index is None:
    process_index = jax.process_index()
  return _runtime.check_process_id(process_index, num_processes)


def shard_items(items: Sequence[T], *, process_index: int | None = None,
                num_processes: int | None = None) -> list[T]:
  """This process's share of ``items``: positions ``p, p + N, p + 2N, ...``.

  Round-robin keeps the shares within one item of each other and spreads
  items of growing cost (e.g. larger settings later in a list) evenly.

  Args:
    items: the work items, in the order of the results.
    process_index: ``p`` (default: ``jax.process_index()``).
    num_processes: ``N`` (default: ``jax.process_count()``).

  Returns:
    The items of process ``p`` in their order (empty when ``p >= len(items)``).

  Raises:
    ValueError, TypeError: ``p`` not in ``[0, N)`` or not an int.

  Example:
    >>> shard_items([10, 11, 12, 13, 14], process_index=1, num_processes=2)
    [11, 13]
  """
  p, n = _job(process_index, num_processes)
  return list(items)[p::n]


def interleave(shares: Sequence[Sequence[R]], num_items: int) -> list[R]:
  """Inverse of :func:`shard_items`: item ``i`` is ``shares[i % N][i // N]``.

  Args:
    shares: ``N`` lists, share ``p`` holding the results of items
      ``p, p + N, ...``.
    num_items: the number of items.

  Returns:
    The ``num_items`` results in the items' order.

  Raises:
    ValueError: a share's length does not match ``num_items``.

  Example:
    >>> interleave([[10, 12, 14], [11, 13]], 5)
    [10, 11, 12, 13, 14]
  """
  n = len(shares)
  for p, share in enumerate(shares):
    expected = len(range(p, num_items, n))
    if len(share) != expected:
      raise ValueError(
          f"share {p} of {n} holds {len(share)} results, expected {expected} "
          f"for {num_items} items.")
  return [shares[i % n][i // n] for i in range(num_items)]


def allgather_objects(obj: Any) -> list[Any]:
  """Every process's picklable ``obj``, as a list in process order.

  The objects are pickled, padded to the longest and all-gathered as bytes
  (two all-gathers: lengths, then bytes); with one process it is ``[obj]``.
  Every process must call it (it is a collective).

  Example:
    >>> allgather_objects({"seed": 3})
    [{'seed': 3}]
  """
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),
                       np.uint8)
  lengths = _runtime.allgather(np.array([data.size], np.int32))[:, 0]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  every = _runtime.allgather(padded)
  return [pickle.loads(every[p, :int(lengths[p])].tobytes())
          for p in range(len(lengths))]


def map_sharded(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
  """``[fn(x) for x in items]``, each process computing its share.

  Process ``p`` of ``N`` calls ``fn`` on items ``p, p + N, ...``
  (:func:`shard_items`), in order; the results are all-gathered
  (:func:`allgather_objects`) and put back in the items' order
  (:func:`interleave`), so every process returns the list one process would.
  Use it for independent work whose result does not depend on which process
  computes it (e.g. one seed's run, keyed by the seed). With one process it
  is the plain list comprehension.

  If ``fn`` raises on one process, that process stops its share and every
  process raises after the gather (no process is left waiting): the failing
  one re-raises its exception, the others a ``RuntimeError`` naming the
  process, the item's position and the error. Processes that pass different
  numbers of items all raise ``ValueError``.

  Args:
    fn: the work of one item; its result must be picklable.
    items: the work items; every process must pass the same.

  Returns:
    ``[fn(x) for x in items]``, on every process.

  Example:
    >>> map_sharded(lambda s: s * s, [1, 2, 3])
    [1, 4, 9]
  """
  items = list(items)
  if jax.process_count() == 1:
    return [fn(x) for x in items]
  p, n = jax.process_index(), jax.process_count()
  mine, error, failed_at = [], None, None
  for j, x in enumerate(items[p::n]):
    try:
      mine.append(fn(x))
    except Exception as e:  # pylint: disable=broad-exception-caught
      error, failed_at = e, p + j * n
      break
  report = (None if error is None else
            (failed_at, f"{type(error).__name__}: {error}"))
  gathered = allgather_objects((len(items), mine if error is None else [],
                                report))
  if error is not None:
    raise error
  counts = [c for c, _, _ in gathered]
  if len(set(counts)) > 1:
    raise ValueError(
        f"the {n} processes passed different numbers of items to "
        f"map_sharded (this is process {p}; counts by process: {counts}); "
        "every process must pass the same items.")
  for q, (_, _, rep) in enumerate(gathered):
    if rep is not None:
      raise RuntimeError(
          f"process {q} of {n} failed on item {rep[0]} of {len(items)}: "
          f"{rep[1]}")
  return interleave([share for _, share, _ in gathered], len(items))
