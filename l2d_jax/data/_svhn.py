"""SVHN (cropped digits, Netzer et al. 2011) from the original ``.mat`` files.

The files ``train_32x32.mat`` (73,257 images), ``test_32x32.mat`` (26,032) and
``extra_32x32.mat`` (531,131) are MATLAB v5 files holding ``X`` ``[32, 32, 3,
N]`` uint8 (height, width, RGB, image) and ``y`` ``[N, 1]`` with labels 1..10,
where 10 stands for the digit 0. They are read with ``scipy.io.loadmat``
(no pickle); MATLAB v7.3 (HDF5) files are refused. The TFDS path
(``svhn_cropped``) needs ``tensorflow-datasets``.

References:
  Netzer, Wang, Coates, Bissacco, Wu, Ng. Reading Digits in Natural Images
  with Unsupervised Feature Learning. NIPS Workshop 2011.
"""

from __future__ import annotations

import math
import os
import pathlib
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from l2d_jax.data import _common

SVHN_SPLITS: tuple[str, ...] = ("train", "test", "extra")
SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FOLDER = "svhn"
_IMAGE_SHAPE = (32, 32, 3)


def _mat_errors() -> tuple[type[BaseException], ...]:
  """What ``scipy.io`` raises on a damaged file (besides our own errors)."""
  from scipy.io import matlab  # pylint: disable=import-outside-toplevel
  return (ValueError, TypeError, KeyError, IndexError, EOFError, OSError,
          zlib.error, RuntimeError, NotImplementedError, OverflowError,
          MemoryError, AttributeError, matlab.MatReadError)


def check_split(split: Any, splits: Sequence[str]) -> str:
  """``split`` if it is one of ``splits``, else a ``ValueError`` naming it."""
  if not isinstance(split, str) or split not in splits:
    raise ValueError(f"`split` must be one of {tuple(splits)}, got {split!r}.")
  return split


def svhn_file(path_or_dir: _common.PathLike, split: str) -> pathlib.Path:
  """The ``<split>_32x32.mat`` file named by a path, its folder or the data root."""
  path = pathlib.Path(path_or_dir)
  if path.is_file():
    return path
  name = f"{split}_32x32.mat"
  for candidate in (path / name, path / FOLDER / name):
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f"SVHN {split} file not found: {path / name} (nor {path / FOLDER / name})"
      "; pass the .mat file, its folder or the data root.")


def _declared_variables(path: pathlib.Path) -> dict[str, tuple[tuple, str]]:
  """``{name: (shape, class)}`` of the file's variables, read from headers only.

  Raises:
    DataFileError: not a MATLAB v5 file (v7.3/HDF5 and v4 named), or headers
      that cannot be read.
  """
  from scipy.io import matlab  # pylint: disable=import-outside-toplevel
  errors = _mat_errors()
  try:
    with open(path, "rb") as handle:
      major, minor = matlab.matfile_version(handle)
  except errors as err:
    raise _common.DataFileError(
        path, f"not a MATLAB .mat file ({err}).") from None
  if major == 2:
    raise _common.DataFileError(
        path, "is a MATLAB v7.3 (HDF5) file; only MATLAB v5 files are read "
        "(the original SVHN files are v5). Re-save it with MATLAB's "
        "save(..., '-v7') or scipy.io.savemat.")
  if major != 1:
    raise _common.DataFileError(
        path, f"is a MATLAB v{4 if major == 0 else major}.{minor} file; only "
        "MATLAB v5 files are read.")
  try:
    listed = matlab.whosmat(str(path))
  except errors as err:
    raise _common.DataFileError(
        path, f"corrupt MATLAB file ({type(err).__name__}: {err}).") from None
  return {name: (tuple(shape), kind) for name, shape, kind in listed}


