"""MedMNIST 2D data sets (Yang et al. 2023) from their official ``.npz`` files.

Each data set is one archive, ``<name>.npz`` (28x28 images) or
``<name>_<size>.npz`` (MedMNIST+ at 64, 128 or 224 pixels), holding six
arrays: ``train_images``, ``val_images``, ``test_images`` (``uint8 [N, H, W]``
for grey-level sets, ``[N, H, W, 3]`` for colour ones) and ``train_labels``,
``val_labels``, ``test_labels`` (integers ``[N, 1]``, or ``[N]``). The archive
is read without pickle through the package's checked ``.npz`` reader.

The four sets of the EA-L2D paper's domains are listed in
``MEDMNIST_CLASSES``: DermaMNIST (HAM10000, 7 classes), BloodMNIST (blood
cells, 8), OCTMNIST (retinal OCT, 4) and OrganAMNIST (abdominal CT organs,
11; the paper's liver-tumour set is not part of MedMNIST). TFDS ships no
MedMNIST builder, so there is no TFDS path: download the archives from
https://medmnist.com (``pip install medmnist`` fetches the same files).

References:
  Yang, Shi, Wei, Liu, Zhao, Ke, Pfister & Ni. MedMNIST v2 -- A large-scale
  lightweight benchmark for 2D and 3D biomedical image classification.
  Scientific Data 10, 41 (2023).
"""

from __future__ import annotations

import pathlib

import numpy as np

from l2d_jax.data import _common

MEDMNIST_CLASSES: dict[str, int] = {
    "dermamnist": 7,
    "bloodmnist": 8,
    "octmnist": 4,
    "organamnist": 11,
}
MEDMNIST_SPLITS: tuple[str, ...] = ("train", "val", "test")
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)


def medmnist_path(data_dir: _common.PathLike, name: str, *,
                  size: int = 28) -> pathlib.Path:
  """Where the archive of ``name`` is looked for.

  ``data_dir/<name>.npz`` (size 28) or ``data_dir/<name>_<size>.npz``; a
  ``medmnist`` sub-folder of ``data_dir`` is tried second.

  Args:
    data_dir: folder holding the archives.
    name: a key of ``MEDMNIST_CLASSES``.
    size: image side, one of ``MEDMNIST_SIZES``.

  Returns:
    The first existing candidate, else the first candidate.

  Raises:
    ValueError: an unknown ``name`` or ``size``.
  """
  if name not in MEDMNIST_CLASSES:
    raise ValueError(f"`name` must be one of {tuple(MEDMNIST_CLASSES)}, got "
                     f"{name!r}.")
  if size not in MEDMNIST_SIZES:
    raise ValueError(f"`size` must be one of {MEDMNIST_SIZES}, got {size!r}.")
  stem = name if size == 28 else f"{name}_{size}"
  root = pathlib.Path(data_dir)
  candidates = [root / f"{stem}.npz", root / "medmnist" / f"{stem}.npz"]
  for c in candidates:
    if c.is_file():
      return c
  return candidates[0]


def load_medmnist(
    data_dir: _common.PathLike,
    name: str,
    split: str = "train",
    *,
    size: int = 28,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of a MedMNIST 2D data set from its ``.npz`` archive.

  Args:
    data_dir: folder holding ``<name>.npz`` (or ``<name>_<size>.npz``),
      directly or in a ``medmnist`` sub-folder.
    name: ``'dermamnist'``, ``'bloodmnist'``, ``'octmnist'`` or
      ``'organamnist'``.
    split: ``'train'``, ``'val'`` or ``'test'``.
    size: image side (28, or 64/128/224 for MedMNIST+).

  Returns:
    ``(images, labels)``: ``uint8 [N, size, size, C]`` (``C`` = 1 for
    grey-level sets, 3 for colour) and ``int32 [N]`` in
    ``[0, MEDMNIST_CLASSES[name])``.

  Raises:
    ValueError: an unknown ``name``, ``split`` or ``size``.
    FileNotFoundError: the archive is missing.
    DataFileError: an unreadable archive (see ``load_npz``), a missing
      ``<split>_images`` / ``<split>_labels`` array, images that are not
      ``uint8 [N, size, size(, 1|3)]``, labels that are not ``N`` whole
      numbers (``[N]`` or ``[N, 1]``) in range.

  Example:
    >>> import tempfile, numpy as np
    >>> from l2d_jax import data
    >>> d = tempfile.mkdtemp()
    >>> np.savez(f"{d}/octmnist.npz",
    ...          train_images=np.zeros((2, 28, 28), np.uint8),
    ...          train_labels=np.array([[0], [3]]))
    >>> x, y = data.load_medmnist(d, "octmnist", "train")
    >>> x.shape, x.dtype, y.tolist()
    ((2, 28, 28, 1), dtype('uint8'), [0, 3])
  """
  if split not in MEDMNIST_SPLITS:
    raise ValueError(f"`split` must be one of {MEDMNIST_SPLITS}, got "
                     f"{split!r}.")
  path = medmnist_path(data_dir, name, size=size)
  if not path.is_file():
    raise FileNotFoundError(
        f"MedMNIST archive not found: {path} (nor in a medmnist/ sub-folder); "
        f"download {path.name} from https://medmnist.com into the data "
        f"folder.")
  keys = (f"{split}_images", f"{split}_labels")
  arrays = _common.load_npz(path, "MedMNIST archive", names=keys)
  for k in keys:
    if k not in arrays:
      raise _common.DataFileError(path, f"no {k!r} array (a MedMNIST archive "
                                  f"holds {{train,val,test}}_images and "
                                  f"_labels).")
  images, labels = arrays[keys[0]], arrays[keys[1]]
  if images.ndim == 3:
    images = images[..., None]
  if (images.dtype != np.uint8 or images.ndim != 4
      or images.shape[1:3] != (size, size) or images.shape[3] not in (1, 3)):
    raise _common.DataFileError(
        path, f"{keys[0]} must be uint8 [N, {size}, {size}] or [N, {size}, "
        f"{size}, 1|3], got {images.dtype} {images.shape}.")
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.shape != (images.shape[0],):
    raise _common.DataFileError(
        path, f"{keys[1]} must have shape [N] or [N, 1] with the N="
        f"{images.shape[0]} images of {keys[0]}, got {labels.shape}.")
  labels = _common.integer_array(labels, source=f"{path}[{keys[1]}]",
                                 what="a label")
  num_classes = MEDMNIST_CLASSES[name]
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = int(np.argmax((labels < 0) | (labels >= num_classes)))
    raise _common.DataFileError(
        path, f"{keys[1]}[{bad}] is {labels[bad]}, outside [0, "
        f"{num_classes}) ({name} has {num_classes} classes).")
  return np.ascontiguousarray(images), labels.astype(np.int32)
