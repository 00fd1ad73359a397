"""Deterministic epoch batching: data order is a function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


class EpochBatches:
  """Mini-batches of one epoch, in an order fixed by ``(seed, epoch)``.

  The permutation is drawn from ``np.random.default_rng((seed, epoch))``, so
  replaying an epoch after a restart yields exactly the same batches; this is
  what makes resumed training reproduce an uninterrupted run. Iterating
  twice gives the same batches. ``len()`` is the number of batches.

  Args:
    arrays: dict of arrays sharing their leading axis (``images``,
      ``labels``, ``expert_predictions``, ...).
    batch_size: examples per batch.
    seed: data-order seed.
    epoch: epoch index (0-based).
    shuffle: permute the examples (``False``: original order).
    drop_remainder: drop the last incomplete batch, so every batch has the
      same shape and the train step compiles once.

  Raises:
    ValueError: empty or inconsistent ``arrays`` or a bad ``batch_size``.

  Example:
    >>> import numpy as np
    >>> data = {"x": np.arange(10.0), "y": np.arange(10)}
    >>> batches = EpochBatches(data, 4, seed=0, epoch=3)
    >>> len(batches), next(iter(batches))["x"].shape
    (2, (4,))
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *,
               seed: int, epoch: int, shuffle: bool = True,
               drop_remainder: bool = True):
    if not arrays:
      raise ValueError("`arrays` must be a non-empty dict of arrays.")
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None
             for k, v in arrays.items()}
    n = next(iter(sizes.values()))
    if n is None or any(s != n for s in sizes.values()):
      raise ValueError(
          f"`arrays` must share a leading axis, got sizes {sizes}.")
    if batch_size < 1:
      raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    self._arrays = arrays
    self._batch_size = batch_size
    self._num_examples = n
    self._drop_remainder = drop_remainder
    if shuffle:
      self._order = np.random.default_rng((seed, epoch)).permutation(n)
    else:
      self._order = np.arange(n)

  def __len__(self) -> int:
    full, rest = divmod(self._num_examples, self._batch_size)
    return full + (1 if rest and not self._drop_remainder else 0)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    for i in range(len(self)):
      idx = self._order[i * self._batch_size:(i + 1) * self._batch_size]
      yield {k: np.asarray(v)[idx] for k, v in self._arrays.items()}
