"""Real model probabilities on the CIFAR-10 test set (Kerrigan et al., 2021).

Files of ``cifar10h_model_probs/`` (github GavinKerrigan/conf_matrix_and_calibration):

- ``<model>.csv`` for each of :data:`MODEL_NAMES`: no header, 10,000 rows in
  CIFAR-10 test order, 21 columns: column 0 the true label (0-9, written as a
  float), columns 1-10 the CIFAR-10H human label counts, columns 11-20 the
  model's softmax probabilities.
- ``human_model_truth_cifar10h.csv``: no header, columns 0-9 CIFAR-10H counts,
  columns 10-19 probabilities of a weaker model, column 20 the true label
  written **1-10**.

References:
  Kerrigan, Smyth, Steyvers. Combining Human Predictions with Model
  Probabilities via Confusion Matrices and Calibration. NeurIPS 2021.
"""

from __future__ import annotations

import pathlib

import numpy as np

from l2d_jax.data import _common

MODEL_NAMES: tuple[str, ...] = (
    "densenet-bc-L190-k40", "preresnet-110", "resnet-110")

_FOLDER = "cifar10h_model_probs"
_NUM_IMAGES = 10_000
_NUM_CLASSES = 10


def _split(table: np.ndarray, *, label_col: int, count_cols: slice,
           prob_cols: slice, label_offset: int,
           source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  if table.shape[0] != _NUM_IMAGES:
    raise ValueError(f"{source}: expected {_NUM_IMAGES} rows (CIFAR-10 test "
                     f"set), got {table.shape[0]}.")
  labels = _common.check_label_array(
      table[:, label_col] - label_offset, num_images=_NUM_IMAGES,
      num_classes=_NUM_CLASSES, source=f"{source} (label column {label_col})")
  counts = _common.integer_array(table[:, count_cols], source=source,
                                 what="the CIFAR-10H count columns")
  if counts.min() < 0:
    raise _common.DataFileError(source, "the CIFAR-10H count columns must "
                                "hold non-negative integers; row "
                                f"{int(np.argmin(counts.min(1)))} does not.")
  probs = _common.normalize_probs(table[:, prob_cols], source=source)
  return probs, labels, counts


def load_model_probs(
    data_dir: _common.PathLike,
    model: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Loads one model's probabilities on the 10,000 CIFAR-10 test images.

  Rows whose probabilities sum to 1 within 1e-3 are renormalised exactly.

  Args:
    data_dir: the data root holding ``cifar10h_model_probs/``.
    model: one of :data:`MODEL_NAMES`.

  Returns:
    ``(probs, labels, counts)``: ``[10000, 10]`` float32 probabilities,
    ``[10000]`` int32 true labels and ``[10000, 10]`` int64 CIFAR-10H counts,
    in CIFAR-10 test order.

  Raises:
    ValueError: unknown model (listing the choices), malformed rows or text
      that is not UTF-8 (naming file and line), labels out of range, counts
      that are not integers within the int64 range, or probability rows not
      summing to 1.
    FileNotFoundError: the file is missing.

  Example:
    >>> probs, labels, counts = load_model_probs(data_dir, "resnet-110")  # doctest: +SKIP
    >>> float((probs.argmax(1) == labels).mean())  # doctest: +SKIP
    0.9389
  """
  if model not in MODEL_NAMES:
    raise ValueError(f"unknown model {model!r}; choose one of {MODEL_NAMES}.")
  path = _common.existing_file(
      pathlib.Path(data_dir) / _FOLDER / f"{model}.csv",
      "model-probabilities file")
  table = _common.read_numeric_csv(path, num_cols=21)
  return _split(table, label_col=0, count_cols=slice(1, 11),
                prob_cols=slice(11, 21), label_offset=0, source=str(path))


def load_human_model_truth(
    data_dir: _common.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Loads ``human_model_truth_cifar10h.csv`` (a weaker model, accuracy 0.889).

  The file's label column is 1-based; it is converted to 0-9.

  Args:
    data_dir: the data root holding ``cifar10h_model_probs/``.

  Returns:
    ``(probs, labels, counts)`` as in :func:`load_model_probs`.

  Raises:
    ValueError: malformed rows, labels outside 1-10, or probability rows not
      summing to 1.
    FileNotFoundError: the file is missing.
  """
  path = _common.existing_file(
      pathlib.Path(data_dir) / _FOLDER / "human_model_truth_cifar10h.csv",
      "model-probabilities file")
  table = _common.read_numeric_csv(path, num_cols=21)
  return _split(table, label_col=20, count_cols=slice(0, 10),
                prob_cols=slice(10, 20), label_offset=1, source=str(path))
