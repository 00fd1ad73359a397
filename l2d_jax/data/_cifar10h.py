"""CIFAR-10H: human labels of the 10,000 CIFAR-10 test images (Peterson et al.).

Two releases of github jcpeterson/cifar-10h:

- ``cifar10h-counts.npy``: ``[10000, 10]`` int64 counts of the human answers
  per image and class (47-63 answers per image, 511,000 in all), CIFAR-10 test
  order. :func:`load_cifar10h_counts`.
- ``cifar10h-raw.csv`` (inside ``data/cifar10h-raw.zip``): one row per trial
  of 2,571 Mechanical Turk annotators, each shown 200 test images and 10
  attention checks. :func:`load_cifar10h_raw` reads the columns
  ``annotator_id`` (integer id, not the Turk worker id), ``is_attn_check``
  (1 for an attention-check trial), ``cifar10_test_test_idx`` (CIFAR-10 test
  index; ``-99999`` for attention checks), ``true_label`` and
  ``chosen_label`` (0-9, CIFAR-10 class order); the other columns of the
  release (``trial_index``, ``image_filename``, ``true_category``,
  ``chosen_category``, ``correct_guess``, ``reaction_time``,
  ``time_elapsed``, ``subcategory``, ...) are ignored.

References:
  Peterson, Battleday, Griffiths, Russakovsky. Human uncertainty makes
  classification more robust. ICCV 2019.
"""

from __future__ import annotations

import pathlib

import numpy as np

from l2d_jax.data import _common

_NUM_IMAGES = 10_000
_NUM_CLASSES = 10
_RAW_COLUMNS = ("annotator_id", "is_attn_check", "cifar10_test_test_idx",
                "true_label", "chosen_label")
_TRUE = frozenset({"1", "1.0", "true", "yes"})
_FALSE = frozenset({"0", "0.0", "false", "no", ""})
_FLAGS = _TRUE | _FALSE


def load_cifar10h_counts(data_dir: _common.PathLike) -> np.ndarray:
  """Loads the aggregated CIFAR-10H counts.

  Args:
    data_dir: the data root holding ``cifar10h/cifar10h-counts.npy``.

  Returns:
    ``[10000, 10]`` int64 counts in CIFAR-10 test order.

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: an unreadable, truncated or pickled file, a wrong shape,
      or counts that are not non-negative integers within the int64 range.
  """
  path = pathlib.Path(data_dir) / "cifar10h" / "cifar10h-counts.npy"
  counts = _common.load_npy(path, "CIFAR-10H counts file")
  if counts.shape != (_NUM_IMAGES, _NUM_CLASSES):
    raise _common.DataFileError(path, f"expected shape ({_NUM_IMAGES}, "
                                f"{_NUM_CLASSES}), got {counts.shape}.")
  counts = _common.integer_array(counts, source=str(path), what="counts")
  if counts.min() < 0:
    bad = np.unravel_index(int(np.argmin(counts)), counts.shape)
    raise _common.DataFileError(path, "counts must be non-negative; index "
                                f"{tuple(map(int, bad))} holds "
                                f"{counts[bad]}.")
  return counts


def load_cifar10h_raw(
    path: _common.PathLike,
    *,
    num_images: int = _NUM_IMAGES,
    labels: np.ndarray | None = None,
    duplicates: str = "first",
) -> _common.AnnotatedDataset:
  """Reads the original per-annotator file ``cifar10h-raw.csv``.

  Attention-check rows (``is_attn_check`` = 1) and rows without a CIFAR-10
  test index (empty or negative, the release writes ``-99999``) are dropped.
  Each remaining row is one answer: image = ``cifar10_test_test_idx``,
  expert = ``annotator_id``, answer = ``chosen_label``; the image's truth is
  ``true_label``. Annotators left without any answer are excluded with a
  warning.

  Args:
    path: ``cifar10h-raw.csv``, or the release's ``cifar10h-raw.zip``.
    num_images: size of the image pool (test indices must be below it).
    labels: optional ``[num_images]`` true labels of the pool (e.g. from
      ``load_model_probs``); required when some image has no answer, and
      checked against ``true_label`` otherwise.
    duplicates: what to do when one annotator answered one image twice:
      ``"first"`` (default; keep the earliest row), ``"last"``, ``"all"`` or
      ``"error"``.

  Returns:
    ``AnnotatedDataset`` named ``"cifar10h"`` with ``probs=None``; expert
    names are the ``annotator_id`` values in numeric order.

  Raises:
    FileNotFoundError: the file is missing.
    ValueError: missing columns, a malformed row or a number outside the
      64-bit integer range (``DataFileError`` naming file and line), text
      that is not UTF-8, a damaged or oversized zip, labels outside 0-9, test
      indices outside the pool, or inconsistent true labels.
  """
  columns, lines = _common.read_csv(path, required=_RAW_COLUMNS,
                                    what="CIFAR-10H raw file")
  who = _common.strip_all(columns["annotator_id"])
  roster = set(who)
  if "" in roster:
    k = who.index("")
    raise _common.row_error(path, lines[k], "empty 'annotator_id'.")
  flag_of = {}
  for raw in set(columns["is_attn_check"]):
    flag = raw.strip().lower()
    if flag not in _FLAGS:
      k = columns["is_attn_check"].index(raw)
      raise _common.row_error(path, lines[k], "column 'is_attn_check' must be "
                              f"0 or 1, got {raw!r}.")
    flag_of[raw] = flag in _TRUE
  attention = np.fromiter(map(flag_of.__getitem__, columns["is_attn_check"]),
                          bool, len(lines))
  raw_idx = columns["cifar10_test_test_idx"]
  if any(not v.strip() for v in set(raw_idx)):
    raw_idx = [v if v.strip() else "-1" for v in raw_idx]
  idx = _common.int_column(raw_idx, lines, path=path,
                           column="cifar10_test_test_idx", allow_float=True)
  # Attention checks and rows without a test index are not answers.
  rows = np.flatnonzero(~attention & (idx >= 0))
  image = idx[rows]
  if image.size and image.max() >= num_images:
    k = rows[np.argmax(image >= num_images)]
    raise _common.row_error(path, lines[k], f"test index {idx[k]} is not in "
                            f"the pool of {num_images} images.")
  parsed = {}
  for key in ("true_label", "chosen_label"):
    value = _common.int_column(_common.take(columns[key], rows), lines[rows],
                               path=path, column=key, allow_float=True)
    bad = (value < 0) | (value >= _NUM_CLASSES)
    if np.any(bad):
      k = int(np.argmax(bad))
      raise _common.row_error(path, lines[rows[k]], f"{key} {value[k]} is not "
                              "a CIFAR-10 label in [0, 10).")
    parsed[key] = value
  truth, answer = parsed["true_label"], parsed["chosen_label"]
  annotator = _common.take(who, rows)
  if labels is not None:
    labels = _common.check_label_array(
        labels, num_images=num_images, num_classes=_NUM_CLASSES,
        source="`labels`")
  pool_labels = _common.labels_from_answers(
      image, truth, num_images=num_images, labels=labels, source=str(path))
  annotations, names = _common.build_annotations(
      image, annotator, answer, num_images=num_images,
      num_classes=_NUM_CLASSES, roster=roster, duplicates=duplicates,
      source=str(path))
  return _common.AnnotatedDataset(
      probs=None, labels=pool_labels, annotations=annotations,
      class_names=_common.CIFAR10_CLASSES, expert_names=names, name="cifar10h")
