"""Epoch orders of several seeds: drawn per window of epochs, cached, shared.

``SeedTrainer`` (``_seeds.py``) reads its shuffled batches from here.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax.training._batching import epoch_indices
from l2d_jax.training._programs import cpu_compiler_options


def _window_orders(keys: jax.Array, first_epoch: jax.Array, *,
                   num_examples: int, batch_size: int, shuffle: bool,
                   num_epochs: int) -> jax.Array:
  """``[keys, num_epochs, steps, batch]`` orders of epochs ``first_epoch..``.

  Epoch ``e`` of key ``k`` is ``epoch_indices(fold_in(k, e), ...)``, exactly
  the order :class:`DeviceEpochs` draws. One jitted program for the
  process: every trainer shares its compilations.
  """
  return _orders_program()(keys, first_epoch, num_examples=num_examples,
                           batch_size=batch_size, shuffle=shuffle,
                           num_epochs=num_epochs)


def _orders(keys, first_epoch, *, num_examples, batch_size, shuffle,
            num_epochs):
  epochs = first_epoch + jnp.arange(num_epochs, dtype=jnp.int32)
  one = lambda k, e: epoch_indices(jax.random.fold_in(k, e), num_examples,
                                   batch_size, shuffle=shuffle)
  return jax.vmap(lambda k: jax.vmap(lambda e: one(k, e))(epochs))(keys)


# The orders are integers (random bits, a sort, a gather), so XLA's classic
# loop emitters and LLVM -O1 give the same orders; on CPU they compile in
# about a third of the time (MoG sweep windows: 0.4 vs 1.4 s) and run as
# fast. Probed once ({} where this jaxlib rejects them).
_ORDER_OPTIONS = {"xla_cpu_use_fusion_emitters": False,
                  "xla_backend_optimization_level": 1}
_ORDER_PROGRAM: list[Callable[..., jax.Array]] = []
_ORDER_PROGRAM_LOCK = threading.Lock()


def _orders_program() -> Callable[..., jax.Array]:
  with _ORDER_PROGRAM_LOCK:
    if not _ORDER_PROGRAM:
      _ORDER_PROGRAM.append(jax.jit(
          _orders, static_argnames=("num_examples", "batch_size", "shuffle",
                                    "num_epochs"),
          compiler_options=cpu_compiler_options(_ORDER_OPTIONS) or None))
    return _ORDER_PROGRAM[0]


@jax.jit
def _epoch_order(orders: jax.Array, which: jax.Array, offset: jax.Array
                 ) -> jax.Array:
  """``[seeds, steps, batch]``: seed s's order ``orders[which[s], offset]``."""
  return orders[which, offset]


class _OrderCache:
  """Recently drawn epoch orders, shared by the trainers of a process.

  The order of an epoch is a pure function of (key, epoch, sizes), so runs
  that share a data-order key (e.g. the settings and surrogates of one seed
  trained one group after another) draw it once. Least recently used
  windows are dropped beyond ``max_bytes``. Trainers on several threads
  that ask for the same window at once draw (and compile) it once: the
  others wait for it.
  """

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self._items: collections.OrderedDict[Any, jax.Array] = (
        collections.OrderedDict())
    self._bytes = 0
    self._lock = threading.Lock()
    self._drawing: dict[Any, threading.Lock] = {}

  def _lookup(self, cache_key: Any) -> jax.Array | None:
    with self._lock:
      if cache_key in self._items:
        self._items.move_to_end(cache_key)
        return self._items[cache_key]
    return None

  def get(self, keys: jax.Array, first_epoch: int, *, num_examples: int,
          batch_size: int, shuffle: bool, num_epochs: int) -> jax.Array:
    """Orders ``[len(keys), num_epochs, steps, batch]`` (see _window_orders)."""
    data = np.asarray(jax.random.key_data(keys))
    cache_key = (data.tobytes(), data.shape, str(jax.random.key_impl(keys)),
                 first_epoch, num_examples, batch_size, shuffle, num_epochs)
    orders = self._lookup(cache_key)
    if orders is not None:
      return orders
    with self._lock:
      drawing = self._drawing.setdefault(cache_key, threading.Lock())
    with drawing:  # one thread draws a window; the others wait for it
      orders = self._lookup(cache_key)
      if orders is not None:
        return orders
      orders = _window_orders(keys, np.int32(first_epoch),
                              num_examples=num_examples,
                              batch_size=batch_size, shuffle=shuffle,
                              num_epochs=num_epochs)
      with self._lock:
        self._drawing.pop(cache_key, None)
        self._items[cache_key] = orders
        self._bytes += orders.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
          _, old = self._items.popitem(last=False)
          self._bytes -= old.nbytes
    return orders

  def clear(self) -> None:
    with self._lock:
      self._items.clear()
      self._bytes = 0


# 5 seeds x 200 epochs of 20,000 examples (the MoG calibration sweep) take
# 78 MB; the sweep's 10 groups then draw each order once.
_ORDERS = _OrderCache(max_bytes=128 * 2**20)
