"""ImageNet-16H: 1,200 noisy ImageNet images in 16 classes (Steyvers et al., 2022).

Model side (``imagenet16h_model_preds/``, github
Networks-Learning/towards-human-ai-complementarity-predictions-sets):
``vgg19_epoch10_preds_noise110.csv`` has a header with an unnamed index
column, ``image_name``, ``noise_type``, ``noise_level``, ``category`` (true
class), ``model_name``, ``model_pred``, ``correct`` and one score column per
class; ``label_to_int_mapping.json`` maps the 16 class names to 0-15. The 16
scores of a row do not sum to 1 (they are the model's ImageNet-1k softmax mass
on the classes); they are divided by their sum. The OSF release's
``hai_epoch10_model_preds_max_normalized.csv`` has the same columns with every
model and noise level; filter it with ``model_name=`` and ``noise_level=``.

Human side (OSF project 2ntrf, ``Behavioral Data/
human_only_classification_6per_img_export.csv``; not shipped here): one row
per trial with, among others, ``worker_id`` and ``participant_id`` (one per
participant), ``image_name``, ``image_category`` (true class name),
``noise_level`` (phase noise ω: 80, 95, 110 or 125),
``participant_classification`` (the answered class name), ``confidence`` and
``correct``. 145 participants; each image has 6-7 answers per noise level.

The conformal-deferral paper (Bary et al.) uses human answers at ω = 95 and
model predictions on noise-free images (ω = 0); the only model file available
offline is at ω = 110, so :func:`load_imagenet16h` pairs humans at
``noise_level`` (default 95) with that file.

References:
  Steyvers, Tejeda, Kerrigan, Smyth. Bayesian modeling of human-AI
  complementarity. PNAS 2022.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from l2d_jax.data import _common
from l2d_jax.experts._annotations import Annotations

MODEL_PREDS_FILE = "vgg19_epoch10_preds_noise110.csv"
_FOLDER = "imagenet16h_model_preds"
_HUMAN_COLUMNS = ("image_name", "image_category", "noise_level",
                  "participant_classification")


def _noise(value: str, *, path, line: int) -> int:
  return _common.parse_int(value, path=path, line=line, column="noise_level",
                           allow_float=True)


def load_imagenet16h_classes(data_dir: _common.PathLike) -> tuple[str, ...]:
  """Class names in label order from ``label_to_int_mapping.json``.

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: invalid JSON (not UTF-8, a syntax error, nested too
      deeply) or a mapping that is not a bijection onto ``0..K-1``.
  """
  path = pathlib.Path(data_dir) / _FOLDER / "label_to_int_mapping.json"
  mapping = _common.read_json(path, "ImageNet-16H class mapping")
  if not isinstance(mapping, dict) or not all(
      isinstance(v, int) and not isinstance(v, bool)
      for v in mapping.values()):
    raise _common.DataFileError(path, "expected an object of class name -> "
                                "integer.")
  if sorted(mapping.values()) != list(range(len(mapping))):
    raise _common.DataFileError(
        path, f"class indices must be 0..{len(mapping) - 1} once each, got "
        f"{sorted(mapping.values())[:20]}.")
  return tuple(sorted(mapping, key=mapping.get))


def load_imagenet16h_model_preds(
    data_dir: _common.PathLike,
    *,
    filename: str = MODEL_PREDS_FILE,
    noise_level: int | None = None,
    model_name: str | None = None,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, tuple[str, ...]]:
  """Loads model class scores on the ImageNet-16H images, normalised.

  Args:
    data_dir: the data root holding ``imagenet16h_model_preds/``.
    filename: CSV file inside that folder.
    noise_level: keep only rows at this phase-noise level (None: all rows).
    model_name: keep only rows of this model (None: all rows).

  Returns:
    ``(image_names, probs, labels, class_names)``: N image names in file
    order, ``[N, 16]`` float32 probabilities (scores divided by their row
    sum), ``[N]`` int32 true labels, and the 16 class names in label order.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a malformed row (naming file and line), text that is not
      UTF-8, an unknown category, negative, infinite or overflowing scores,
      no rows left after filtering, or one image on several rows (pass
      ``noise_level``/``model_name`` to select one).
  """
  class_names = load_imagenet16h_classes(data_dir)
  index = {name: k for k, name in enumerate(class_names)}
  path = pathlib.Path(data_dir) / _FOLDER / filename
  required = ["image_name", "category", *class_names]
  if noise_level is not None:
    required.append("noise_level")
  if model_name is not None:
    required.append("model_name")
  columns, lines = _common.read_csv(path, required=required,
                                    what="ImageNet-16H model predictions")
  keep = np.ones(len(lines), bool)
  if noise_level is not None:
    levels = _common.int_column(columns["noise_level"], lines, path=path,
                                column="noise_level", allow_float=True)
    keep &= levels == noise_level
  if model_name is not None:
    keep &= np.asarray(_common.strip_all(columns["model_name"])) == model_name
  rows = np.flatnonzero(keep)
  lines = lines[rows]
  names = _common.strip_all(_common.take(columns["image_name"], rows))
  labels = []
  for category, line in zip(_common.take(columns["category"], rows),
                            lines.tolist()):
    if category.strip() not in index:
      raise _common.row_error(path, line, f"category {category!r} is not one "
                              f"of the classes {class_names}.")
    labels.append(index[category.strip()])
  scores = np.zeros((len(rows), len(class_names)))
  for k, name in enumerate(class_names):
    try:
      scores[:, k] = np.asarray(_common.take(columns[name], rows), np.float64)
    except ValueError:
      for text, line in zip(_common.take(columns[name], rows), lines.tolist()):
        try:
          float(text)
        except ValueError:
          raise _common.row_error(path, line, f"class score {name!r} is not a "
                                  f"number: {text[:60]!r}.") from None
      raise _common.DataFileError(path, f"class score column {name!r} must "
                                  "hold numbers.") from None
  with np.errstate(over="ignore", invalid="ignore"):
    sums = scores.sum(1)
  bad = ~np.all(np.isfinite(scores), 1) | (scores.min(1, initial=0.0) < 0.0)
  bad |= ~((sums > 0.0) & np.isfinite(sums))
  if np.any(bad):
    raise _common.row_error(path, lines[np.argmax(bad)], "class scores must be "
                            "finite, non-negative, not all 0, and sum to a "
                            "finite number.")
  if not names:
    raise ValueError(f"{path}: no rows (noise_level={noise_level}, "
                     f"model_name={model_name!r}).")
  seen: dict[str, int] = {}
  for name, line in zip(names, lines.tolist()):
    if name in seen:
      raise _common.row_error(
          path, line, f"image {name!r} already appeared on line {seen[name]}; "
          "select one noise level and model with `noise_level=` and "
          "`model_name=`.")
    seen[name] = line
  probs = _common.normalize_scores(scores, source=str(path))
  return tuple(names), probs, np.asarray(labels, np.int32), class_names


def load_imagenet16h_human(
    path: _common.PathLike,
    *,
    image_names: Sequence[str],
    class_names: Sequence[str],
    noise_level: int | None = 95,
    labels: np.ndarray | None = None,
    annotator_column: str = "worker_id",
    duplicates: str = "first",
) -> tuple[Annotations, tuple[str, ...]]:
  """Reads the ImageNet-16H human answers, aligned with ``image_names``.

  Args:
    path: ``human_only_classification_6per_img_export.csv`` (or a ``.zip``
      holding it).
    image_names: the N images of the pool (e.g. from
      :func:`load_imagenet16h_model_preds`); annotation row i of the result is
      image ``image_names[i]``.
    class_names: the K class names in label order; ``image_category`` and
      ``participant_classification`` are matched to them case-insensitively.
    noise_level: keep the answers at this phase-noise level (the paper: 95);
      None keeps every level (one image then has several answers of one
      participant, see ``duplicates``).
    labels: optional ``[N]`` true labels; ``image_category`` must agree.
    annotator_column: column identifying the expert (``"worker_id"`` or
      ``"participant_id"``).
    duplicates: ``"first"`` (default), ``"last"``, ``"all"`` or ``"error"``
      for repeated answers of one participant on one image.

  Returns:
    ``(annotations, expert_names)``: ``Annotations`` over the N images and K
    classes, and the expert names (sorted ids of ``annotator_column``).
    Participants without any answer at ``noise_level`` are excluded with a
    warning.

  Raises:
    FileNotFoundError: the file is missing.
    ValueError: missing columns, a malformed row (naming file and line), text
      that is not UTF-8, a damaged or oversized zip, an unknown class name,
      an image not in ``image_names``, or a true label disagreeing with
      ``labels``.
  """
  index = {name.strip().lower(): k for k, name in enumerate(class_names)}
  pool = {name: i for i, name in enumerate(image_names)}
  if len(pool) != len(image_names):
    raise ValueError("`image_names` must be unique.")
  columns, lines = _common.read_csv(
      path, required=(*_HUMAN_COLUMNS, annotator_column),
      what="ImageNet-16H human answers")
  who = _common.strip_all(columns[annotator_column])
  roster = set(who)
  if "" in roster:
    raise _common.row_error(path, lines[who.index("")],
                            f"empty {annotator_column!r}.")
  rows = np.arange(len(lines))
  if noise_level is not None:
    levels = _common.int_column(columns["noise_level"], lines, path=path,
                                column="noise_level", allow_float=True)
    rows = np.flatnonzero(levels == noise_level)
  image, annotator, answer, truth = [], [], [], []
  for k in rows.tolist():
    line = int(lines[k])
    name = columns["image_name"][k].strip()
    if name not in pool:
      raise _common.row_error(path, line, f"image {name!r} is not in the pool "
                              f"of {len(pool)} images.")
    values = []
    for col in ("image_category", "participant_classification"):
      key = columns[col][k].strip().lower()
      if key not in index:
        raise _common.row_error(path, line, f"{col} {columns[col][k]!r} is not "
                                f"one of the classes {tuple(class_names)}.")
      values.append(index[key])
    image.append(pool[name])
    annotator.append(who[k])
    truth.append(values[0])
    answer.append(values[1])
  image = np.asarray(image, np.int64)
  num_images = len(pool)
  if labels is not None:
    labels = _common.check_label_array(labels, num_images=num_images,
                                       num_classes=len(index),
                                       source="`labels`")
    _common.labels_from_answers(image, np.asarray(truth, np.int64),
                                num_images=num_images, labels=labels,
                                source=str(path))
  return _common.build_annotations(
      image, annotator, np.asarray(answer, np.int64), num_images=num_images,
      num_classes=len(index), roster=roster, duplicates=duplicates,
      source=str(path))


def load_imagenet16h(
    data_dir: _common.PathLike,
    *,
    human_csv: _common.PathLike | None,
    noise_level: int = 95,
    model_file: str = MODEL_PREDS_FILE,
    annotator_column: str = "worker_id",
    duplicates: str = "first",
) -> _common.AnnotatedDataset:
  """Loads ImageNet-16H: model probabilities plus human answers.

  Humans are read at ``noise_level`` (default ω = 95, the conformal-deferral
  paper's choice); the model probabilities come from ``model_file`` (the
  offline copy is VGG-19 after 10 fine-tuning epochs at ω = 110; the paper
  used its own models on noise-free images).

  Args:
    data_dir: the data root holding ``imagenet16h_model_preds/``.
    human_csv: the OSF human-answer CSV; None gives a data set without
      annotations (zero experts), e.g. for simulated experts.
    noise_level: phase-noise level of the human answers.
    model_file: model CSV inside ``imagenet16h_model_preds/``.
    annotator_column: ``"worker_id"`` or ``"participant_id"``.
    duplicates: policy for repeated answers (see
      :func:`load_imagenet16h_human`).

  Returns:
    ``AnnotatedDataset`` named ``"imagenet16h"`` over the 1,200 images in
    model-file order, with ``extras["image_name"]``.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: malformed files (see the two loaders above).
  """
  names, probs, labels, classes = load_imagenet16h_model_preds(
      data_dir, filename=model_file)
  if human_csv is None:
    annotations = Annotations.from_long(
        np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32),
        num_images=len(names), num_experts=0, num_classes=len(classes))
    experts: tuple[str, ...] = ()
  else:
    annotations, experts = load_imagenet16h_human(
        human_csv, image_names=names, class_names=classes,
        noise_level=noise_level, labels=labels,
        annotator_column=annotator_column, duplicates=duplicates)
  return _common.AnnotatedDataset(
      probs=probs, labels=labels, annotations=annotations, class_names=classes,
      expert_names=experts, name="imagenet16h",
      extras={"image_name": np.asarray(names)})
