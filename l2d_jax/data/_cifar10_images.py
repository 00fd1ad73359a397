"""CIFAR-10 images: JPEG-zip and TFDS loaders, augmentation and batching.

Everything here is numpy on the host: a loader returns ``uint8`` arrays
``[N, 32, 32, 3]`` and ``int32`` labels ``[N]``; :func:`iterate_batches`
turns them into shuffled, augmented, normalised batches whose content is a
pure function of ``(seed, epoch, batch index)``, so a training run resumed from
a checkpoint replays exactly the batches it would have seen.

The offline copy (``<data_dir>/cifar10_images/``) holds lossy JPEGs, so the
pixels differ slightly from the original CIFAR-10 binaries; the test split is
in canonical CIFAR-10 test order, the train split in the order of
``train_index.csv`` (see the data manifest).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import numbers
import os
import pathlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from l2d_jax import _atomic
from l2d_jax.data import _common
from l2d_jax.data._mog import as_numpy_rng

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and standard deviation of the CIFAR-10 training pixels
# (scaled to [0, 1]); the values used by Mozannar & Sontag (2020) and Verma &
# Nalisnick (2022) for their WideResNets.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_SPLITS = ("train", "test")
_CACHE_VERSION = "1"
# Largest inflated size of one JPEG member: a 32x32 image takes about 1 kB
# (1.2 kB at most in the real zips); anything above 1 MiB is not one.
_MAX_IMAGE_BYTES = 1 << 20


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _image_dir(data_dir: str | os.PathLike[str]) -> pathlib.Path:
  """``<data_dir>/cifar10_images`` (or ``data_dir`` itself if it holds the zips)."""
  root = pathlib.Path(data_dir)
  sub = root / "cifar10_images"
  if not sub.is_dir() and any(root.glob("cifar10_*_jpg.zip")):
    return root
  return sub


def _check_split(split: str) -> None:
  if split not in _SPLITS:
    raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}.")


def _read_index(
    csv_text: str, source: str, split: str
) -> tuple[list[str], np.ndarray]:
  """Parses ``<split>_index.csv`` into member paths and labels in index order."""
  reader = csv.DictReader(io.StringIO(csv_text, newline=""))
  idx_col = f"{split}_idx"
  needed = {idx_col, "label", "path"}
  try:
    fieldnames = reader.fieldnames
    if fieldnames is None or not needed <= set(fieldnames):
      raise _common.DataFileError(
          source, f"must have columns {sorted(needed)} (and optionally "
          f"`class`), got {fieldnames}.")
    rows = list(reader)
  except csv.Error as e:
    raise _common.DataFileError(source, f"malformed CSV ({e}).",
                                reader.reader.line_num) from None
  if not rows:
    raise _common.DataFileError(source, "lists no images.")
  try:
    order = np.array([int(r[idx_col]) for r in rows], dtype=np.int64)
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
  except (ValueError, TypeError, OverflowError) as e:
    raise _common.DataFileError(
        source, f"`{idx_col}` and `label` must be integers in the int64 "
        f"range ({e}).") from None
  n = len(rows)
  if not np.array_equal(np.sort(order), np.arange(n)):
    raise _common.DataFileError(
        source, f"`{idx_col}` must be a permutation of 0..{n - 1}.")
  if labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
    raise _common.DataFileError(
        source, f"labels must lie in [0, 10), got [{labels.min()}, "
        f"{labels.max()}].")
  for r, y in zip(rows, labels):
    name = r.get("class")
    if name is not None and name != CIFAR10_CLASSES[y]:
      raise _common.DataFileError(
          source, f"row {r[idx_col]} has label {y} ({CIFAR10_CLASSES[y]}) but "
          f"class {name!r}.")
  perm = np.argsort(order, kind="stable")
  paths = [rows[i]["path"] for i in perm]
  return paths, labels[perm].astype(np.int32)


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
  """(height, width, components) from a baseline/progressive JPEG header."""
  if data[:2] != b"\xff\xd8":
    return None
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      return None
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    length = int.from_bytes(data[i + 2:i + 4], "big")
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      if i + 10 > n:
        return None
      h = int.from_bytes(data[i + 5:i + 7], "big")
      w = int.from_bytes(data[i + 7:i + 9], "big")
      return h, w, data[i + 9]
    i += 2 + length
  return None


def _decode_jpeg(data: bytes, member: str, shape: tuple[int, int]) -> np.ndarray:
  """Decodes one JPEG to ``uint8 [H, W, 3]``; ``ValueError`` naming the member."""
  h, w = shape
  try:
    if _jpeg_size(data) == (h, w, 3):
      # Fast path: skips Pillow's Python-level header parsing (~30 % faster).
      return np.asarray(Image.frombytes("RGB", (w, h), data, "jpeg", "RGB", ""))
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert("RGB")
      if im.size != (w, h):
        raise ValueError(f"expected {w}x{h} pixels, got {im.size[0]}x{im.size[1]}")
      return np.asarray(im)
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise ValueError(f"cannot decode JPEG member {member!r}: {e}") from e


def _decode_zip(zip_path: pathlib.Path, paths: Sequence[str]) -> np.ndarray:
  images = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
  with _common.open_zip(zip_path) as zf:
    members = {info.filename: info for info in zf.infolist()}
    for i, p in enumerate(paths):
      info = members.get(p)
      if info is None:
        raise _common.DataFileError(zip_path, f"has no member {p!r} (listed in "
                                    "the index).")
      data = _common.read_zip_member(zip_path, zf, info,
                                     max_bytes=_MAX_IMAGE_BYTES)
      try:
        images[i] = _decode_jpeg(data, p, (32, 32))
      except ValueError as e:
        raise _common.DataFileError(zip_path, str(e)) from e
  return images


def _fingerprint(*files: pathlib.Path) -> str:
  parts = [f"v{_CACHE_VERSION}"]
  for f in files:
    st = f.stat()
    parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
  return "|".join(parts)


def _load_cache(path: pathlib.Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
  try:
    stamp = _common.load_npz(path, "image cache", names=["fingerprint"])
    if str(stamp["fingerprint"]) != fingerprint:
      return None
    z = _common.load_npz(path, "image cache", names=["images", "labels"])
    return z["images"], z["labels"]
  except (OSError, KeyError, ValueError):
    return None  # Missing, stale or truncated cache: rebuild it.


def _save_cache_atomic(
    path: pathlib.Path, images: np.ndarray, labels: np.ndarray, fingerprint: str
) -> None:
  """Writes the ``.npz`` to a temporary file in the same folder, then renames."""
  _atomic.atomic_write(path, lambda f: np.savez(
      f, images=images, labels=labels, fingerprint=np.array(fingerprint)))


def load_cifar10_images(
    data_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads CIFAR-10 from the JPEG zips of ``<data_dir>/cifar10_images/``.

  Reads ``cifar10_<split>_jpg.zip`` (members ``<split>/<class>/NNNN.jpg``)
  and ``<split>_index.csv`` (columns ``<split>_idx,label,class,path``; next to
  the zip, or inside it) and decodes every JPEG with Pillow, in index order.
  Decoding takes about 1 s per 10,000 images on one core. With ``cache_dir``
  the arrays are stored in ``<cache_dir>/cifar10_<split>_jpg.npz`` (no pickle,
  written atomically) and reused while the zip and index are unchanged (same
  size and modification time).

  Args:
    data_dir: the shared data root holding ``cifar10_images/`` (or that
      folder itself).
    split: ``"test"`` (10,000 images, CIFAR-10 test order) or ``"train"``
      (50,000 images).
    cache_dir: optional folder for the decoded ``.npz`` cache.

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` RGB and ``int32 [N]`` in
    ``[0, 10)`` (class names in :data:`CIFAR10_CLASSES`).

  Raises:
    FileNotFoundError: the zip or the index is missing (the message names the
      path looked for).
    DataFileError: a corrupt, encrypted or oversized zip member or JPEG
      (naming the zip and the member), a member listed in the index but
      absent from the zip, or a malformed index or one that is not UTF-8
      (naming it). A ``ValueError`` subclass.

  Example:
    >>> images, labels = load_cifar10_images("../shared/data")  # doctest: +SKIP
    >>> images.shape, labels[:3].tolist()  # doctest: +SKIP
    ((10000, 32, 32, 3), [3, 8, 8])
  """
  _check_split(split)
  folder = _image_dir(data_dir)
  zip_path = folder / f"cifar10_{split}_jpg.zip"
  csv_path = folder / f"{split}_index.csv"
  if not zip_path.is_file():
    raise FileNotFoundError(f"CIFAR-10 {split} zip not found: {zip_path}")
  sources = [zip_path] + ([csv_path] if csv_path.is_file() else [])
  cache_path = None
  if cache_dir is not None:
    cache_path = pathlib.Path(cache_dir) / f"cifar10_{split}_jpg.npz"
    fingerprint = _fingerprint(*sources)
    cached = _load_cache(cache_path, fingerprint)
    if cached is not None:
      return cached
  if csv_path.is_file():
    csv_text, csv_source = _common.read_text(csv_path), str(csv_path)
  else:
    csv_text, csv_source = None, f"{zip_path}:{csv_path.name}"
    with _common.open_zip(zip_path) as zf:
      if csv_path.name in zf.namelist():
        csv_text = _common.decode_text(csv_source, _common.read_zip_member(
            zip_path, zf, csv_path.name))
    if csv_text is None:
      raise FileNotFoundError(
          f"CIFAR-10 {split} index not found: {csv_path} (nor inside {zip_path})")
  paths, labels = _read_index(csv_text, csv_source, split)
  images = _decode_zip(zip_path, paths)
  if cache_path is not None:
    _save_cache_atomic(cache_path, images, labels, fingerprint)
  return images, labels


