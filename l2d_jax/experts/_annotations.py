"""One data model for human (or simulated) annotations of a pool of images.

Annotations are ragged (each image has its own number of annotators); they are
stored padded to ``[num_images, max_annotations]`` with a boolean mask so that
every computation over them has static shapes and compiles once.
"""

from __future__ import annotations

import warnings

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


@flax.struct.dataclass
class Annotations:
  """Padded per-image annotations.

  Attributes:
    annotator: ``[num_images, max_annotations]`` int32 expert ids in
      ``[0, num_experts)`` (0 where padded).
    answer: ``[num_images, max_annotations]`` int32 answered labels in
      ``[0, num_classes)`` (0 where padded).
    mask: ``[num_images, max_annotations]`` bool, True for a real annotation.
    num_experts: number of experts J (static).
    num_classes: number of classes K (static).
  """

  annotator: jax.Array
  answer: jax.Array
  mask: jax.Array
  num_experts: int = flax.struct.field(pytree_node=False)
  num_classes: int = flax.struct.field(pytree_node=False)

  @property
  def num_images(self) -> int:
    return self.annotator.shape[0]

  @property
  def max_annotations(self) -> int:
    return self.annotator.shape[1]

  @classmethod
  def from_long(
      cls,
      image: np.ndarray,
      annotator: np.ndarray,
      answer: np.ndarray,
      *,
      num_images: int,
      num_experts: int,
      num_classes: int,
      max_annotations: int | None = None,
  ) -> "Annotations":
    """Builds padded annotations from one row per answer (numpy, not jitted).

    Args:
      image: ``[n_answers]`` image index in ``[0, num_images)``.
      annotator: ``[n_answers]`` expert id in ``[0, num_experts)``.
      answer: ``[n_answers]`` answered label in ``[0, num_classes)``.
      num_images: size of the image pool N.
      num_experts: number of experts J.
      num_classes: number of classes K.
      max_annotations: pad width; defaults to the largest number of answers
        of one image (at least 1).

    Returns:
      ``Annotations`` whose rows follow image order; within an image, answers
      keep their input order.

    Raises:
      ValueError: mismatched lengths, or ids/labels/images out of range.
    """
    image = np.asarray(image)
    annotator = np.asarray(annotator)
    answer = np.asarray(answer)
    for name, arr in (("image", image), ("annotator", annotator),
                      ("answer", answer)):
      if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D [n_answers], got shape "
                         f"{arr.shape}.")
      _validation.check_integer(arr, name)
    if not image.shape == annotator.shape == answer.shape:
      raise ValueError(
          "`image`, `annotator` and `answer` must have the same length, got "
          f"{image.shape[0]}, {annotator.shape[0]}, {answer.shape[0]}.")
    _validation.check_labels(image, num_images, "image")
    _validation.check_labels(annotator, num_experts, "annotator")
    _validation.check_labels(answer, num_classes, "answer")
    counts = np.bincount(image, minlength=num_images)
    width = int(counts.max()) if counts.size else 0
    if max_annotations is None:
      max_annotations = max(width, 1)
    elif width > max_annotations:
      raise ValueError(f"`max_annotations`={max_annotations} is smaller than "
                       f"the largest number of answers of one image ({width}).")
    order = np.argsort(image, kind="stable")
    img_sorted = image[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(image.shape[0]) - starts[img_sorted]
    shape = (num_images, max_annotations)
    ann = np.zeros(shape, np.int32)
    ans = np.zeros(shape, np.int32)
    mask = np.zeros(shape, bool)
    ann[img_sorted, slot] = annotator[order]
    ans[img_sorted, slot] = answer[order]
    mask[img_sorted, slot] = True
    return cls(annotator=jnp.asarray(ann), answer=jnp.asarray(ans),
               mask=jnp.asarray(mask), num_experts=int(num_experts),
               num_classes=int(num_classes))

  def to_long(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(image, annotator, answer)`` numpy arrays, one row per answer."""
    mask = np.asarray(self.mask)
    img, _ = np.nonzero(mask)
    return (img.astype(np.int32), np.asarray(self.annotator)[mask],
            np.asarray(self.answer)[mask])

  def with_mask(self, mask: jax.Array) -> "Annotations":
    """Returns a copy whose mask is ``self.mask & mask``."""
    chex.assert_shape(mask, self.mask.shape)
    return self.replace(mask=jnp.logical_and(self.mask, mask))

  def select_images(self, index: np.ndarray) -> "Annotations":
    """Returns the annotations of the images ``index`` (in that order)."""
    return self.replace(annotator=self.annotator[index],
                        answer=self.answer[index], mask=self.mask[index])


def _check_labels_for(annotations: Annotations, labels: jax.Array) -> None:
  _validation.check_ndim(labels, 1, "labels", "[num_images]")
  if labels.shape[0] != annotations.num_images:
    raise ValueError(
        f"`labels` must have shape [num_images]=[{annotations.num_images}], "
        f"got {tuple(labels.shape)}.")
  _validation.check_labels(labels, annotations.num_classes, "labels")


def confusion_matrices(
    annotations: Annotations,
    labels: jax.Array,
    *,
    image_mask: jax.Array | None = None,
) -> jax.Array:
  """Per-expert confusion matrices from annotations.

  Under jit, where values cannot be checked, an answer whose expert id, true
  label or answered label lies outside ``[0, J)`` / ``[0, K)`` is dropped
  (counted nowhere), never attributed to another expert or class.

  Args:
    annotations: padded annotations of N images.
    labels: ``[N]`` true labels.
    image_mask: optional ``[N]`` bool; only these images' answers count.

  Returns:
    ``[J, K, K]`` int32 counts; ``C[j, y, m]`` = number of images with true
    label ``y`` that expert ``j`` answered ``m`` (rows = truth, columns =
    the expert's answer).

  Raises:
    ValueError: ``labels`` of the wrong shape; labels, expert ids or answers
      of real annotations out of range (when concrete).
  """
  _check_labels_for(annotations, labels)
  num_j, num_k = annotations.num_experts, annotations.num_classes
  mask = annotations.mask
  _validation.check_index_range(annotations.annotator, num_j,
                                "annotations.annotator", where=mask)
  _validation.check_index_range(annotations.answer, num_k,
                                "annotations.answer", where=mask)
  if image_mask is not None:
    chex.assert_shape(image_mask, (annotations.num_images,))
    mask = jnp.logical_and(mask, image_mask[:, None])
  y = jnp.broadcast_to(jnp.asarray(labels)[:, None], annotations.answer.shape)
  a, m = annotations.annotator, annotations.answer
  in_range = ((a >= 0) & (a < num_j) & (y >= 0) & (y < num_k) & (m >= 0)
              & (m < num_k))
  mask = mask & in_range
  flat = jnp.where(mask, (a * num_k + y) * num_k + m, 0)
  counts = jnp.zeros(num_j * num_k * num_k, jnp.int32).at[flat.ravel()].add(
      mask.ravel().astype(jnp.int32))
  return counts.reshape(num_j, num_k, num_k)


def leave_one_out_confusions(
    confusion: jax.Array,
    annotations: Annotations,
    labels: jax.Array,
) -> jax.Array:
  """Confusion matrix of each annotation's expert without that annotation.

  This is the paper's "perfect knowledge" setting: when expert ``j`` is
  consulted on image ``i``, its matrix is built from all its answers except
  the one on ``i``. Memory is ``N * M * K * K`` integers; the sweep in
  ``l2d_jax.conformal`` uses the equivalent rank-one correction instead.

  Args:
    confusion: ``[J, K, K]`` matrices built from ``annotations``.
    annotations: padded annotations of N images (M slots).
    labels: ``[N]`` true labels.

  Returns:
    ``[N, M, K, K]`` int32; padded slots hold zeros.
  """
  _check_labels_for(annotations, labels)
  num_k = annotations.num_classes
  chex.assert_shape(confusion, (annotations.num_experts, num_k, num_k))
  own = jax.nn.one_hot(labels, num_k, dtype=jnp.int32)[:, None, :, None] * (
      jax.nn.one_hot(annotations.answer, num_k, dtype=jnp.int32)[:, :, None, :])
  loo = confusion[annotations.annotator] - own
  return jnp.where(annotations.mask[:, :, None, None], loo, 0)


def expert_accuracy(confusion: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Overall accuracy of each expert from its confusion matrix.

  Args:
    confusion: ``[..., K, K]`` counts.

  Returns:
    ``(accuracy, count)``, each ``[...]``; accuracy is 0 where count is 0.
  """
  correct = jnp.trace(confusion, axis1=-2, axis2=-1)
  count = confusion.sum(axis=(-2, -1))
  acc = jnp.where(count > 0, correct / jnp.maximum(count, 1), 0.0)
  return acc, count


def subsample_n_shots(
    key: jax.Array,
    annotations: Annotations,
    labels: jax.Array,
    *,
    n_shots: int,
) -> Annotations:
  """Keeps, per expert and true label, ``n_shots`` random answers.

  Used for the paper's n_shots ablation: each expert is known only from
  ``n_shots`` examples per label (fewer where it answered fewer).

  Args:
    key: PRNG key.
    annotations: padded annotations of N images.
    labels: ``[N]`` true labels.
    n_shots: answers kept per (expert, true label); a static int >= 1
      (Python or NumPy).

  Returns:
    Annotations with the same arrays and a smaller mask.

  Raises:
    TypeError: ``n_shots`` not an int (e.g. 1.5).
    ValueError: ``n_shots < 1``; bad ``labels``.
  """
  n_shots = _validation.check_static_int(n_shots, "n_shots", minimum=1)
  _check_labels_for(annotations, labels)
  num_k = annotations.num_classes
  group = annotations.annotator * num_k + labels[:, None]
  # Padded slots go to a group of their own after every real group.
  group = jnp.where(annotations.mask, group, annotations.num_experts * num_k)
  u = jax.random.uniform(key, group.shape)
  g, uu = group.ravel(), u.ravel()
  order = jnp.lexsort((uu, g))
  g_sorted = g[order]
  pos = jnp.arange(g.shape[0])
  is_start = jnp.concatenate([jnp.array([True]), g_sorted[1:] != g_sorted[:-1]])
  start = jax.lax.cummax(jnp.where(is_start, pos, 0))
  rank_sorted = pos - start
  rank = jnp.zeros_like(rank_sorted).at[order].set(rank_sorted)
  keep = (rank < n_shots).reshape(group.shape)
  return annotations.with_mask(keep)


def keep_bottom_fraction(
    annotations: Annotations,
    labels: jax.Array,
    *,
    f_kept: float,
) -> tuple[Annotations, np.ndarray]:
  """Keeps the least accurate fraction ``f_kept`` of experts (numpy, eager).

  Experts are ranked by overall accuracy on all their answers (ties by id);
  the ``round(f_kept * J_active)`` lowest are kept, where ``J_active`` counts
  experts with at least one answer. The paper's robustness ablation.

  Args:
    annotations: padded annotations.
    labels: ``[N]`` true labels.
    f_kept: fraction in (0, 1].

  Returns:
    ``(annotations, kept)``: annotations whose mask drops the other experts'
    answers, and the ``[J]`` bool mask of kept experts (pass ``~kept`` as
    ``removed`` to ``warn_unusable_experts``).

  Raises:
    ValueError: ``f_kept`` outside (0, 1] or NaN, or so small that no expert
      would be kept (``round(f_kept * J_active) == 0``).
  """
  f = float(f_kept)
  if not 0.0 < f <= 1.0:
    raise ValueError(f"`f_kept` must lie in (0, 1], got {f_kept}.")
  conf = confusion_matrices(annotations, labels)
  acc, count = (np.asarray(a) for a in expert_accuracy(conf))
  active = np.flatnonzero(count > 0)
  n_keep = int(round(f * active.size))
  if n_keep < 1:
    raise ValueError(
        f"`f_kept`={f_kept} keeps round({f_kept} * {active.size}) = 0 of the "
        f"{active.size} experts with answers; use f_kept >= "
        f"{0.5 / max(active.size, 1):.3g}.")
  order = active[np.lexsort((active, acc[active]))]
  kept = np.zeros(annotations.num_experts, bool)
  kept[order[:n_keep]] = True
  mask = jnp.asarray(kept)[annotations.annotator]
  return annotations.with_mask(mask), kept


def warn_unusable_experts(
    annotations: Annotations, *, removed: np.ndarray | None = None
) -> np.ndarray:
  """Warns about experts without any answer (numpy, eager); changes nothing.

  Experts with no usable answer have all-zero confusion matrices; they can
  never be annotators of an image, so no rule ever chooses them. This makes a
  silently empty expert visible. Experts removed on purpose (e.g. by
  ``keep_bottom_fraction``) are not reported.

  Args:
    annotations: padded annotations.
    removed: optional ``[J]`` bool, experts removed on purpose.

  Returns:
    ``[J]`` bool, experts without an answer that were not removed on purpose.

  Example:
    >>> import numpy as np
    >>> from l2d_jax import experts
    >>> ann = experts.Annotations.from_long(
    ...     np.array([0]), np.array([0]), np.array([1]), num_images=1,
    ...     num_experts=3, num_classes=2)
    >>> print(experts.warn_unusable_experts(
    ...     ann, removed=np.array([False, True, True])))
    [False False False]
  """
  num_j = annotations.num_experts
  ids = np.asarray(annotations.annotator)[np.asarray(annotations.mask)]
  seen = np.bincount(ids, minlength=num_j)[:num_j] > 0
  unusable = ~seen
  if removed is not None:
    removed = np.asarray(removed, bool)
    if removed.shape != (num_j,):
      raise ValueError(f"`removed` must have shape [J]=[{num_j}], got "
                       f"{removed.shape}.")
    unusable &= ~removed
  n_missing = int(unusable.sum())
  if n_missing:
    warnings.warn(
        f"{n_missing} of {num_j} experts have no usable answers and can never "
        "be chosen.", stacklevel=2)
  return unusable
