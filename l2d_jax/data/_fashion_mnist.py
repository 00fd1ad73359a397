"""Fashion-MNIST (Xiao et al. 2017) from the original idx-ubyte files.

The data set ships four files, each possibly gzipped (``.gz``):
``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (60,000 images),
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (10,000). An idx
file starts with a big-endian magic number -- 2051 (``0x00000803``: unsigned
bytes, 3 dimensions) for images, 2049 (``0x00000801``: unsigned bytes, 1
dimension) for labels -- followed by one big-endian uint32 per dimension, then
the values in row-major order. The TFDS path (``fashion_mnist``) needs
``tensorflow-datasets``.

References:
  Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for
  Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
import zlib

import numpy as np

from l2d_jax.data import _common
from l2d_jax.data import _svhn

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_SPLITS: tuple[str, ...] = ("train", "test")
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_PREFIX = {"train": "train", "test": "t10k"}
_FOLDERS = ("", "fashion_mnist", "fashion-mnist", "FashionMNIST/raw")
_SIDE = 28
_GZIP_ERRORS = (OSError, EOFError, zlib.error, ValueError)


def _idx_file(root: pathlib.Path, stem: str) -> pathlib.Path:
  """``stem`` or ``stem.gz`` in ``root`` or one of its usual sub-folders."""
  for folder in _FOLDERS:
    for name in (stem, stem + ".gz"):
      candidate = root / folder / name if folder else root / name
      if candidate.is_file():
        return candidate
  raise FileNotFoundError(
      f"Fashion-MNIST file not found: {root / stem} (nor {stem}.gz, nor in "
      f"the sub-folders {list(_FOLDERS[1:])}); pass the folder holding the "
      "original idx-ubyte files.")


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> tuple[tuple, bytes]:
  """Reads an idx-ubyte file (plain or gzipped) after checking its header.

  The payload is never read past the size its header declares (plus one byte
  to notice trailing data): a gzip member cannot inflate without bound.

  Returns:
    ``(dims, payload)``: the declared dimensions and exactly
    ``prod(dims)`` bytes.

  Raises:
    DataFileError: a bad magic number, a truncated file or trailing data, a
      declared size beyond the limits, or a corrupt gzip stream.
  """
  gzipped = path.suffix == ".gz"
  header_bytes = 4 + 4 * ndim
  try:
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
      header = handle.read(header_bytes)
      if len(header) < 4:
        raise _common.DataFileError(
            path, f"truncated: {len(header)} bytes, fewer than the 4-byte "
            "idx magic number.")
      (found,) = struct.unpack(">I", header[:4])
      if found != magic:
        raise _common.DataFileError(
            path, f"bad idx magic number {found} (0x{found:08x}); expected "
            f"{magic} (0x{magic:08x}, unsigned bytes in {ndim} "
            f"dimension{'s' if ndim > 1 else ''}). Not an idx-ubyte "
            f"{'image' if ndim == 3 else 'label'} file?")
      if len(header) < header_bytes:
        raise _common.DataFileError(
            path, f"truncated header: {len(header)} of {header_bytes} bytes.")
      dims = struct.unpack(f">{ndim}I", header[4:])
      size = int(np.prod(dims, dtype=np.int64))
      if gzipped:
        limit = min(_common.MAX_ZIP_MEMBER_BYTES,
                    max(_common.MAX_ZIP_RATIO * os.path.getsize(path),
                        1 << 20))
      else:
        limit = os.path.getsize(path) - header_bytes
      if size > limit:
        raise _common.DataFileError(
            path, f"header declares {list(dims)} = {size} bytes of data, but "
            + (f"{os.path.getsize(path) - header_bytes} follow the header "
               "(truncated file?)." if not gzipped else
               f"more than l2d_jax.data.MAX_ZIP_RATIO = "
               f"{_common.MAX_ZIP_RATIO} times the compressed size (or "
               "MAX_ZIP_MEMBER_BYTES); refusing a possible decompression "
               "bomb."))
      payload = handle.read(size + 1)  # Stops one byte past the declared size.
  except _common.DataFileError:
    raise
  except _GZIP_ERRORS as err:
    raise _common.DataFileError(
        path, f"corrupt {'gzip ' if gzipped else ''}file "
        f"({type(err).__name__}: {err}).") from None
  if len(payload) != size:
    raise _common.DataFileError(
        path, f"header declares {list(dims)} = {size} bytes of data, but "
        f"{'more' if len(payload) > size else len(payload)} follow"
        f"{'' if len(payload) > size else ' (truncated file)'}.")
  return dims, payload


def load_fashion_mnist(
    path_or_dir: _common.PathLike,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
  """Loads Fashion-MNIST from the original idx-ubyte files.

  Args:
    path_or_dir: the folder holding ``<prefix>-images-idx3-ubyte`` and
      ``<prefix>-labels-idx1-ubyte`` (each plain or ``.gz``; a plain file is
      preferred), or a data root holding them in ``fashion_mnist/``,
      ``fashion-mnist/`` or ``FashionMNIST/raw/``.
    split: ``"train"`` (prefix ``train``, 60,000 images) or ``"test"``
      (prefix ``t10k``, 10,000).

  Returns:
    ``(images, labels)``: ``uint8 [N, 28, 28, 1]`` (0 = background) and
    ``int32 [N]`` in 0..9 (see ``FASHION_MNIST_CLASSES``), in file order.

  Raises:
    ValueError: unknown ``split``.
    FileNotFoundError: a missing file, naming it.
    DataFileError: naming the file -- a magic number other than 2051
      (images) / 2049 (labels), images not 28x28, a truncated file or
      trailing bytes, a gzip stream that is corrupt or would inflate beyond
      ``MAX_ZIP_RATIO`` times its size, image and label counts that differ,
      or a label outside 0..9.

  Example:
    >>> from l2d_jax import data
    >>> images, labels = data.load_fashion_mnist("fmnist/", "test")  # doctest: +SKIP
    >>> images.shape, labels.dtype  # doctest: +SKIP
    ((10000, 28, 28, 1), dtype('int32'))
  """
  split = _svhn.check_split(split, FASHION_MNIST_SPLITS)
  root = pathlib.Path(path_or_dir)
  prefix = _PREFIX[split]
  image_path = _idx_file(root, f"{prefix}-images-idx3-ubyte")
  label_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
  (n, rows, cols), pixels = _read_idx(image_path, IMAGES_MAGIC, 3)
  if (rows, cols) != (_SIDE, _SIDE):
    raise _common.DataFileError(
        image_path, f"images must be {_SIDE}x{_SIDE}, the header declares "
        f"{rows}x{cols}.")
  (num_labels,), raw_labels = _read_idx(label_path, LABELS_MAGIC, 1)
  if num_labels != n:
    raise _common.DataFileError(
        label_path, f"holds {num_labels} labels but {image_path} holds {n} "
        "images.")
  labels = np.frombuffer(raw_labels, dtype=np.uint8)
  bad = labels >= len(FASHION_MNIST_CLASSES)
  if np.any(bad):
    i = int(np.argmax(bad))
    raise _common.DataFileError(
        label_path, f"labels must lie in 0..9; image {i} has label "
        f"{labels[i]}.")
  images = np.frombuffer(pixels, dtype=np.uint8).reshape(n, rows, cols, 1)
  return images.copy(), labels.astype(np.int32)


def load_fashion_mnist_tfds(
    split: str = "test",
    *,
    data_dir: _common.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads Fashion-MNIST through ``tfds.data_source("fashion_mnist")``.

  Needs ``tensorflow-datasets`` (``pip install 'l2d_jax[tfds]'``) and, the
  first time, network access to download and prepare the data set.

  Args:
    split: a TFDS split string, e.g. ``"train"``, ``"test"``,
      ``"train[:90%]"``.
    data_dir: TFDS data folder (default ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data when absent.

  Returns:
    ``(images, labels)``: ``uint8 [N, 28, 28, 1]`` and ``int32 [N]`` in 0..9.

  Raises:
    ImportError: ``tensorflow_datasets`` is not installed.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(
        "load_fashion_mnist_tfds needs tensorflow-datasets (pip install "
        "'l2d_jax[tfds]') and network access for the first download; "
        "offline, use load_fashion_mnist on the original idx-ubyte files."
    ) from err
  source = tfds.data_source("fashion_mnist", split=split, data_dir=data_dir,
                            download=download)
  n = len(source)
  images = np.empty((n, _SIDE, _SIDE, 1), dtype=np.uint8)
  labels = np.empty((n,), dtype=np.int32)
  for i in range(n):
    record = source[i]
    images[i] = np.asarray(record["image"], dtype=np.uint8).reshape(
        _SIDE, _SIDE, 1)
    labels[i] = int(record["label"])
  return images, labels