def load_cifar10_tfds(
    split: str = "test",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads CIFAR-10 through ``tfds.data_source("cifar10")``.

  Needs ``tensorflow-datasets`` (``pip install 'l2d_jax[tfds]'``) and, the
  first time, network access to download and prepare the data set. These are
  the original (lossless) CIFAR-10 pixels.

  Args:
    split: a TFDS split string, e.g. ``"train"``, ``"test"``,
      ``"train[:90%]"``.
    data_dir: TFDS data folder (default ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data when absent.

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` and ``int32 [N]``.

  Raises:
    ImportError: ``tensorflow_datasets`` is not installed.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "load_cifar10_tfds needs tensorflow-datasets (pip install "
        "'l2d_jax[tfds]') and network access for the first download; offline, "
        "use load_cifar10_images(data_dir) on the JPEG zips instead.") from e
  source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=download)
  n = len(source)
  images = np.empty((n, 32, 32, 3), dtype=np.uint8)
  labels = np.empty((n,), dtype=np.int32)
  get_many = getattr(source, "__getitems__", None)
  chunk = 1024
  for start in range(0, n, chunk):
    ids = list(range(start, min(n, start + chunk)))
    records = get_many(ids) if get_many is not None else [source[i] for i in ids]
    for i, r in zip(ids, records):
      images[i] = np.asarray(r["image"], dtype=np.uint8)
      labels[i] = int(r["label"])
  return images, labels


# ---------------------------------------------------------------------------
# Augmentation and normalisation
# ---------------------------------------------------------------------------


def _check_images(images: Any, name: str = "images") -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(
        f"`{name}` must have shape [batch, height, width, channels] (4 dims), got "
        f"shape {images.shape}.")
  return images


def _check_pad(pad: Any) -> int:
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


def _take_crop_flip(
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
  images = _check_images(images)
  b = images.shape[0]
  pad = _check_pad(pad)
  offsets, flip = _check_offsets_flip(offsets, flip, b, pad)
  images = np.ascontiguousarray(images)
  return _take_crop_flip(images, np.arange(b), offsets, flip, pad)


def _draw_crop_flip(rng: np.random.Generator, batch: int, pad: int):
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
  images = _check_images(images)
  b = images.shape[0]
  pad = _check_pad(pad)
  offsets, flip = _draw_crop_flip(as_numpy_rng(rng), b, pad)
  return _take_crop_flip(np.ascontiguousarray(images), np.arange(b), offsets, flip, pad)


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


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------


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
  images = _check_images(images)
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
  pad = _check_pad(pad)
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
        offsets, flip = _draw_crop_flip(rng, idx.shape[0], pad)
        x = _take_crop_flip(images, idx, offsets, flip, pad)
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
