"""CIFAR-100 (Krizhevsky 2009) from the binary ``cifar-100-binary`` files.

``cifar-100-binary/train.bin`` (50,000 images) and ``test.bin`` (10,000) are
sequences of 3,074-byte records: 1 byte coarse label (0..19), 1 byte fine
label (0..99), then 3,072 bytes of pixels -- the red, green and blue planes in
turn, each 32x32 in row-major order. ``fine_label_names.txt`` and
``coarse_label_names.txt`` list the class names, one per line. The pickled
"python version" of the data set is never read. The TFDS path (``cifar100``)
needs ``tensorflow-datasets``.

References:
  Krizhevsky. Learning Multiple Layers of Features from Tiny Images. 2009.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from l2d_jax.data import _common
from l2d_jax.data import _svhn
from l2d_jax.data._cifar10n import CIFAR100_CLASSES

CIFAR100_SPLITS: tuple[str, ...] = ("train", "test")
CIFAR100_LABEL_MODES: tuple[str, ...] = ("fine", "coarse")
# The 20 superclasses, index = coarse label (as in coarse_label_names.txt).
CIFAR100_COARSE_CLASSES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers",
    "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals",
    "non-insect_invertebrates", "people", "reptiles", "small_mammals",
    "trees", "vehicles_1", "vehicles_2")
FOLDER = "cifar-100-binary"
RECORD_BYTES = 2 + 32 * 32 * 3
# mode -> (byte of the record, number of classes, names file, default names)
_MODES = {
    "coarse": (0, 20, "coarse_label_names.txt", CIFAR100_COARSE_CLASSES),
    "fine": (1, 100, "fine_label_names.txt", CIFAR100_CLASSES),
}


def _check_label_mode(label_mode: object) -> str:
  if not isinstance(label_mode, str) or label_mode not in _MODES:
    raise ValueError(f"`label_mode` must be one of {CIFAR100_LABEL_MODES}, got "
                     f"{label_mode!r}.")
  return label_mode


def _binary_file(path_or_dir: _common.PathLike, split: str) -> pathlib.Path:
  """``<split>.bin`` named by a path, its folder or the data root."""
  path = pathlib.Path(path_or_dir)
  if path.is_file():
    return path
  name = f"{split}.bin"
  for candidate in (path / FOLDER / name, path / name,
                    path / "cifar100" / FOLDER / name):
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f"CIFAR-100 {split} file not found: {path / FOLDER / name} (nor "
      f"{path / name}); pass the data root, the {FOLDER}/ folder or the .bin "
      "file. The pickled python version is not read.")


def read_class_names(
    path: _common.PathLike,
    num_classes: int,
) -> tuple[str, ...]:
  """Class names from a label-names file: one per non-blank line.

  Raises:
    DataFileError: text that is not UTF-8 (naming the line), or a number of
      names other than ``num_classes``.
  """
  text = _common.read_text(path, "class-names file")
  names = tuple(line.strip() for line in text.splitlines() if line.strip())
  if len(names) != num_classes:
    raise _common.DataFileError(
        path, f"expected {num_classes} class names (one per line), got "
        f"{len(names)}.")
  return names


def _records(path: pathlib.Path) -> np.ndarray:
  """The file's bytes as ``[N, 3074]`` uint8 records."""
  size = os.path.getsize(path)
  if size == 0:
    raise _common.DataFileError(path, "empty file, expected CIFAR-100 records "
                                f"of {RECORD_BYTES} bytes.")
  if size % RECORD_BYTES:
    raise _common.DataFileError(
        path, f"size {size} bytes is not a multiple of the {RECORD_BYTES}-byte "
        f"CIFAR-100 record ({size // RECORD_BYTES} whole records and "
        f"{size % RECORD_BYTES} bytes left): truncated, or not the binary "
        "version (the pickled python version is not read).")
  try:
    data = np.fromfile(path, dtype=np.uint8)
  except (OSError, ValueError, MemoryError) as err:
    raise _common.DataFileError(path, f"unreadable ({err}).") from None
  if data.size != size:
    raise _common.DataFileError(path, f"read {data.size} of {size} bytes.")
  return data.reshape(-1, RECORD_BYTES)


