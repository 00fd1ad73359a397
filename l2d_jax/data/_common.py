"""Shared pieces of the real-data loaders: the data set container and checks.

Every loader returns (or builds) an :class:`AnnotatedDataset`: model
probabilities, true labels and per-image human annotations over one pool of
images. Every loader reads its files through helpers that use the standard
library and numpy only (no pandas, never pickle). They live in small private
modules, and every name a loader uses is importable from here:

- :mod:`l2d_jax.data._file_errors`: :class:`DataFileError`,
  :func:`existing_file`, :func:`row_error`;
- :mod:`l2d_jax.data._archives`: zip members refused when encrypted or when
  they would inflate beyond :data:`MAX_ZIP_MEMBER_BYTES` or
  :data:`MAX_ZIP_RATIO`, and never read past their declared size
  (:func:`read_zip_member`); ``.npy``/``.npz`` arrays checked to be complete
  before they are allocated (:func:`load_npy`, :func:`load_npz`);
- :mod:`l2d_jax.data._text_files`: text (CSV, JSON) decoded as strict UTF-8
  (:func:`read_text`, :func:`read_json`, :func:`read_csv`,
  :func:`read_numeric_csv`); integers that must fit in int64
  (:func:`parse_int`, :func:`int_column`, :func:`integer_array`);
- :mod:`l2d_jax.data._answer_tables`: one row per answer to padded
  ``Annotations`` (:func:`build_annotations`, :func:`labels_from_answers`);
- here: :class:`AnnotatedDataset`, argument checks (:func:`check_int`) and
  probability and label checks (:func:`normalize_probs`,
  :func:`check_label_array`).

A file that cannot be read as its format requires raises
:class:`DataFileError` (a ``ValueError``) whose message starts with the file
and, where there is one, the line; content that is readable but invalid
(labels out of range, probabilities not summing to 1) raises ``ValueError``
naming the file; a missing file raises ``FileNotFoundError`` naming the path.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from l2d_jax import _validation
from l2d_jax.data import _archives
from l2d_jax.data._answer_tables import DUPLICATE_POLICIES
from l2d_jax.data._answer_tables import build_annotations
from l2d_jax.data._answer_tables import labels_from_answers
from l2d_jax.data._answer_tables import resolve_duplicates
from l2d_jax.data._answer_tables import sort_expert_names
from l2d_jax.data._archives import check_zip_member
from l2d_jax.data._archives import load_npy
from l2d_jax.data._archives import load_npz
from l2d_jax.data._archives import open_zip
from l2d_jax.data._archives import read_zip_member
from l2d_jax.data._file_errors import DataFileError
from l2d_jax.data._file_errors import PathLike
from l2d_jax.data._file_errors import existing_file
from l2d_jax.data._file_errors import row_error
from l2d_jax.data._text_files import decode_text
from l2d_jax.data._text_files import int_column
from l2d_jax.data._text_files import integer_array
from l2d_jax.data._text_files import open_text
from l2d_jax.data._text_files import parse_int
from l2d_jax.data._text_files import read_csv
from l2d_jax.data._text_files import read_json
from l2d_jax.data._text_files import read_numeric_csv
from l2d_jax.data._text_files import read_text
from l2d_jax.data._text_files import strip_all
from l2d_jax.data._text_files import take
from l2d_jax.data._text_files import utf8_error
from l2d_jax.data._text_files import utf8_errors
from l2d_jax.experts._annotations import Annotations

__all__ = (
    # The data set container and its checks (defined here).
    "AnnotatedDataset",
    "CIFAR10_CLASSES",
    "check_int",
    "check_label_array",
    "normalize_probs",
    "normalize_scores",
    # Errors and paths.
    "DataFileError",
    "PathLike",
    "existing_file",
    "row_error",
    # Zip archives and .npy/.npz arrays.
    "MAX_ZIP_MEMBER_BYTES",
    "MAX_ZIP_RATIO",
    "check_zip_member",
    "load_npy",
    "load_npz",
    "open_zip",
    "read_zip_member",
    # UTF-8 text, JSON, CSV and int64 integers.
    "decode_text",
    "int_column",
    "integer_array",
    "open_text",
    "parse_int",
    "read_csv",
    "read_json",
    "read_numeric_csv",
    "read_text",
    "strip_all",
    "take",
    "utf8_error",
    "utf8_errors",
    # One row per answer to padded annotations.
    "DUPLICATE_POLICIES",
    "build_annotations",
    "labels_from_answers",
    "resolve_duplicates",
    "sort_expert_names",
)

_ZIP_LIMITS = ("MAX_ZIP_MEMBER_BYTES", "MAX_ZIP_RATIO")


def __getattr__(name: str) -> Any:
  # The zip limits are read from ``_archives`` on every access, so a limit
  # changed there (as the tests do) is the one every loader sees.
  if name in _ZIP_LIMITS:
    return getattr(_archives, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
    "ship", "truck")


@dataclasses.dataclass(frozen=True, eq=False)
class AnnotatedDataset:
  """A pool of N images with model probabilities, true labels and annotations.

  Attributes:
    probs: ``[N, K]`` float32 model probabilities (rows sum to 1), or None when
      the data set ships no model (e.g. CIFAR-10S; pair it with
      ``load_model_probs``).
    labels: ``[N]`` int32 true labels in ``[0, K)``.
    annotations: ``Annotations`` over the same N images; images may have no
      annotation at all (their mask row is all False).
    class_names: K class names; index = label.
    expert_names: J expert (annotator) names as in the source file; index =
      expert id used in ``annotations.annotator``.
    name: short name of the data set.
    extras: further per-image arrays of the source (e.g. CIFAR-10N's
      ``aggre_label``), each ``[N]``.
  """

  probs: np.ndarray | None
  labels: np.ndarray
  annotations: Annotations
  class_names: tuple[str, ...]
  expert_names: tuple[str, ...]
  name: str
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    labels = self.labels
    _validation.check_ndim(labels, 1, "labels", "[num_images]")
    num_images = labels.shape[0]
    num_classes = len(self.class_names)
    _validation.check_labels(labels, num_classes, "labels")
    if self.annotations.num_images != num_images:
      raise ValueError(
          f"`annotations` cover {self.annotations.num_images} images but "
          f"`labels` has {num_images}.")
    if self.annotations.num_classes != num_classes:
      raise ValueError(
          f"`annotations` have {self.annotations.num_classes} classes but "
          f"`class_names` has {num_classes}.")
    if self.annotations.num_experts != len(self.expert_names):
      raise ValueError(
          f"`annotations` have {self.annotations.num_experts} experts but "
          f"`expert_names` has {len(self.expert_names)}.")
    if self.probs is not None:
      if tuple(self.probs.shape) != (num_images, num_classes):
        raise ValueError(
            f"`probs` must have shape [num_images, num_classes]=[{num_images}, "
            f"{num_classes}], got {tuple(self.probs.shape)}.")
      _validation.check_probabilities(self.probs, "probs")
    for key, value in self.extras.items():
      if np.shape(value)[:1] != (num_images,):
        raise ValueError(f"extras[{key!r}] must have leading dimension "
                         f"{num_images}, got shape {np.shape(value)}.")

  @property
  def num_images(self) -> int:
    """Number of images N."""
    return int(self.labels.shape[0])

  @property
  def num_classes(self) -> int:
    """Number of classes K."""
    return len(self.class_names)

  @property
  def num_experts(self) -> int:
    """Number of experts J."""
    return len(self.expert_names)


# ---------------------------------------------------------------------------
# Arguments.


def check_int(value: Any, name: str, *, minimum: int | None = 0) -> int:
  """``value`` as an ``int``: Python or numpy integers, never bools or floats.

  Raises:
    TypeError: not an integer (naming the argument).
    ValueError: below ``minimum``.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, numbers.Integral):
    raise TypeError(f"`{name}` must be an int, got {type(value).__name__} "
                    f"{value!r}.")
  if minimum is not None and value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return int(value)


