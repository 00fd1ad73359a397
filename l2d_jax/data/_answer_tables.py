"""From one row per answer (image, annotator, label) to padded ``Annotations``."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from l2d_jax.experts._annotations import Annotations

DUPLICATE_POLICIES: tuple[str, ...] = ("first", "last", "all", "error")


def _id_sort_key(name: str) -> tuple[int, int, str]:
  try:
    return (0, int(name), "")
  except ValueError:
    return (1, 0, name)


def sort_expert_names(names: Iterable[str]) -> tuple[str, ...]:
  """Unique names, integers in numeric order first, then other strings."""
  return tuple(sorted(set(names), key=_id_sort_key))


def resolve_duplicates(
    image: np.ndarray,
    expert: np.ndarray,
    *,
    duplicates: str,
    source: str,
) -> np.ndarray:
  """Indices of the answers to keep when an expert answered an image twice.

  Args:
    image: ``[n]`` image index of each answer, in source order.
    expert: ``[n]`` expert id of each answer.
    duplicates: ``"first"`` keeps the earliest answer of each (image,
      expert) pair, ``"last"`` the latest, ``"all"`` keeps every answer and
      ``"error"`` raises.
    source: file name for messages.

  Returns:
    Sorted ``[n_kept]`` indices into the inputs.

  Raises:
    ValueError: unknown policy, or a duplicate under ``"error"``.
  """
  if duplicates not in DUPLICATE_POLICIES:
    raise ValueError(f"`duplicates` must be one of {DUPLICATE_POLICIES}, got "
                     f"{duplicates!r}.")
  n = image.shape[0]
  if duplicates == "all" or n == 0:
    return np.arange(n)
  key = image.astype(np.int64) * (int(expert.max()) + 1) + expert
  if duplicates == "last":
    _, rev_first = np.unique(key[::-1], return_index=True)
    keep = n - 1 - rev_first
  else:
    _, keep = np.unique(key, return_index=True)
  if duplicates == "error" and keep.size < n:
    dup = np.setdiff1d(np.arange(n), keep)[0]
    raise ValueError(
        f"{source}: expert {int(expert[dup])} answered image "
        f"{int(image[dup])} more than once (pass duplicates='first', 'last' "
        "or 'all').")
  return np.sort(keep)


def build_annotations(
    image: np.ndarray,
    annotator: Sequence[str],
    answer: np.ndarray,
    *,
    num_images: int,
    num_classes: int,
    roster: Sequence[str] | None = None,
    expert_order: Sequence[str] | None = None,
    duplicates: str = "first",
    source: str,
) -> tuple[Annotations, tuple[str, ...]]:
  """Builds padded ``Annotations`` from one row per answer with named experts.

  Expert ids are assigned in :func:`sort_expert_names` order (or in
  ``expert_order``) over the experts that have at least one usable answer.
  Experts of ``roster`` (everyone seen in the source, e.g. before attention
  checks or a noise filter were applied) without any usable answer are
  excluded with a warning, following ``l2d_jax.experts.warn_unusable_experts``.

  Args:
    image: ``[n]`` image index of each answer.
    annotator: ``n`` annotator names.
    answer: ``[n]`` answered labels.
    num_images: size of the image pool N.
    num_classes: number of classes K.
    roster: all annotator names of the source; defaults to ``annotator``.
    expert_order: optional ordered list of every allowed annotator name; it
      fixes the expert ids and is also the roster.
    duplicates: policy for several answers of one expert on one image (see
      :func:`resolve_duplicates`).
    source: file name for messages.

  Returns:
    ``(annotations, expert_names)``.

  Raises:
    ValueError: images or answers out of range, or duplicates under
      ``"error"``.
  """
  image = np.asarray(image, dtype=np.int64).reshape(-1)
  answer = np.asarray(answer, dtype=np.int64).reshape(-1)
  annotator = list(annotator)
  if not image.shape[0] == len(annotator) == answer.shape[0]:
    raise ValueError(f"{source}: image, annotator and answer columns differ in "
                     "length.")
  if image.size and (image.min() < 0 or image.max() >= num_images):
    bad = int(np.argmax((image < 0) | (image >= num_images)))
    raise ValueError(f"{source}: annotation for image {image[bad]}, which is "
                     f"not in the pool of {num_images} images.")
  if answer.size and (answer.min() < 0 or answer.max() >= num_classes):
    bad = int(np.argmax((answer < 0) | (answer >= num_classes)))
    raise ValueError(f"{source}: answer {answer[bad]} is not a label in "
                     f"[0, {num_classes}).")
  names = sort_expert_names(annotator)
  if expert_order is not None:
    order = list(expert_order)
    if len(set(order)) != len(order):
      raise ValueError(f"{source}: expert names must be unique.")
    unknown = set(names) - set(order)
    if unknown:
      raise ValueError(f"{source}: annotators {sorted(unknown)[:3]} are not in "
                       "the list of experts.")
    present = set(names)
    names = tuple(name for name in order if name in present)
    roster = order
  if roster is not None:
    unusable = set(roster) - set(names)
    if unusable:
      warnings.warn(
          f"{source}: {len(unusable)} of {len(set(roster))} annotators have "
          "no usable answers and are excluded (e.g. "
          f"{sorted(unusable, key=_id_sort_key)[:3]}).", stacklevel=3)
  index = {name: j for j, name in enumerate(names)}
  expert = np.fromiter(map(index.__getitem__, annotator), dtype=np.int64,
                       count=len(annotator))
  keep = resolve_duplicates(image, expert, duplicates=duplicates,
                            source=source)
  annotations = Annotations.from_long(
      image[keep].astype(np.int32), expert[keep].astype(np.int32),
      answer[keep].astype(np.int32), num_images=num_images,
      num_experts=len(names), num_classes=num_classes)
  return annotations, names


def labels_from_answers(
    image: np.ndarray,
    truth: np.ndarray,
    *,
    num_images: int,
    labels: np.ndarray | None,
    source: str,
) -> np.ndarray:
  """Per-image true labels from a per-answer truth column.

  Args:
    image: ``[n]`` image index of each answer.
    truth: ``[n]`` true label recorded with each answer.
    num_images: N.
    labels: optional ``[N]`` labels of the whole pool; when given, the truth
      column must agree with it.
    source: file name for messages.

  Returns:
    ``[N]`` int32 labels.

  Raises:
    ValueError: one image with two different true labels, a disagreement
      with ``labels``, or (without ``labels``) images with no answer.
  """
  image = np.asarray(image, dtype=np.int64)
  truth = np.asarray(truth, dtype=np.int64)
  out = np.full(num_images, -1, np.int64)
  out[image] = truth
  clash = out[image] != truth
  if np.any(clash):
    bad = int(image[np.argmax(clash)])
    raise ValueError(f"{source}: image {bad} is recorded with two different "
                     "true labels.")
  if labels is not None:
    ref = np.asarray(labels)
    wrong = ref[image] != truth
    if np.any(wrong):
      k = int(np.argmax(wrong))
      raise ValueError(
          f"{source}: true label {truth[k]} of image {image[k]} disagrees with "
          f"the given labels ({ref[image[k]]}); {int(wrong.sum())} answers "
          "disagree.")
    return ref.astype(np.int32)
  missing = np.flatnonzero(out < 0)
  if missing.size:
    raise ValueError(
        f"{source}: {missing.size} of {num_images} images have no answer, so "
        f"their true label is unknown (e.g. image {missing[0]}); pass "
        "`labels` for the whole pool.")
  return out.astype(np.int32)
