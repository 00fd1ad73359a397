"""Independent work items (seeds, settings) shared out over the processes.

Process ``p`` of ``N`` takes the items ``p, p + N, p + 2N, ...`` of a list
(``shard_items``); ``map_sharded`` runs a function over its share and
all-gathers the results in the items' order, so every process ends with
the list a single process would have built.

Results cross processes as JSON (UTF-8) and raw array bytes (``encode`` /
``decode``), never pickled: None, bools, ints, floats, strings, lists,
tuples and dicts, nested, and numpy/jax arrays come back bit for bit
(arrays as numpy arrays); anything else is a ``TypeError`` naming it.
"""

from __future__ import annotations

import json
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


# ------------------------------------------------- the bytes exchanged --
# A value crosses processes as one uint8 buffer: an 8-byte little-endian
# length, a UTF-8 JSON skeleton, then the raw bytes of its arrays. The JSON
# holds None, bools, ints, floats (NaN and infinities included), strings,
# lists and dicts with string keys as themselves; anything else is a
# one-key object tagged below, so nothing is ever unpickled and decoding
# builds only these types.
_ARRAY = "__l2d_ndarray__"  # [index into the array table]
_TUPLE = "__l2d_tuple__"  # [items]
_ITEMS = "__l2d_items__"  # [[key, value], ...]: keys not all strings
_TAGS = (_ARRAY, _TUPLE, _ITEMS)
_HEADER = 8
# Array element kinds that are plain bytes (no Python objects inside).
_KINDS = frozenset("biufcUSmM")


def _dtype_name(dtype: np.dtype, where: str) -> str:
  if dtype.kind in _KINDS and dtype.fields is None:
    return dtype.str
  name = dtype.name  # ml_dtypes (bfloat16, float8_*), which jax registers
  if dtype.kind == "V" and dtype.fields is None and _ml_dtype(name) == dtype:
    return name
  raise TypeError(f"{where} is an array of dtype {dtype}, which cannot be "
                  "sent between processes (numbers, booleans, strings and "
                  "dates only).")


def _ml_dtype(name: str) -> np.dtype | None:
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  kind = getattr(ml_dtypes, name, None)
  return None if kind is None else np.dtype(kind)


def _to_skeleton(obj: Any, arrays: list[np.ndarray], where: str,
                 seen: frozenset[int]) -> Any:
  """``obj`` as JSON-able values, its arrays appended to ``arrays``."""
  kind = type(obj)
  if obj is None or kind in (bool, int, float, str):
    return obj
  if kind is np.ndarray or isinstance(obj, (np.generic, jax.Array)):
    value = np.asarray(obj) if isinstance(obj, jax.Array) else obj
    dtype = _dtype_name(np.asarray(value).dtype, where)
    arrays.append((value, dtype))
    return {_ARRAY: len(arrays) - 1}
  if kind not in (list, tuple, dict):
    hint = (" (a NamedTuple: send its ._asdict())"
            if isinstance(obj, tuple) else "")
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}{hint}; values "
        "sent between processes must be None, bool, int, float, str, list, "
        "tuple, dict or numpy/jax arrays (nothing is pickled).")
  if id(obj) in seen:
    raise TypeError(f"{where} contains itself; it cannot be sent between "
                    "processes.")
  seen = seen | {id(obj)}
  if kind is list:
    return [_to_skeleton(x, arrays, f"{where}[{i}]", seen)
            for i, x in enumerate(obj)]
  if kind is tuple:
    return {_TUPLE: [_to_skeleton(x, arrays, f"{where}[{i}]", seen)
                     for i, x in enumerate(obj)]}
  if all(type(k) is str for k in obj) and not (len(obj) == 1 and
                                                next(iter(obj)) in _TAGS):
    return {k: _to_skeleton(v, arrays, f"{where}[{k!r}]", seen)
            for k, v in obj.items()}
  return {_ITEMS: [[_to_skeleton(k, arrays, f"a key of {where}", seen),
                    _to_skeleton(v, arrays, f"{where}[{k!r}]", seen)]
                   for k, v in obj.items()]}


def _from_skeleton(node: Any, arrays: list[np.ndarray]) -> Any:
  if isinstance(node, list):
    return [_from_skeleton(x, arrays) for x in node]
  if not isinstance(node, dict):
    return node
  if len(node) == 1:
    (tag, body), = node.items()
    if tag == _ARRAY:
      return arrays[body]
    if tag == _TUPLE:
      return tuple(_from_skeleton(x, arrays) for x in body)
    if tag == _ITEMS:
      return {_from_skeleton(k, arrays): _from_skeleton(v, arrays)
              for k, v in body}
  return {k: _from_skeleton(v, arrays) for k, v in node.items()}


def encode(obj: Any, *, name: str = "the value") -> np.ndarray:
  """``obj`` as a ``uint8`` buffer that :func:`decode` turns back into it.

  Exact round trip of None, bool, int, float (NaN, ±inf, -0.0), str, list,
  tuple and dict (any keys among these) nested, and of numpy arrays and
  scalars (dtype, shape and bits; jax arrays come back as numpy arrays).

  Args:
    obj: the value.
    name: what ``obj`` is, for the error message.

  Returns:
    ``[nbytes]`` uint8: its JSON (UTF-8) then its arrays' bytes.

  Raises:
    TypeError: a value of another type (e.g. a set, a NamedTuple, an object
      array), named by its position in ``obj``.

  Example:
    >>> decode(encode({"seed": 3, "acc": (0.5, np.arange(2))}))
    {'seed': 3, 'acc': (0.5, array([0, 1]))}
  """
  arrays: list[tuple[Any, str]] = []
  skeleton = _to_skeleton(obj, arrays, name, frozenset())
  table, blobs, offset = [], [], 0
  for value, dtype in arrays:
    raw = np.ascontiguousarray(value).tobytes()
    table.append({"dtype": dtype, "shape": list(np.shape(value)),
                  "scalar": isinstance(value, np.generic),
                  "offset": offset, "nbytes": len(raw)})
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps({"arrays": table, "value": skeleton}, allow_nan=True,
                    separators=(",", ":")).encode("utf-8")
  return np.frombuffer(len(text).to_bytes(_HEADER, "little") + text
                       + b"".join(blobs), np.uint8)


