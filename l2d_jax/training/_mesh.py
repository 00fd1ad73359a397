"""Data-parallel meshes and batch placement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
SEED_AXIS = "seed"


def data_mesh(num_devices: int | None = None, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis ``('data',)`` mesh for data parallelism.

  The axis is ``AxisType.Auto`` so that arbitrary loss functions compile
  under the GSPMD partitioner without sharding annotations.

  Args:
    num_devices: how many of ``devices`` to use (default: all).
    devices: devices to use (default: ``jax.devices()``: every device of
      every process, so in a multi-process job the mesh is global; with one
      process these are its local devices).

  Returns:
    A ``jax.sharding.Mesh`` with a single axis named ``'data'``.

  Raises:
    ValueError: ``num_devices`` is not in ``[1, len(devices)]``.

  Example:
    >>> mesh = data_mesh(1)
    >>> mesh.axis_names
    ('data',)
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices) if num_devices is None else int(num_devices)
  if not 1 <= n <= len(devices):
    raise ValueError(
        f"`num_devices` must lie in [1, {len(devices)}], got {num_devices}.")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:n])


def num_data_shards(mesh: Mesh) -> int:
  """Size of the mesh's ``'data'`` axis (raises if it has none)."""
  if DATA_AXIS not in mesh.axis_names:
    raise ValueError(
        f"the mesh needs an axis named {DATA_AXIS!r} for the batch, got axes "
        f"{mesh.axis_names}.")
  return int(mesh.shape[DATA_AXIS])


def check_batch(batch: Any, num_shards: int, *, where: str = "batch") -> int:
  """Checks a host batch (a dict of arrays) and returns its size.

  Args:
    batch: mapping from names to arrays with a common leading batch axis.
    num_shards: the batch size must be a multiple of this.
    where: text naming the batch in error messages.

  Returns:
    The batch size.

  Raises:
    TypeError: ``batch`` is not a non-empty mapping of arrays.
    ValueError: inconsistent leading axes or a batch size not divisible by
      ``num_shards``.
  """
  if not isinstance(batch, Mapping) or not batch:
    raise TypeError(f"{where}: the batch must be a non-empty dict of arrays, "
                    f"got {type(batch).__name__}.")
  sizes = {}
  for name, value in batch.items():
    shape = np.shape(value)
    if not shape:
      raise ValueError(f"{where}: `{name}` is a scalar; every entry needs a "
                       "leading batch axis.")
    sizes[name] = shape[0]
  size = next(iter(sizes.values()))
  if any(s != size for s in sizes.values()):
    raise ValueError(f"{where}: entries disagree on the batch size: {sizes}.")
  if size % num_shards:
    raise ValueError(
        f"{where}: batch size {size} is not divisible by the {num_shards} "
        f"devices of the data mesh; use a multiple of {num_shards} (or a "
        "mesh with fewer devices).")
  return size


def _local_rows(sharding: NamedSharding, size: int,
                shape: tuple[int, ...]) -> tuple[int, int] | None:
  """The contiguous rows ``[start, stop)`` this process's devices hold."""
  rows = set()
  for index in sharding.addressable_devices_indices_map(shape).values():
    rows.update(range(*index[0].indices(size)))
  if not rows:
    return None
  start, stop = min(rows), max(rows) + 1
  return (start, stop) if len(rows) == stop - start else None


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch on ``mesh``, split along its leading axis.

  With one process this is ``jax.device_put``. In a multi-process job every
  process passes the same global batch and feeds only the rows its own
  devices hold (``jax.make_array_from_process_local_data``); the result is
  one global array.

  Args:
    batch: dict of arrays ``[batch, ...]``; the batch size must be a
      multiple of the mesh's ``'data'`` axis.
    mesh: a mesh with a ``'data'`` axis.

  Returns:
    The same dict of ``jax.Array`` with ``NamedSharding(mesh, P('data'))``.

  Example:
    >>> import numpy as np
    >>> out = shard_batch({"x": np.zeros((4, 2))}, data_mesh(1))
    >>> out["x"].shape
    (4, 2)
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  if sharding.is_fully_addressable:
    return jax.device_put(dict(batch), sharding)
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    rows = _local_rows(sharding, value.shape[0], value.shape)
    local = value if rows is None else value[rows[0]:rows[1]]
    out[name] = jax.make_array_from_process_local_data(sharding, local,
                                                       value.shape)
  return out


def replicate(tree: Any, sharding: NamedSharding) -> Any:
  """Copies a tree of host or process-local arrays onto every device.

  ``jax.device_put`` with one process; in a multi-process job each process
  passes the same values and every leaf becomes one global replicated array
  (``jax.make_array_from_process_local_data``). Leaves that are already
  global arrays are moved with ``jax.device_put``.

  Args:
    tree: a pytree of arrays (numpy, jax, typed PRNG keys).
    sharding: a replicated sharding (``NamedSharding(mesh, P())``).

  Returns:
    The tree of replicated ``jax.Array`` (copies: never aliasing ``tree``).
  """
  # jax 0.10's device_put(may_alias=False) still lets the shard on the
  # source's device alias it: copy first, since the train step donates.
  tree = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x,
                      tree)
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, tree)


def process_local(tree: Any) -> Any:
  """Single-device copies of replicated global arrays (a no-op alone).

  A model whose arrays span other processes' devices cannot be called on
  this process's data; its fully replicated leaves are copied to this
  process's first device. Other leaves are returned as they are.
  """

  def local(x):
    if (isinstance(x, jax.Array) and not x.is_fully_addressable
        and x.is_fully_replicated):
      return x.addressable_data(0).copy()
    return x

  return jax.tree.map(local, tree)


def seed_mesh(num_seeds: int, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis ``('seed',)`` mesh for training seeds side by side.

  Uses the largest number of ``devices`` that divides ``num_seeds``, so the
  stacked per-seed states split evenly (1 device when none does).

  Args:
    num_seeds: number of seeds trained at once.
    devices: devices to use (default: ``jax.local_devices()``).

  Returns:
    A ``jax.sharding.Mesh`` with a single axis named ``'seed'``.

  Raises:
    ValueError: ``num_seeds < 1``.

  Example:
    >>> mesh = seed_mesh(3, devices=jax.local_devices()[:1])
    >>> mesh.axis_names, mesh.size
    (('seed',), 1)
  """
  if num_seeds < 1:
    raise ValueError(f"`num_seeds` must be >= 1, got {num_seeds}.")
  devices = list(jax.local_devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
  return jax.make_mesh((n,), (SEED_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:n])
