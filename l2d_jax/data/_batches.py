"""Reproducible host batching: epoch orders and shuffled, augmented batches.

The content of every batch is a pure function of ``(seed, epoch, batch
index)``, so a training run resumed from a checkpoint replays exactly the
batches it would have seen (:func:`iterate_batches`).
"""

from __future__ import annotations

import numbers
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from l2d_jax.data._host_augment import CIFAR10_MEAN
from l2d_jax.data._host_augment import CIFAR10_STD
from l2d_jax.data._host_augment import check_images
from l2d_jax.data._host_augment import check_pad
from l2d_jax.data._host_augment import draw_crop_flip
from l2d_jax.data._host_augment import take_crop_flip
from l2d_jax.data._host_augment import normalize_images


def _seed_sequence(seed: int, *path: int) -> np.random.SeedSequence:
  return np.random.SeedSequence(seed, spawn_key=path)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
  """The example order of one epoch, a pure function of ``(seed, epoch)``.

  Args:
    num_examples: N.
    seed: non-negative int.
    epoch: non-negative int.

  Returns:
    ``int64 [N]`` permutation of ``range(N)``.

  Raises:
    ValueError: an argument that is not a non-negative int (Python or numpy).
  """
  num_examples = _check_nonneg_int(num_examples, "num_examples")
  seed = _check_nonneg_int(seed, "seed")
  epoch = _check_nonneg_int(epoch, "epoch")
  return np.random.default_rng(_seed_sequence(seed, 0, epoch)).permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Number of batches :func:`iterate_batches` yields per epoch.

  Raises:
    ValueError: a negative ``num_examples`` or a ``batch_size`` below 1 (both
      Python or numpy ints).
  """
  num_examples = _check_nonneg_int(num_examples, "num_examples")
  batch_size = _check_nonneg_int(batch_size, "batch_size")
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be a positive int, got {batch_size}.")
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def _check_nonneg_int(value: Any, name: str) -> int:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
    raise ValueError(f"`{name}` must be a non-negative int, got {value!r}.")
  return int(value)


_END = object()


class _Failure:

  def __init__(self, exc: BaseException):
    self.exc = exc


def _prefetched(make: Any, size: int) -> Iterator[Any]:
  """Runs the generator ``make()`` in a daemon thread, ``size`` items ahead."""
  q: queue.Queue[Any] = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item: Any) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def work() -> None:
    try:
      for item in make():
        if not put(item):
          return
      put(_END)
    except BaseException as e:  # pylint: disable=broad-except
      put(_Failure(e))

  thread = threading.Thread(target=work, name="l2d_jax-prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, _Failure):
        raise item.exc
      yield item
  finally:
    stop.set()
    thread.join(timeout=5.0)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    augment: bool = True,
    normalize: bool = True,
    drop_remainder: bool = True,
    extra: Mapping[str, np.ndarray] | None = None,
    pad: int = 4,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    start_batch: int = 0,
    prefetch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields one epoch of batches, reproducible from ``(seed, epoch)``.

  The example order is :func:`epoch_permutation` ``(N, seed=seed,
  epoch=epoch)`` (or ``range(N)`` without ``shuffle``); the crops and flips
  of batch ``i`` come from a generator seeded by ``(seed, epoch, i)``. So
  batch ``i`` of an epoch is the same whether or not earlier batches were
  consumed, and ``start_batch=i`` resumes mid-epoch without replaying work.
  Arguments are checked when the function is called, before iteration.

  Args:
    images: ``[N, H, W, C]`` (``uint8`` when ``normalize``).
    labels: ``[N]`` integer labels.
    batch_size: examples per batch (>= 1; at most N with
      ``drop_remainder``).
    seed: non-negative int, the run's data seed.
    epoch: non-negative int.
    shuffle: permute the examples each epoch.
    augment: random zero-padded crop (``pad``) and horizontal flip.
    normalize: return ``float32`` images normalised by ``mean``/``std``;
      otherwise the (augmented) images keep their dtype (e.g. ``uint8`` to
      normalise on the accelerator after a 4x smaller transfer).
    drop_remainder: drop the last incomplete batch (static shapes for jit).
    extra: per-example arrays ``{name: [N, ...]}`` batched alongside (expert
      predictions, annotations, ...); names must not be ``image``, ``label``
      or ``index``.
    pad: crop padding.
    mean: channel means for ``normalize``.
    std: channel standard deviations for ``normalize``.
    start_batch: first batch to yield (to resume mid-epoch).
    prefetch: if > 0, batches are prepared in a background thread this many
      batches ahead.

  Returns:
    An iterator of dicts with ``image`` ``[B, H, W, C]``, ``label`` ``int32
    [B]``, ``index`` ``int64 [B]`` (rows of the inputs) and every ``extra``
    key ``[B, ...]``.

  Raises:
    ValueError: bad ``batch_size``, ``seed``, ``epoch``, ``start_batch``,
      ``prefetch`` or ``pad``; mismatched leading dimensions; bad ``extra``.
    TypeError: ``normalize`` with non-``uint8`` images, or non-integer labels.

  Example:
    >>> x = np.zeros((10, 32, 32, 3), np.uint8); y = np.arange(10)
    >>> [b["label"].shape for b in iterate_batches(x, y, batch_size=4, seed=0, epoch=0)]
    [(4,), (4,)]
  """
  images = check_images(images)
  labels = np.asarray(labels)
  n = images.shape[0]
  if labels.shape != (n,):
    raise ValueError(f"`labels` must have shape [{n}] to match `images`, got {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"`labels` must have an integer dtype, got {labels.dtype}.")
  if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
    raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
  batch_size = int(batch_size)
  if drop_remainder and batch_size > n:
    raise ValueError(
        f"`batch_size` ({batch_size}) exceeds the number of examples ({n}); with "
        "drop_remainder=True no batch would be produced.")
  seed = _check_nonneg_int(seed, "seed")
  epoch = _check_nonneg_int(epoch, "epoch")
  start_batch = _check_nonneg_int(start_batch, "start_batch")
  prefetch = _check_nonneg_int(prefetch, "prefetch")
  pad = check_pad(pad)
  if normalize and images.dtype != np.uint8:
    raise TypeError(
        f"`normalize=True` needs uint8 images, got {images.dtype} (pass normalize=False).")
  extra = dict(extra or {})
  for k, v in extra.items():
    if k in ("image", "label", "index"):
      raise ValueError(f"`extra` key {k!r} clashes with a built-in batch key.")
    v = np.asarray(v)
    if v.ndim == 0 or v.shape[0] != n:
      raise ValueError(
          f"`extra[{k!r}]` must have leading dimension {n}, got shape {v.shape}.")
    extra[k] = v
  if normalize:  # Validates mean/std eagerly.
    normalize_images(images[:0], mean=mean, std=std)
  images = np.ascontiguousarray(images)
  labels = labels.astype(np.int32, copy=False)
  num_steps = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)

  def generate() -> Iterator[dict[str, np.ndarray]]:
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    for step in range(start_batch, num_steps):
      idx = order[step * batch_size:(step + 1) * batch_size]
      if augment:
        rng = np.random.default_rng(_seed_sequence(seed, 1, epoch, step))
        offsets, flip = draw_crop_flip(rng, idx.shape[0], pad)
        x = take_crop_flip(images, idx, offsets, flip, pad)
      else:
        x = images[idx]
      if normalize:
        x = normalize_images(x, mean=mean, std=std)
      batch = {"image": x, "label": labels[idx], "index": idx}
      for k, v in extra.items():
        batch[k] = v[idx]
      yield batch

  if prefetch:
    return _prefetched(generate, prefetch)
  return generate()