def _check_declared(path: pathlib.Path, declared: dict) -> None:
  """Checks names, shapes and declared size before anything is allocated."""
  for key in ("X", "y"):
    if key not in declared:
      raise _common.DataFileError(
          path, f"has no variable {key!r} (found {sorted(declared)}); expected "
          "SVHN's X [32, 32, 3, N] and y [N, 1] (truncated, or not an SVHN "
          "file?).")
  x_shape, x_kind = declared["X"]
  if len(x_shape) != 4 or x_shape[:3] != _IMAGE_SHAPE:
    raise _common.DataFileError(
        path, f"variable 'X' must have shape [32, 32, 3, N], got "
        f"{list(x_shape)}.")
  n = x_shape[3]
  y_shape, _ = declared["y"]
  if y_shape not in ((n, 1), (1, n)):
    raise _common.DataFileError(
        path, f"variable 'y' must have shape [{n}, 1] (one label per image of "
        f"X), got {list(y_shape)}.")
  # A compressed variable inflates on reading: bound it as a zip member.
  itemsize = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "char": 2,
              "uint32": 4, "int32": 4, "single": 4}.get(x_kind, 8)
  declared_bytes = math.prod(x_shape) * itemsize
  limit = _common.MAX_ZIP_RATIO * max(os.path.getsize(path), 1)
  if declared_bytes > max(limit, 1 << 20):
    raise _common.DataFileError(
        path, f"variable 'X' declares {declared_bytes} bytes, more than "
        f"l2d_jax.data.MAX_ZIP_RATIO = {_common.MAX_ZIP_RATIO} times the file "
        "size; refusing a possible decompression bomb.")


def _pixels(path: pathlib.Path, x: Any) -> np.ndarray:
  """``X`` as uint8, accepting integer or whole float values in [0, 255]."""
  if not isinstance(x, np.ndarray) or x.dtype.kind not in "uif":
    raise _common.DataFileError(
        path, f"variable 'X' must be a numeric array, got "
        f"{getattr(x, 'dtype', type(x).__name__)}.")
  if x.dtype == np.uint8:
    return x
  values = _common.integer_array(x, source=str(path), what="pixel")
  if values.size and (values.min() < 0 or values.max() > 255):
    raise _common.DataFileError(
        path, f"pixels of 'X' must lie in [0, 255], got [{values.min()}, "
        f"{values.max()}].")
  return values.astype(np.uint8)


def _labels(path: pathlib.Path, y: Any) -> np.ndarray:
  """``y`` (1..10, 10 for the digit 0) as int32 digits 0..9."""
  if not isinstance(y, np.ndarray) or y.dtype.kind not in "uif":
    raise _common.DataFileError(
        path, f"variable 'y' must be a numeric array, got "
        f"{getattr(y, 'dtype', type(y).__name__)}.")
  labels = _common.integer_array(y.reshape(-1), source=str(path),
                                 what="label")
  bad = (labels < 1) | (labels > 10)
  if np.any(bad):
    i = int(np.argmax(bad))
    raise _common.DataFileError(
        path, f"labels of 'y' must lie in 1..10 (10 for the digit 0); image "
        f"{i} has label {labels[i]}.")
  return (labels % 10).astype(np.int32)