def _check_byte_labels(path: pathlib.Path, labels: np.ndarray, num: int,
                       mode: str) -> None:
  bad = labels >= num
  if np.any(bad):
    i = int(np.argmax(bad))
    raise _common.DataFileError(
        path, f"{mode} labels must lie in [0, {num}); record {i} (byte offset "
        f"{i * RECORD_BYTES}) has {mode} label {labels[i]}.")


def load_cifar100(
    data_dir_or_path: _common.PathLike,
    split: str = "train",
    *,
    label_mode: str = "fine",
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Loads CIFAR-100 from the binary version (``cifar-100-binary``).

  Both label bytes of every record are checked (coarse < 20, fine < 100),
  whichever ``label_mode`` is returned.

  Args:
    data_dir_or_path: a ``train.bin``/``test.bin`` file, the
      ``cifar-100-binary/`` folder, or a data root holding it.
    split: ``"train"`` or ``"test"``; picks the file inside a folder (ignored
      when a file is given).
    label_mode: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

  Returns:
    ``(images, labels, class_names)``: ``uint8 [N, 32, 32, 3]`` (RGB),
    ``int32 [N]`` and the class names, index = label, read from
    ``fine_label_names.txt``/``coarse_label_names.txt`` next to the file when
    present, else ``CIFAR100_CLASSES``/``CIFAR100_COARSE_CLASSES``. Records
    in file order.

  Raises:
    ValueError: unknown ``split`` or ``label_mode``.
    FileNotFoundError: no such file.
    DataFileError: an empty file, a size that is not a multiple of 3,074
      bytes, a label byte out of range, or a names file with the wrong number
      of lines -- naming the file.

  Example:
    >>> from l2d_jax import data
    >>> x, y, names = data.load_cifar100("data/", "test")  # doctest: +SKIP
    >>> x.shape, len(names)  # doctest: +SKIP
    ((10000, 32, 32, 3), 100)
  """
  split = _svhn.check_split(split, CIFAR100_SPLITS)
  label_mode = _check_label_mode(label_mode)
  path = _binary_file(data_dir_or_path, split)
  records = _records(path)
  for mode, (byte, num, _, _) in _MODES.items():
    _check_byte_labels(path, records[:, byte], num, mode)
  byte, num, names_file, default_names = _MODES[label_mode]
  labels = records[:, byte].astype(np.int32)
  images = np.ascontiguousarray(
      records[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  names_path = path.parent / names_file
  names = (read_class_names(names_path, num) if names_path.is_file()
           else default_names)
  return images, labels, names


def load_cifar100_tfds(
    split: str = "test",
    *,
    label_mode: str = "fine",
    data_dir: _common.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads CIFAR-100 through ``tfds.data_source("cifar100")``.

  Needs ``tensorflow-datasets`` (``pip install 'l2d_jax[tfds]'``) and, the
  first time, network access to download and prepare the data set.

  Args:
    split: a TFDS split string, e.g. ``"train"``, ``"test"``,
      ``"train[:90%]"``.
    label_mode: ``"fine"`` (TFDS feature ``label``) or ``"coarse"``
      (``coarse_label``).
    data_dir: TFDS data folder (default ``~/tensorflow_datasets``).
    download: let TFDS download and prepare the data when absent.

  Returns:
    ``(images, labels)``: ``uint8 [N, 32, 32, 3]`` and ``int32 [N]``; the
    class names are ``CIFAR100_CLASSES``/``CIFAR100_COARSE_CLASSES``.

  Raises:
    ValueError: unknown ``label_mode``.
    ImportError: ``tensorflow_datasets`` is not installed.
  """
  label_mode = _check_label_mode(label_mode)
  return _svhn.tfds_images(
      "cifar100", split, data_dir=data_dir, download=download,
      label_key="label" if label_mode == "fine" else "coarse_label",
      caller="load_cifar100_tfds",
      offline_hint="use load_cifar100 on the binary cifar-100-binary files")