# ---------------------------------------------------------------------------
# Probabilities.


def normalize_probs(
    probs: np.ndarray,
    *,
    source: str,
    atol: float = 1e-3,
) -> np.ndarray:
  """Checks rows of probabilities and renormalises them to sum exactly to 1.

  Args:
    probs: ``[N, K]`` probabilities.
    source: file or array name for error messages.
    atol: largest accepted deviation of a row sum from 1.

  Returns:
    ``[N, K]`` float32 rows that sum to 1.

  Raises:
    ValueError: NaN/inf, negative values, or a row sum off by more than
      ``atol`` (naming the first bad row, 0-based).
  """
  p = np.asarray(probs, dtype=np.float64)
  if p.ndim != 2:
    raise ValueError(f"{source}: probabilities must be [N, K], got shape "
                     f"{p.shape}.")
  if not np.all(np.isfinite(p)):
    bad = int(np.argwhere(~np.isfinite(p))[0, 0])
    raise ValueError(f"{source}: probabilities contain NaN or inf (row {bad}).")
  if p.size and p.min() < 0.0:
    bad = int(np.argwhere(p < 0.0)[0, 0])
    raise ValueError(f"{source}: negative probability in row {bad}.")
  with np.errstate(over="ignore"):
    sums = p.sum(axis=1)
  off = np.abs(sums - 1.0)
  if off.size and off.max() > atol:
    bad = int(np.argmax(off))
    raise ValueError(
        f"{source}: probability rows must sum to 1 (tolerance {atol}); row "
        f"{bad} sums to {sums[bad]:.6g}.")
  return (p / sums[:, None]).astype(np.float32)


