"""Keyed image augmentation in JAX: FixMatch's weak and strong views.

Both functions take ``[B, H, W, C]`` batches of ``uint8`` pixels or floating
pixels in ``value_range`` (default ``[0, 1]``), return the same shape and
dtype, and draw everything from an explicit ``jax.random`` key: the same key
gives the same batch. They jit (options static) and vmap over keys. Pixel
operations run in float32 on the ``[0, 255]`` scale and are rounded back for
``uint8``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation

RANDAUGMENT_OPS = (
    "identity",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "posterize",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
)
PAD_MODES = ("constant", "reflect", "edge")
_GRAY = 128.0  # fill of cutout and of pixels moved in from outside


def _check_images(images: Any) -> None:
  shape = tuple(jnp.shape(images))
  if len(shape) != 4 or min(shape[1:], default=0) < 1:
    raise ValueError(f"`images` must have shape [B, H, W, C] (NHWC, H, W, C "
                     f">= 1), got {shape}.")
  dtype = jnp.result_type(images)
  if dtype != jnp.uint8 and not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`images` must be uint8 or floating, got {dtype}.")


def _check_range(value_range: Any) -> tuple[float, float]:
  lo, hi = (float(v) for v in value_range)
  if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
    raise ValueError(f"`value_range` must be finite (low, high) with high > "
                     f"low, got {tuple(value_range)}.")
  return lo, hi


def _to_pixels(images, value_range):
  x = jnp.asarray(images).astype(jnp.float32)
  if jnp.result_type(images) == jnp.uint8:
    return x
  lo, hi = value_range
  return (x - lo) * (255.0 / (hi - lo))


def _from_pixels(pixels, dtype, value_range):
  pixels = jnp.clip(pixels, 0.0, 255.0)
  if dtype == jnp.uint8:
    return jnp.round(pixels).astype(jnp.uint8)
  lo, hi = value_range
  return jnp.clip(pixels * ((hi - lo) / 255.0) + lo, lo, hi).astype(dtype)


def weak_augment(
    key: jax.Array,
    images: jax.typing.ArrayLike,
    *,
    pad: int = 4,
    flip: bool = True,
    mode: str = "constant",
) -> jax.Array:
  """Random crop with padding, then a random horizontal flip (weak view).

  Each image is padded by ``pad`` pixels on every side (zeros for
  ``mode='constant'``, or ``'reflect'`` / ``'edge'``), cropped back to its
  size at a uniformly random offset in ``[0, 2 * pad]`` per axis, and
  mirrored left-right with probability 1/2 when ``flip``.

  Args:
    key: a ``jax.random`` key.
    images: ``[B, H, W, C]`` uint8 or floating.
    pad: padding width (``0 <= pad``; 0 disables the crop).
    flip: whether to flip at random.
    mode: padding mode, one of ``'constant'``, ``'reflect'``, ``'edge'``.

  Returns:
    ``[B, H, W, C]`` of the dtype of ``images``.

  Raises:
    TypeError: a bad key or dtype.
    ValueError: bad shape, negative ``pad`` (or ``pad >= H, W`` with
      ``'reflect'``), unknown ``mode``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import data
    >>> x = jnp.zeros((8, 32, 32, 3), jnp.uint8)
    >>> data.weak_augment(jax.random.key(0), x).shape
    (8, 32, 32, 3)
  """
  _validation.check_key(key)
  _check_images(images)
  pad = _validation.check_static_int(pad, "pad", minimum=0)
  if mode not in PAD_MODES:
    raise ValueError(f"`mode` must be one of {PAD_MODES}, got {mode!r}.")
  images = jnp.asarray(images)
  b, h, w, c = images.shape
  if mode == "reflect" and pad >= min(h, w):
    raise ValueError(f"`pad`={pad} must be smaller than the image size "
                     f"{(h, w)} with mode='reflect'.")
  key_crop, key_flip = jax.random.split(key)
  offsets = jax.random.randint(key_crop, (b, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(key_flip, 0.5, (b,)) & flip
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                   mode=mode)

  def one(img, offset, do_flip):
    crop = jax.lax.dynamic_slice(img, (offset[0], offset[1], 0), (h, w, c))
    return jnp.where(do_flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


# --- strong view: RandAugment-style operations on [H, W, C] float pixels in
# [0, 255], each with a magnitude m in [0, 1] (signed ops use 2m - 1).


def _gray(img):
  if img.shape[-1] == 3:
    return (img @ jnp.array([0.299, 0.587, 0.114], img.dtype))[..., None]
  return jnp.mean(img, axis=-1, keepdims=True)


def _blend(base, img, factor):
  return base + factor * (img - base)


def _factor(m):
  return 0.1 + 1.8 * m  # PIL enhance factors in [0.1, 1.9]; 1 = identity


def _identity(img, m):
  del m
  return img


def _autocontrast(img, m):
  del m
  lo = jnp.min(img, axis=(0, 1), keepdims=True)
  hi = jnp.max(img, axis=(0, 1), keepdims=True)
  scale = jnp.where(hi > lo, 255.0 / jnp.where(hi > lo, hi - lo, 1.0), 1.0)
  return jnp.where(hi > lo, (img - lo) * scale, img)


def _brightness(img, m):
  return img * _factor(m)


def _color(img, m):
  return _blend(_gray(img), img, _factor(m))


def _contrast(img, m):
  return _blend(jnp.mean(_gray(img)), img, _factor(m))


def _equalize(img, m):
  """Histogram equalisation per channel (256 bins)."""
  del m
  levels = jnp.clip(jnp.floor(img), 0, 255).astype(jnp.int32)
  n = img.shape[0] * img.shape[1]

  def channel(v):
    hist = jnp.bincount(v.reshape(-1), length=256)
    cdf = jnp.cumsum(hist)
    cdf_min = jnp.min(jnp.where(hist > 0, cdf, n))
    denom = n - cdf_min
    lut = jnp.round((cdf - cdf_min) * 255.0 / jnp.maximum(denom, 1))
    return jnp.where(denom > 0, lut[v], v.astype(jnp.float32))

  return jax.vmap(channel, in_axes=-1, out_axes=-1)(levels)


def _posterize(img, m):
  bits = 4 + jnp.round(4 * m)  # keep 4..8 bits
  step = 2.0 ** (8 - bits)
  return jnp.floor(jnp.clip(img, 0, 255) / step) * step


def _solarize(img, m):
  threshold = 256.0 * (1.0 - m)  # m = 0: nothing inverted
  return jnp.where(img >= threshold, 255.0 - img, img)


def _affine(img, matrix, shift):
  """Nearest-neighbour warp: pixel p samples ``M (p - c) + c + shift``."""
  h, w = img.shape[:2]
  center = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"),
                   -1).astype(jnp.float32)
  src = (grid - center) @ matrix.T + center + shift
  src = jnp.round(src).astype(jnp.int32)
  inside = ((src[..., 0] >= 0) & (src[..., 0] < h)
            & (src[..., 1] >= 0) & (src[..., 1] < w))
  ys = jnp.clip(src[..., 0], 0, h - 1)
  xs = jnp.clip(src[..., 1], 0, w - 1)
  return jnp.where(inside[..., None], img[ys, xs], _GRAY)


def _shear_x(img, m):
  s = 0.3 * (2 * m - 1)
  return _affine(img, jnp.array([[1.0, 0.0], [s, 1.0]]), jnp.zeros(2))


def _shear_y(img, m):
  s = 0.3 * (2 * m - 1)
  return _affine(img, jnp.array([[1.0, s], [0.0, 1.0]]), jnp.zeros(2))


def _translate_x(img, m):
  shift = 0.3 * (2 * m - 1) * img.shape[1]
  return _affine(img, jnp.eye(2), jnp.array([0.0, 1.0]) * jnp.round(shift))


def _translate_y(img, m):
  shift = 0.3 * (2 * m - 1) * img.shape[0]
  return _affine(img, jnp.eye(2), jnp.array([1.0, 0.0]) * jnp.round(shift))


def _rotate(img, m):
  angle = jnp.deg2rad(30.0 * (2 * m - 1))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  return _affine(img, jnp.array([[cos, -sin], [sin, cos]]), jnp.zeros(2))


_OPS = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "solarize": _solarize,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
    "rotate": _rotate,
}


def _cutout(img, key, fraction):
  """Grey square of side ``u * fraction * min(H, W)``, u ~ U(0, 1], anywhere."""
  h, w = img.shape[:2]
  k_size, k_y, k_x = jax.random.split(key, 3)
  side = jnp.ceil(jax.random.uniform(k_size) * fraction * min(h, w))
  cy = jax.random.uniform(k_y) * h
  cx = jax.random.uniform(k_x) * w
  ys = jnp.arange(h)[:, None] + 0.5
  xs = jnp.arange(w)[None, :] + 0.5
  inside = (jnp.abs(ys - cy) <= side / 2) & (jnp.abs(xs - cx) <= side / 2)
  return jnp.where(inside[..., None], _GRAY, img)


def strong_augment(
    key: jax.Array,
    images: jax.typing.ArrayLike,
    *,
    num_ops: int = 2,
    ops: Sequence[str] = RANDAUGMENT_OPS,
    cutout: float = 0.5,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """RandAugment-style strong view (FixMatch): random ops, then cutout.

  For each image, ``num_ops`` operations are drawn uniformly (with
  replacement) from ``ops``, each with its own magnitude ``m ~ U(0, 1)``
  (as FixMatch's RandAugment, which samples magnitudes): ``autocontrast``,
  ``brightness`` / ``color`` / ``contrast`` (PIL-style enhance factors
  ``0.1 + 1.8 m``), ``equalize`` (per-channel histogram equalisation),
  ``posterize`` (keep ``4..8`` bits), ``solarize`` (invert pixels above
  ``256 (1 - m)``), ``shear_x/y`` (up to ±0.3), ``translate_x/y`` (up to
  ±30% of the size), ``rotate`` (up to ±30°) and ``identity``; geometric ops
  use nearest-neighbour sampling and fill with grey (128). Then a grey
  cutout square of side ``u * cutout * min(H, W)``, ``u ~ U(0, 1]``, is
  pasted at a uniformly random centre (``cutout=0`` disables it).

  Args:
    key: a ``jax.random`` key.
    images: ``[B, H, W, C]`` uint8 or floating (1 or 3 channels are usual;
      ``color`` and ``contrast`` use luminance when ``C = 3``).
    num_ops: operations per image (``>= 0``).
    ops: names of the operations to draw from, a subset of
      :data:`RANDAUGMENT_OPS`.
    cutout: maximum cutout side as a fraction of the image, in ``[0, 1]``.
    value_range: ``(low, high)`` pixel range of floating images (ignored
      for uint8, whose range is ``[0, 255]``); outputs are clipped to it.

  Returns:
    ``[B, H, W, C]`` of the dtype of ``images``.

  Raises:
    TypeError: a bad key or dtype.
    ValueError: bad shape, an unknown op, empty ``ops``, negative
      ``num_ops``, ``cutout`` outside ``[0, 1]``, a bad ``value_range``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import data
    >>> x = jnp.zeros((4, 32, 32, 3), jnp.float32)
    >>> y = data.strong_augment(jax.random.key(0), x)
    >>> y.shape, y.dtype
    ((4, 32, 32, 3), dtype('float32'))

  References:
    Cubuk, Zoph, Shlens & Le, RandAugment: Practical Automated Data
    Augmentation with a Reduced Search Space, CVPR Workshops 2020.

    Sohn et al., FixMatch: Simplifying Semi-Supervised Learning with
    Consistency and Confidence, NeurIPS 2020.
  """
  _validation.check_key(key)
  _check_images(images)
  num_ops = _validation.check_static_int(num_ops, "num_ops", minimum=0)
  ops = tuple(ops) if not isinstance(ops, str) else (ops,)
  if not ops:
    raise ValueError("`ops` must name at least one operation.")
  unknown = [o for o in ops if o not in _OPS]
  if unknown:
    raise ValueError(f"`ops` has unknown operations {unknown}; choose from "
                     f"{RANDAUGMENT_OPS}.")
  if not 0.0 <= float(cutout) <= 1.0:
    raise ValueError(f"`cutout` must lie in [0, 1], got {cutout}.")
  value_range = _check_range(value_range)
  return _strong(key, jnp.asarray(images), num_ops=num_ops, ops=ops,
                 cutout=float(cutout), value_range=value_range)


@functools.partial(jax.jit,
                   static_argnames=("num_ops", "ops", "cutout", "value_range"))
def _strong(key, images, *, num_ops, ops, cutout, value_range):
  dtype = images.dtype
  pixels = _to_pixels(images, value_range)
  branches = [_OPS[o] for o in ops]
  keys = jax.random.split(key, pixels.shape[0])

  def one(img, k):
    k_ops, k_mag, k_cut = jax.random.split(k, 3)
    choice = jax.random.randint(k_ops, (num_ops,), 0, len(branches))
    magnitude = jax.random.uniform(k_mag, (num_ops,))
    for i in range(num_ops):
      img = jax.lax.switch(choice[i], branches, img, magnitude[i])
      img = jnp.clip(img, 0.0, 255.0)
    if cutout > 0:
      img = _cutout(img, k_cut, cutout)
    return img

  return _from_pixels(jax.vmap(one)(pixels, keys), dtype, value_range)
