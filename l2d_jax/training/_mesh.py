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
    devices: devices to use (default: ``jax.local_devices()``).

  Returns:
    A ``jax.sharding.Mesh`` with a single axis named ``'data'``.

  Raises:
    ValueError: ``num_devices`` is not in ``[1, len(devices)]``.

  Example:
    >>> mesh = data_mesh(1)
    >>> mesh.axis_names
    ('data',)
  """
  devices = list(jax.local_devices() if devices is None else devices)
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


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch on ``mesh``, split along its leading axis.

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
  return jax.device_put(dict(batch), NamedSharding(mesh, P(DATA_AXIS)))


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