def normalize_scores(scores: np.ndarray, *, source: str) -> np.ndarray:
  """Divides non-negative class scores by their row sums (float32).

  Raises:
    ValueError: NaN/inf, negative values, or a row summing to 0 or to more
      than the largest float (naming the row, 0-based).
  """
  s = np.asarray(scores, dtype=np.float64)
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{source}: class scores contain NaN or inf.")
  if s.size and s.min() < 0.0:
    bad = int(np.argwhere(s < 0.0)[0, 0])
    raise ValueError(f"{source}: negative class score in row {bad}.")
  with np.errstate(over="ignore"):
    sums = s.sum(axis=1)
  if sums.size and sums.min() <= 0.0:
    raise ValueError(f"{source}: class scores of row {int(np.argmin(sums))} "
                     "sum to 0; cannot normalise.")
  if not np.all(np.isfinite(sums)):
    bad = int(np.argmin(np.isfinite(sums)))
    raise ValueError(f"{source}: class scores of row {bad} overflow when "
                     "summed; cannot normalise.")
  return (s / sums[:, None]).astype(np.float32)


def check_label_array(
    labels: np.ndarray,
    *,
    num_images: int,
    num_classes: int,
    source: str,
) -> np.ndarray:
  """Returns ``labels`` as ``[num_images]`` int32 after range checks.

  Float arrays are accepted when every value is integral (e.g. a label column
  written as ``3.0``).

  Raises:
    ValueError: wrong shape, non-integral values or labels out of range.
  """
  y = np.asarray(labels)
  if y.shape != (num_images,):
    raise ValueError(f"{source}: labels must have shape [{num_images}], got "
                     f"{y.shape}.")
  if np.issubdtype(y.dtype, np.floating):
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
      raise ValueError(f"{source}: labels must be integers.")
  elif not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{source}: labels must be integers, got dtype {y.dtype}.")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    bad = int(np.argmax((y < 0) | (y >= num_classes)))
    raise ValueError(
        f"{source}: labels must lie in [0, {num_classes}); image {bad} has "
        f"label {y[bad]}.")
  return y.astype(np.int32)
