"""CIFAR-10 images: JPEG-zip and TFDS loaders (augmentation and batching re-exported).

Everything here is numpy on the host: a loader returns ``uint8`` arrays
``[N, 32, 32, 3]`` and ``int32`` labels ``[N]``; :func:`iterate_batches`
(in :mod:`l2d_jax.data._batches`, with the augmentation of
:mod:`l2d_jax.data._host_augment`) turns them into shuffled, augmented,
normalised batches whose content is a pure function of ``(seed, epoch, batch
index)``, so a training run resumed from a checkpoint replays exactly the
batches it would have seen.

The offline copy (``<data_dir>/cifar10_images/``) holds lossy JPEGs, so the
pixels differ slightly from the original CIFAR-10 binaries; the test split is
in canonical CIFAR-10 test order, the train split in the order of
``train_index.csv`` (see the data manifest).
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from l2d_jax import _atomic
from l2d_jax.data import _common
from l2d_jax.data._batches import epoch_permutation
from l2d_jax.data._batches import iterate_batches
from l2d_jax.data._batches import steps_per_epoch
from l2d_jax.data._common import CIFAR10_CLASSES
from l2d_jax.data._host_augment import CIFAR10_MEAN
from l2d_jax.data._host_augment import CIFAR10_STD
from l2d_jax.data._host_augment import augment_crop_flip
from l2d_jax.data._host_augment import crop_and_flip
from l2d_jax.data._host_augment import normalize_images

__all__ = (
    # Loading (defined here).
    "CIFAR10_CLASSES",
    "load_cifar10_images",
    "load_cifar10_tfds",
    # Augmentation and normalisation (_host_augment).
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "augment_crop_flip",
    "crop_and_flip",
    "normalize_images",
    # Batching (_batches).
    "epoch_permutation",
    "iterate_batches",
    "steps_per_epoch",
)

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
