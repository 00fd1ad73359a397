"""Host (numpy) image augmentation and normalisation for CIFAR-style batches.

The standard CIFAR augmentation (zero-padded random crop plus horizontal
flip, :func:`augment_crop_flip`), its deterministic half
(:func:`crop_and_flip`) and per-channel normalisation
(:func:`normalize_images`), vectorised over a batch of ``[B, H, W, C]``
images. The keyed JAX augmentations (FixMatch views) live in
:mod:`l2d_jax.data._augment`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from l2d_jax.data._mog import as_numpy_rng

# Per-channel mean and standard deviation of the CIFAR-10 training pixels
# (scaled to [0, 1]); the values used by Mozannar & Sontag (2020) and Verma &
# Nalisnick (2022) for their WideResNets.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def check_images(images: Any, name: str = "images") -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(
        f"`{name}` must have shape [batch, height, width, channels] (4 dims), got "
        f"shape {images.shape}.")
  return images


def check_pad(pad: Any) -> int:
  if not isinstance(pad, numbers.Integral) or isinstance(pad, bool) or pad < 0:
    raise ValueError(f"`pad` must be a non-negative int, got {pad!r}.")
  return int(pad)


@functools.lru_cache(maxsize=16)
def _crop_tables(height: int, width: int, channels: int, pad: int):
  """Flat source offsets and validity for every (dy, dx, flip) crop.

  Returns ``(where [2p+1, 2p+1, 2, H*W] int64, valid [2p+1, 2p+1, 2, H*W*C]
  uint8)``: output pixel ``k`` of a crop at offset ``(dy, dx)`` in the padded
  image reads source pixel ``where[..., k]`` of the unpadded image, or zero
  where ``valid`` is 0 (the padding).
  """
  side = 2 * pad + 1
  dy, dx, flip = np.meshgrid(np.arange(side), np.arange(side), np.arange(2), indexing="ij")
  rows = dy[..., None] - pad + np.arange(height)
  cols = dx[..., None] - pad + np.arange(width)
  cols = np.where(flip[..., None] == 1, cols[..., ::-1], cols)
  valid = (((rows >= 0) & (rows < height))[..., :, None]
           & ((cols >= 0) & (cols < width))[..., None, :])
  where = (np.clip(rows, 0, height - 1) * width)[..., :, None] + np.clip(cols, 0, width - 1)[
      ..., None, :]
  where = where.reshape(side, side, 2, height * width).astype(np.int64)
  valid = np.repeat(valid.reshape(side, side, 2, height * width, 1), channels, axis=-1)
  valid = valid.reshape(side, side, 2, height * width * channels).astype(np.uint8)
  where.setflags(write=False)
  valid.setflags(write=False)
  return where, valid


def take_crop_flip(
    source: np.ndarray, index: np.ndarray, offsets: np.ndarray, flip: np.ndarray, pad: int
) -> np.ndarray:
  """``crop_and_flip(source[index], ...)`` in one gather (no padded copy)."""
  n, h, w, c = source.shape
  b = index.shape[0]
  if pad == 0:
    out = source[index]
    return np.where(flip[:, None, None, None], out[:, :, ::-1], out) if flip.any() else out
  where, valid = _crop_tables(h, w, c, pad)
  dy, dx, fl = offsets[:, 0], offsets[:, 1], flip.astype(np.int64)
  lin = index.astype(np.int64)[:, None] * (h * w) + where[dy, dx, fl]
  out = np.take(source.reshape(n * h * w, c), lin.reshape(-1), axis=0).reshape(b, h * w * c)
  out *= valid[dy, dx, fl].astype(out.dtype, copy=False)
  return out.reshape(b, h, w, c)


def _check_offsets_flip(offsets: Any, flip: Any, batch: int, pad: int):
  offsets = np.asarray(offsets)
  flip = np.asarray(flip)
  if offsets.shape != (batch, 2) or not np.issubdtype(offsets.dtype, np.integer):
    raise ValueError(
        f"`offsets` must be an int array of shape [{batch}, 2], got {offsets.dtype} "
        f"{offsets.shape}.")
  if offsets.size and (offsets.min() < 0 or offsets.max() > 2 * pad):
    raise ValueError(f"`offsets` must lie in [0, {2 * pad}] for pad={pad}.")
  if flip.shape != (batch,):
    raise ValueError(f"`flip` must have shape [{batch}], got {flip.shape}.")
  return offsets.astype(np.int64), flip.astype(bool)


def crop_and_flip(
    images: np.ndarray, offsets: np.ndarray, flip: np.ndarray, *, pad: int = 4
) -> np.ndarray:
  """Crops zero-padded images at given offsets, then mirrors some of them.

  Image ``i`` is zero-padded by ``pad`` pixels on every side, cropped back to
  its size with its top-left corner at ``offsets[i] = (dy, dx)`` of the padded
  image (``(pad, pad)`` is the identity), then flipped left-right when
  ``flip[i]``. The deterministic half of :func:`augment_crop_flip`.

  Args:
    images: ``[batch, H, W, C]`` of any dtype.
    offsets: ``[batch, 2]`` ints in ``[0, 2 * pad]``.
    flip: ``[batch]`` bools.
    pad: padding width (>= 0).

  Returns:
    ``[batch, H, W, C]``, same dtype as ``images``.

  Raises:
    ValueError: bad shapes, offsets out of range or negative ``pad``.

  Example:
    >>> x = np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1)
    >>> crop_and_flip(x, np.array([[1, 2]]), np.array([True]), pad=1)[..., 0]
    array([[[0, 1],
            [0, 3]]], dtype=uint8)
  """
  images = check_images(images)
  b = images.shape[0]
  pad = check_pad(pad)
  offsets, flip = _check_offsets_flip(offsets, flip, b, pad)
  images = np.ascontiguousarray(images)
  return take_crop_flip(images, np.arange(b), offsets, flip, pad)


def draw_crop_flip(rng: np.random.Generator, batch: int, pad: int):
  offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
  flip = rng.random(batch) < 0.5
  return offsets, flip


def augment_crop_flip(rng: Any, images: np.ndarray, *, pad: int = 4) -> np.ndarray:
  """Random crop with zero padding plus random horizontal flip (vectorised).

  The standard CIFAR augmentation: pad by ``pad`` zeros, crop back to the
  original size at a uniformly random position, flip left-right with
  probability 1/2, independently per image. Draws, in this order,
  ``offsets = rng.integers(0, 2 * pad + 1, size=(B, 2))`` and
  ``flip = rng.random(B) < 0.5``, then applies :func:`crop_and_flip`.

  Args:
    rng: a ``np.random.Generator`` (advanced in place) or anything
      :func:`~l2d_jax.data.as_numpy_rng` accepts (seed, JAX key).
    images: ``[batch, H, W, C]`` (``uint8`` for CIFAR-10).
    pad: padding width (>= 0).

  Returns:
    ``[batch, H, W, C]`` augmented copy, same dtype.

  Example:
    >>> x = np.zeros((8, 32, 32, 3), np.uint8)
    >>> augment_crop_flip(np.random.default_rng(0), x).shape
    (8, 32, 32, 3)
  """
  images = check_images(images)
  b = images.shape[0]
  pad = check_pad(pad)
  offsets, flip = draw_crop_flip(as_numpy_rng(rng), b, pad)
  return take_crop_flip(np.ascontiguousarray(images), np.arange(b), offsets, flip, pad)


@functools.lru_cache(maxsize=16)
def _normalize_tables(mean: tuple[float, ...], std: tuple[float, ...], repeats: int):
  scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float64))
  shift = np.asarray(mean, dtype=np.float64) / np.asarray(std, dtype=np.float64)
  # Tiled to the whole image so numpy's inner loops are long (a trailing axis
  # of 3 broadcast per pixel is ~5x slower).
  scale = np.tile(scale.astype(np.float32), repeats)
  shift = np.tile(shift.astype(np.float32), repeats)
  scale.setflags(write=False)
  shift.setflags(write=False)
  return scale, shift


def normalize_images(
    images: np.ndarray,
    *,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> np.ndarray:
  """Maps ``uint8`` pixels to ``float32`` ``(x / 255 - mean) / std`` per channel.

  Args:
    images: ``uint8 [..., C]`` (e.g. ``[batch, 32, 32, 3]``).
    mean: ``[C]`` channel means of ``x / 255``; default CIFAR-10.
    std: ``[C]`` channel standard deviations of ``x / 255``; default CIFAR-10.

  Returns:
    ``float32`` array of the same shape.

  Raises:
    TypeError: ``images`` is not ``uint8``.
    ValueError: ``mean``/``std`` do not match the channel count, or ``std``
      is not positive.

  Example:
    >>> normalize_images(np.full((1, 1, 1, 3), 255, np.uint8)).round(3)[0, 0, 0]
    array([2.059, 2.126, 2.116], dtype=float32)
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"`images` must be uint8, got {images.dtype}.")
  mean_t = tuple(float(m) for m in mean)
  std_t = tuple(float(s) for s in std)
  c = images.shape[-1] if images.ndim else 0
  if len(mean_t) != c or len(std_t) != c:
    raise ValueError(
        f"`mean` and `std` need one value per channel ({c}), got {len(mean_t)} and "
        f"{len(std_t)}.")
  if min(std_t) <= 0:
    raise ValueError(f"`std` must be positive, got {std_t}.")
  lead = images.shape[0] if images.ndim >= 2 else 1
  flat = images.reshape(lead, math.prod(images.shape[1:]) if images.ndim >= 2 else c)
  scale, shift = _normalize_tables(mean_t, std_t, flat.shape[1] // c)
  out = flat.astype(np.float32)
  out *= scale
  out -= shift
  return out.reshape(images.shape)
