"""CIFAR-10S: per-annotator answers on 1,000 CIFAR-10 test images (Collins et al.).

``cifar10s/raw_human_data.csv`` (github cambridge-mlg/cifar-10s) is a jsPsych
export with one row per jsPsych trial. The loader keeps the rows whose
``task`` is ``spec_conf`` (the main trials) or ``rerun_spec_conf`` (each
annotator sees two of its images again) and reads:

- ``subject``: annotator id;
- ``img_id``: CIFAR-10 **test** index written as a float (``"1128.0"``);
- ``response``: JSON whose ``classSelect`` is ``"mostProb<Class>"``, the
  annotator's most probable class (its top-1 answer); the second class and
  the probabilities it also holds are not used here;
- ``label``: the image's true class name (capitalised CIFAR-10 name).

Duplicates: an annotator can answer one image more than once: the two
``rerun_spec_conf`` trials of each annotator repeat earlier images (498
rows; the rerun answer differs from the first on 34 pairs), and one
annotator's whole session is exported twice. By default the first answer in
file order (the original ``spec_conf`` trial) is kept, so that every expert
contributes at most one answer per image, as the confusion-matrix estimates
assume; ``duplicates="all"`` keeps every row.

References:
  Collins, Bhatt, Weller. Eliciting and Learning with Soft Labels from Every
  Annotator. HCOMP 2022.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from l2d_jax.data import _common
from l2d_jax.data import _model_probs

_NUM_IMAGES = 10_000
_TASKS = frozenset({"spec_conf", "rerun_spec_conf"})
_COLUMNS = ("subject", "task", "response", "label", "img_id")
_PREFIX = "mostprob"
_CLASS_INDEX = {name: k for k, name in enumerate(_common.CIFAR10_CLASSES)}
_LABELS_MODEL = "densenet-bc-L190-k40"


def _class_index(name: str, *, path, line: int, what: str) -> int:
  key = name.strip().lower()
  if key not in _CLASS_INDEX:
    raise _common.row_error(path, line, f"{what} {name!r} is not a CIFAR-10 "
                            f"class {_common.CIFAR10_CLASSES}.")
  return _CLASS_INDEX[key]


def load_cifar10s(
    data_dir: _common.PathLike,
    *,
    labels: np.ndarray | None = None,
    model: str | None = None,
    duplicates: str = "first",
) -> _common.AnnotatedDataset:
  """Loads CIFAR-10S as annotations over the 10,000 CIFAR-10 test images.

  Only about 1,000 images have answers; the others have an empty mask row.
  True labels of all 10,000 images come from ``labels``, else from the
  model-probabilities CSV (column 0, CIFAR-10 test order) of ``model`` or,
  without a model, of ``densenet-bc-L190-k40``; the CIFAR-10S ``label`` column
  must agree with them.

  Args:
    data_dir: the data root holding ``cifar10s/`` (and
      ``cifar10h_model_probs/`` unless ``labels`` is given).
    labels: optional ``[10000]`` true labels in CIFAR-10 test order.
    model: optional model of ``MODEL_NAMES`` whose probabilities fill
      ``probs``; ``None`` gives ``probs=None``.
    duplicates: ``"first"`` (default), ``"last"``, ``"all"`` or ``"error"``
      for repeated answers of one annotator on one image (see module doc).

  Returns:
    ``AnnotatedDataset`` named ``"cifar10s"``; expert names are the
    ``subject`` ids in sorted order.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a malformed row or response JSON (naming file and line), text
      that is not UTF-8, an unknown class name, an image index outside
      0-9999, or a ``label`` disagreeing with the CIFAR-10 labels.

  Example:
    >>> ds = load_cifar10s(data_dir, model="densenet-bc-L190-k40")  # doctest: +SKIP
    >>> ds.num_experts, int(ds.annotations.mask.any(1).sum())  # doctest: +SKIP
    (248, 1000)
  """
  data_dir = pathlib.Path(data_dir)
  probs = None
  if model is not None:
    probs, model_labels, _ = _model_probs.load_model_probs(data_dir, model)
    if labels is None:
      labels = model_labels
  if labels is None:
    labels = _model_probs.load_model_probs(data_dir, _LABELS_MODEL)[1]
  labels = _common.check_label_array(
      labels, num_images=_NUM_IMAGES, num_classes=10, source="CIFAR-10 labels")

  path = data_dir / "cifar10s" / "raw_human_data.csv"
  columns, lines = _common.read_csv(path, required=_COLUMNS,
                                    what="CIFAR-10S raw file")
  subjects = _common.strip_all(columns["subject"])
  roster = set(subjects) - {""}
  rows = [k for k, task in enumerate(columns["task"]) if task.strip() in _TASKS]
  image, annotator, answer, truth = [], [], [], []
  for k in rows:
    line = int(lines[k])
    subject = subjects[k]
    if not subject:
      raise _common.row_error(path, line, "empty 'subject'.")
    idx = _common.parse_int(columns["img_id"][k], path=path, line=line,
                            column="img_id", allow_float=True)
    if not 0 <= idx < _NUM_IMAGES:
      raise _common.row_error(path, line, f"img_id {idx} is not a CIFAR-10 "
                              f"test index in [0, {_NUM_IMAGES}).")
    text = columns["response"][k]
    try:
      choice = json.loads(text)["classSelect"]
    except (ValueError, KeyError, TypeError, RecursionError):
      raise _common.row_error(path, line, "column 'response' must be JSON with "
                              f"a 'classSelect' entry, got {text[:60]!r}."
                              ) from None
    if not (isinstance(choice, str) and choice.lower().startswith(_PREFIX)):
      raise _common.row_error(path, line, "'classSelect' must look like "
                              f"'mostProb<Class>', got {choice!r}.")
    answer.append(_class_index(choice[len(_PREFIX):], path=path, line=line,
                               what="answered class"))
    truth.append(_class_index(columns["label"][k], path=path, line=line,
                              what="label"))
    image.append(idx)
    annotator.append(subject)
  image = np.asarray(image, np.int64)
  labels = _common.labels_from_answers(
      image, np.asarray(truth, np.int64), num_images=_NUM_IMAGES, labels=labels,
      source=str(path))
  annotations, names = _common.build_annotations(
      image, annotator, np.asarray(answer, np.int64), num_images=_NUM_IMAGES,
      num_classes=10, roster=roster, duplicates=duplicates, source=str(path))
  return _common.AnnotatedDataset(
      probs=probs, labels=labels, annotations=annotations,
      class_names=_common.CIFAR10_CLASSES, expert_names=names, name="cifar10s")
