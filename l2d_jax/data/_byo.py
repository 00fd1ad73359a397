"""Bring your own data: a small directory format for any annotated pool.

A directory holds:

- ``labels.npy``: ``[N]`` integer true labels in ``[0, K)`` (required).
- ``annotations.csv``: header ``image,annotator,answer``; one row per human
  answer: ``image`` an integer index into the N images, ``annotator`` any
  string id, ``answer`` an integer label (required; may have no rows).
- ``probs.npy``: ``[N, K]`` model probabilities, rows summing to 1 within
  1e-3 (optional).
- ``meta.json``: optional object with ``name`` (str), ``class_names`` (K
  strings) and ``expert_names`` (every annotator id, in expert-id order).
- ``extras.npz``: optional further ``[N, ...]`` arrays (no pickled objects).

K is taken from ``probs.npy`` or ``meta.json``'s ``class_names`` (one of the
two must be present). Arrays are read with ``allow_pickle=False``.
:func:`save_byo` writes any :class:`AnnotatedDataset` in this format, so a
loaded data set can be converted once and shared.

Example::

  labels.npy         array([3, 8, 8])
  annotations.csv    image,annotator,answer
                     0,alice,3
                     0,bob,5
                     2,alice,8
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from l2d_jax.data import _common

_COLUMNS = ("image", "annotator", "answer")


def load_byo(
    directory: _common.PathLike,
    *,
    duplicates: str = "first",
) -> _common.AnnotatedDataset:
  """Loads a data set in the bring-your-own format (see module doc).

  Args:
    directory: the data set directory.
    duplicates: ``"first"`` (default), ``"last"``, ``"all"`` or ``"error"``
      for several answers of one annotator on one image.

  Returns:
    ``AnnotatedDataset``; expert ids follow ``meta.json``'s ``expert_names``
    when given, else the sorted annotator ids (integers numerically).

  Raises:
    FileNotFoundError: ``labels.npy`` or ``annotations.csv`` is missing.
    ValueError: malformed rows (naming file and line), labels or answers out
      of range, images outside ``[0, N)``, probabilities not summing to 1, or
      an inconsistent ``meta.json``.
  """
  directory = pathlib.Path(directory)
  meta: dict = {}
  meta_path = directory / "meta.json"
  if meta_path.exists():
    meta = _common.read_json(meta_path, "meta.json")
    if not isinstance(meta, dict):
      raise ValueError(f"{meta_path}: expected a JSON object.")
  labels_path = directory / "labels.npy"
  labels = _common.load_npy(labels_path, "labels file")
  if labels.ndim != 1:
    raise ValueError(f"{labels_path}: labels must be [N], got shape "
                     f"{labels.shape}.")
  num_images = labels.shape[0]

  probs = None
  probs_path = directory / "probs.npy"
  if probs_path.exists():
    raw = _common.load_npy(probs_path, "probabilities file")
    if raw.ndim != 2 or raw.shape[0] != num_images:
      raise ValueError(f"{probs_path}: probabilities must be [N, K] with "
                       f"N={num_images}, got shape {raw.shape}.")
    probs = _common.normalize_probs(raw, source=str(probs_path))
  class_names = meta.get("class_names")
  if class_names is not None:
    if not (isinstance(class_names, list) and all(
        isinstance(c, str) for c in class_names)):
      raise ValueError(f"{meta_path}: 'class_names' must be a list of "
                       "strings.")
    class_names = tuple(class_names)
    if probs is not None and probs.shape[1] != len(class_names):
      raise ValueError(f"{meta_path}: {len(class_names)} class names but "
                       f"{probs_path} has {probs.shape[1]} classes.")
  elif probs is not None:
    class_names = tuple(str(k) for k in range(probs.shape[1]))
  else:
    raise ValueError(f"{directory}: the number of classes is unknown; add "
                     "probs.npy or 'class_names' in meta.json.")
  num_classes = len(class_names)
  labels = _common.check_label_array(labels, num_images=num_images,
                                     num_classes=num_classes,
                                     source=str(labels_path))
  expert_order = meta.get("expert_names")
  if expert_order is not None and not (isinstance(expert_order, list) and all(
      isinstance(e, str) for e in expert_order)):
    raise ValueError(f"{meta_path}: 'expert_names' must be a list of strings.")

  allowed = None if expert_order is None else frozenset(expert_order)
  ann_path = directory / "annotations.csv"
  columns, lines = _common.read_csv(ann_path, required=_COLUMNS,
                                    what="annotations file")
  image = _common.int_column(columns["image"], lines, path=ann_path,
                             column="image")
  answer = _common.int_column(columns["answer"], lines, path=ann_path,
                              column="answer")
  bad = (image < 0) | (image >= num_images)
  if np.any(bad):
    k = int(np.argmax(bad))
    raise _common.row_error(ann_path, lines[k], f"image {image[k]} is not in "
                            f"the pool of {num_images} images.")
  bad = (answer < 0) | (answer >= num_classes)
  if np.any(bad):
    k = int(np.argmax(bad))
    raise _common.row_error(ann_path, lines[k], f"answer {answer[k]} is not a "
                            f"label in [0, {num_classes}).")
  annotator = _common.strip_all(columns["annotator"])
  if "" in annotator:
    raise _common.row_error(ann_path, lines[annotator.index("")],
                            "empty 'annotator'.")
  if allowed is not None:
    for who, line in zip(annotator, lines.tolist()):
      if who not in allowed:
        raise _common.row_error(ann_path, line, f"annotator {who!r} is not in "
                                f"'expert_names' of {meta_path}.")
  annotations, names = _common.build_annotations(
      image, annotator, answer,
      num_images=num_images, num_classes=num_classes,
      expert_order=expert_order, duplicates=duplicates, source=str(ann_path))

  extras = {}
  extras_path = directory / "extras.npz"
  if extras_path.exists():
    with _common.load_npy(extras_path, "extras file") as arrays:
      extras = {key: arrays[key] for key in arrays.files}
  return _common.AnnotatedDataset(
      probs=probs, labels=labels, annotations=annotations,
      class_names=class_names, expert_names=names,
      name=str(meta.get("name", directory.name)), extras=extras)


def save_byo(
    dataset: _common.AnnotatedDataset,
    directory: _common.PathLike,
) -> pathlib.Path:
  """Writes ``dataset`` in the bring-your-own format (see module doc).

  Masked-out answers are not written. ``load_byo`` on the result gives back
  the same probabilities (renormalised float32), labels, answers, class and
  expert names.

  Args:
    dataset: the data set to write.
    directory: target directory (created if needed; files are overwritten).

  Returns:
    The directory as a ``Path``.

  Example:
    >>> save_byo(load_cifar10s(data_dir), "/tmp/cifar10s_byo")  # doctest: +SKIP
    >>> load_byo("/tmp/cifar10s_byo").num_experts  # doctest: +SKIP
    248
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  np.save(directory / "labels.npy", np.asarray(dataset.labels, np.int64),
          allow_pickle=False)
  probs_path = directory / "probs.npy"
  if dataset.probs is not None:
    np.save(probs_path, np.asarray(dataset.probs, np.float32),
            allow_pickle=False)
  elif probs_path.exists():
    probs_path.unlink()
  image, expert, answer = dataset.annotations.to_long()
  with open(directory / "annotations.csv", "w", newline="",
            encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(_COLUMNS)
    names = dataset.expert_names
    for i, j, a in zip(image.tolist(), expert.tolist(), answer.tolist()):
      writer.writerow((i, names[j], a))
  meta = {"name": dataset.name, "class_names": list(dataset.class_names),
          "expert_names": list(dataset.expert_names)}
  with open(directory / "meta.json", "w", encoding="utf-8") as handle:
    json.dump(meta, handle, indent=1)
  extras_path = directory / "extras.npz"
  if dataset.extras:
    np.savez(extras_path, **{k: np.asarray(v) for k, v in
                             dataset.extras.items()})
  elif extras_path.exists():
    extras_path.unlink()
  return directory