def load_svhn(
    path_or_dir: _common.PathLike,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
  """Loads SVHN cropped digits from an original ``<split>_32x32.mat`` file.

  Args:
    path_or_dir: the ``.mat`` file itself, the folder holding
      ``<split>_32x32.mat``, or a data root holding ``svhn/<split>_32x32.mat``.
    split: ``"train"``, ``"test"`` or ``"extra"``; picks the file inside a
      folder (ignored when ``path_or_dir`` is a file).

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` (RGB) and ``int32 [N]``
    digits in 0..9 (the file's label 10 becomes 0, as in TFDS), in file
    order.

  Raises:
    ValueError: unknown ``split``.
    FileNotFoundError: no such file.
    DataFileError: not a MATLAB v5 file (v7.3/HDF5 is named as such), a
      corrupt file, missing ``X`` or ``y``, ``X`` not ``[32, 32, 3, N]`` with
      pixels in 0..255, ``y`` not ``[N, 1]``, or a label outside 1..10 --
      naming the file.

  Example:
    >>> from l2d_jax import data
    >>> images, labels = data.load_svhn("svhn/", "test")  # doctest: +SKIP
    >>> images.shape, labels.dtype  # doctest: +SKIP
    ((26032, 32, 32, 3), dtype('int32'))
  """
  from scipy.io import matlab  # pylint: disable=import-outside-toplevel
  split = check_split(split, SVHN_SPLITS)
  path = svhn_file(path_or_dir, split)
  _check_declared(path, _declared_variables(path))
  try:
    contents = matlab.loadmat(str(path), variable_names=("X", "y"),
                              squeeze_me=False, struct_as_record=True)
  except _mat_errors() as err:
    raise _common.DataFileError(
        path, f"corrupt MATLAB file ({type(err).__name__}: {err}).") from None
  x, y = contents.get("X"), contents.get("y")
  if x is None or y is None:
    raise _common.DataFileError(path, "variables 'X' and 'y' could not be "
                                "read.")
  if x.ndim != 4 or x.shape[:3] != _IMAGE_SHAPE or y.size != x.shape[3]:
    raise _common.DataFileError(
        path, f"'X' {list(x.shape)} and 'y' {list(y.shape)} do not match the "
        "declared SVHN shapes [32, 32, 3, N] and [N, 1].")
  labels = _labels(path, y)
  images = np.ascontiguousarray(np.moveaxis(_pixels(path, x), -1, 0))
  return images, labels


def tfds_images(
    name: str,
    split: str,
    *,
    data_dir: _common.PathLike | None,
    download: bool,
    label_key: str,
    caller: str,
    offline_hint: str,
) -> tuple[np.ndarray, np.ndarray]:
  """Reads ``image``/``label_key`` of every record of ``tfds.data_source(name)``.

  Args:
    name: the TFDS data set.
    split: a TFDS split string.
    data_dir: TFDS data folder (default ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data when absent.
    label_key: the feature holding the label.
    caller: the public function, for the ImportError.
    offline_hint: what to use offline, for the ImportError.

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` and ``int32 [N]``.

  Raises:
    ImportError: ``tensorflow_datasets`` is not installed.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(
        f"{caller} needs tensorflow-datasets (pip install 'l2d_jax[tfds]') and "
        f"network access for the first download; offline, {offline_hint}."
    ) from err
  source = tfds.data_source(name, split=split, data_dir=data_dir,
                            download=download)
  n = len(source)
  images = np.empty((n, *_IMAGE_SHAPE), dtype=np.uint8)
  labels = np.empty((n,), dtype=np.int32)
  get_many = getattr(source, "__getitems__", None)
  chunk = 1024
  for start in range(0, n, chunk):
    ids = list(range(start, min(n, start + chunk)))
    records = get_many(ids) if get_many is not None else [source[i]
                                                          for i in ids]
    for i, record in zip(ids, records):
      images[i] = np.asarray(record["image"], dtype=np.uint8)
      labels[i] = int(record[label_key])
  return images, labels


def load_svhn_tfds(
    split: str = "test",
    *,
    data_dir: _common.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads SVHN cropped digits through ``tfds.data_source("svhn_cropped")``.

  Needs ``tensorflow-datasets`` (``pip install 'l2d_jax[tfds]'``) and, the
  first time, network access to download and prepare the data set. TFDS
  already maps the digit 0 to label 0, as :func:`load_svhn` does.

  Args:
    split: a TFDS split string, e.g. ``"train"``, ``"test"``, ``"extra"``,
      ``"train[:90%]"``.
    data_dir: TFDS data folder (default ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data when absent.

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` and ``int32 [N]`` in 0..9.

  Raises:
    ImportError: ``tensorflow_datasets`` is not installed.
  """
  return tfds_images("svhn_cropped", split, data_dir=data_dir,
                     download=download, label_key="label",
                     caller="load_svhn_tfds",
                     offline_hint="use load_svhn on the original .mat files")