def decode(buffer: np.ndarray | bytes) -> Any:
  """The value that :func:`encode` turned into ``buffer``.

  Args:
    buffer: what :func:`encode` returned (uint8 array or bytes).

  Returns:
    The value; arrays and numpy scalars with their dtype, shape and bits.

  Raises:
    ValueError: ``buffer`` is not what :func:`encode` writes.
  """
  data = (buffer if isinstance(buffer, bytes)
          else np.asarray(buffer, np.uint8).tobytes())
  size = int.from_bytes(data[:_HEADER], "little")
  try:
    head = json.loads(data[_HEADER:_HEADER + size].decode("utf-8"))
    body = memoryview(data)[_HEADER + size:]
    arrays = []
    for a in head["arrays"]:
      name = a["dtype"]
      dtype = (np.dtype(name) if name[:1] in "<>|=" else _ml_dtype(name))
      if dtype is None or (dtype.kind not in _KINDS and dtype.name != name):
        raise ValueError(f"unknown array dtype {name!r}")
      start, stop = a["offset"], a["offset"] + a["nbytes"]
      if stop > len(body):
        raise ValueError("array bytes past the end")
      x = np.frombuffer(body[start:stop], dtype).reshape(a["shape"]).copy()
      arrays.append(x[()] if a["scalar"] else x)
    return _from_skeleton(head["value"], arrays)
  except (ValueError, KeyError, TypeError, IndexError,
          UnicodeDecodeError) as e:
    raise ValueError(f"not a buffer written by encode: {e}") from None


def allgather_objects(obj: Any) -> list[Any]:
  """Every process's ``obj``, as a list in process order.

  Each process encodes its ``obj`` (:func:`encode`: JSON for None, bool,
  int, float, str, list, tuple and dict; raw bytes for numpy/jax arrays;
  nothing pickled); the buffers are padded to the longest and all-gathered
  (two all-gathers: lengths, then bytes) and decoded. With one process it
  is ``[obj]`` as passed (checked all the same, so that a value that could
  not be sent fails alone too). Every process must call it (it is a
  collective).

  Args:
    obj: this process's value.

  Returns:
    The ``N`` values, in process order (arrays as numpy arrays).

  Raises:
    TypeError: on every process when one's ``obj`` holds a value of
      another type; that process's message names it, the others name
      that process.

  Example:
    >>> allgather_objects({"seed": 3})
    [{'seed': 3}]
  """
  if jax.process_count() == 1:
    encode(obj, name="the object")
    return [obj]
  try:
    data, error = encode(obj, name="the object"), None
  except TypeError as e:
    data, error = encode(str(e)), e
  lengths = _runtime.allgather(np.array([data.size, error is not None],
                                        np.int32))
  padded = np.zeros(int(lengths[:, 0].max()), np.uint8)
  padded[:data.size] = data
  every = _runtime.allgather(padded)
  values = [decode(every[p, :int(n)]) for p, (n, _) in enumerate(lengths)]
  if error is not None:
    raise error
  for p, (_, failed) in enumerate(lengths):
    if failed:
      raise TypeError(f"process {p} of {len(values)} could not send its "
                      f"object: {values[p]}")
  return values


def map_sharded(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
  """``[fn(x) for x in items]``, each process computing its share.

  Process ``p`` of ``N`` calls ``fn`` on items ``p, p + N, ...``
  (:func:`shard_items`), in order; the results are all-gathered
  (:func:`allgather_objects`) and put back in the items' order
  (:func:`interleave`), so every process returns the list one process would.
  Use it for independent work whose result does not depend on which process
  computes it (e.g. one seed's run, keyed by the seed). With one process it
  is the plain list comprehension, its results checked as if they were
  sent (so a result that could not be sent fails alone too).

  If ``fn`` raises on one process, or returns a value that cannot be sent
  (:func:`encode`), that process stops its share and every process raises
  after the gather (no process is left waiting): the failing one re-raises
  its exception, the others a ``RuntimeError`` naming the process, the
  item's position and the error. Processes that pass different numbers of
  items all raise ``ValueError``.

  Args:
    fn: the work of one item; its result is made of None, bool, int, float,
      str, list, tuple, dict and numpy/jax arrays (they come back as numpy
      arrays from the other processes).
    items: the work items; every process must pass the same.

  Returns:
    ``[fn(x) for x in items]``, on every process.

  Example:
    >>> map_sharded(lambda s: s * s, [1, 2, 3])
    [1, 4, 9]
  """
  items = list(items)
  if jax.process_count() == 1:
    results = [fn(x) for x in items]
    for i, r in enumerate(results):
      encode(r, name=f"the result of item {i}")
    return results
  p, n = jax.process_index(), jax.process_count()
  mine, error, failed_at = [], None, None
  for j, x in enumerate(items[p::n]):
    i = p + j * n
    try:  # encoded here, so that a result that cannot be sent is reported
      mine.append(encode(fn(x), name=f"the result of item {i}"))
    except Exception as e:  # pylint: disable=broad-exception-caught
      error, failed_at = e, i
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
  return interleave([[decode(r) for r in share] for _, share, _ in gathered],
                    len(items))
