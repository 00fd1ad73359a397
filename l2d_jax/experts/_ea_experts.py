"""Simulated experts and context sets of the EA-L2D experiments.

- Overlap experts (Tailor et al. 2024's simulator): an expert is an oracle on
  its expertise classes and elsewhere answers the true label with the
  *overlap probability* ``p``, otherwise a label drawn uniformly over all
  ``K`` classes (so its accuracy off its expertise is ``p + (1 − p)/K``).
  :func:`expertise_mask` builds the ``[J, K]`` expertise of one or several
  classes per expert, :func:`sample_expertise` draws them at random among
  allowed classes (RQ2), :func:`split_classes` cuts the classes into an
  in-distribution (ID) and an out-of-distribution (OOD) part.
- Per-class-accuracy experts (the LCB ablation): exact accuracy ``a_e`` on
  the expertise class and ``a_o`` elsewhere (wrong answers uniform over the
  ``K − 1`` wrong labels), with context sets of fixed per-class counts
  (:func:`sample_class_context`); ``LCB_EXPERT_TYPES`` lists the paper's five
  types.
- Self-assessed priors (RQ3): :func:`self_assessed_prior` gives the
  accurate, uninformative or misspecified Beta prior of an expert.

Randomness only comes from an explicit ``jax.random`` key, the first
positional argument; expert ``j`` of a multi-expert simulator draws from
``jax.random.fold_in(key, j)`` (its answers do not depend on how many experts
are simulated).

References:
  Expert-agnostic learning to defer (EA-L2D), METHODS.md section 2;
  Tailor, Patra, Verma, Manggala & Nalisnick, Learning to Defer to a
  Population: A Meta-Learning Approach, AISTATS 2024.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.experts._beta import prior_from_self_assessment
from l2d_jax.experts._context import Context
from l2d_jax.experts._context import pool_size
from l2d_jax.experts._simulators import noisy_experts

PRIOR_KINDS = ("accurate", "uninformative", "misspecified")


class ExpertType(NamedTuple):
  """A per-class-accuracy expert type of the LCB ablation.

  Attributes:
    accuracy_expertise: exact accuracy on the expertise class.
    accuracy_other: exact accuracy on every other class.
    context_expertise: context points of the expertise class.
    context_other: context points of every other class.
  """

  accuracy_expertise: float
  accuracy_other: float
  context_expertise: int
  context_other: int


# The paper's five types (App. F.4): skill / uncertainty levels.
LCB_EXPERT_TYPES: dict[str, ExpertType] = {
    "HS-HU": ExpertType(0.90, 0.20, 2, 1),
    "MS-HU": ExpertType(0.60, 0.30, 2, 1),
    "LS-HU": ExpertType(0.30, 0.10, 2, 1),
    "HS-MU": ExpertType(0.90, 0.20, 10, 3),
    "OL-LU": ExpertType(0.99, 0.05, 20, 5),
}


def _check_classes(classes: Any, num_classes: int, name: str) -> np.ndarray:
  c = np.asarray(classes)
  if c.dtype == np.bool_ or not np.issubdtype(c.dtype, np.integer):
    raise TypeError(f"`{name}` must hold integer class ids, got {c.dtype}.")
  if c.size and (c.min() < 0 or c.max() >= num_classes):
    raise ValueError(f"`{name}` must hold class ids in [0, {num_classes}), "
                     f"got {c.min()}..{c.max()}.")
  return c


def split_classes(num_classes: int, *, num_id: int,
                  key: jax.Array | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Cuts the classes into ID and OOD parts.

  Args:
    num_classes: K.
    num_id: number of ID classes, ``1 <= num_id < K``.
    key: optional ``jax.random`` key; without it the ID classes are
      ``0..num_id-1``, with it a random subset.

  Returns:
    ``(id_classes, ood_classes)``, sorted int numpy arrays partitioning
    ``0..K-1``.

  Raises:
    TypeError, ValueError: non-int sizes or ``num_id`` outside ``[1, K)``.

  Example:
    >>> from l2d_jax import experts
    >>> experts.split_classes(5, num_id=3)
    (array([0, 1, 2]), array([3, 4]))
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=2)
  num_id = _validation.check_static_int(num_id, "num_id", minimum=1)
  if num_id >= num_classes:
    raise ValueError(f"`num_id` must lie in [1, num_classes={num_classes}), "
                     f"got {num_id}.")
  order = np.arange(num_classes)
  if key is not None:
    _validation.check_key(key)
    order = np.asarray(jax.random.permutation(key, num_classes))
  return np.sort(order[:num_id]), np.sort(order[num_id:])


def expertise_mask(expertise_classes: Any, *, num_classes: int) -> np.ndarray:
  """``[J, K]`` bool mask from each expert's expertise classes.

  Args:
    expertise_classes: ``[J]`` (one class per expert) or ``[J, E]`` (E
      classes per expert; repeats allowed) integer class ids.
    num_classes: K.

  Returns:
    ``[J, K]`` bool numpy mask, True on each expert's expertise classes.

  Raises:
    TypeError: non-integer ids.
    ValueError: other shapes, ids outside ``[0, K)`` (unknown expertise
      classes).

  Example:
    >>> from l2d_jax import experts
    >>> print(experts.expertise_mask([2, 0], num_classes=3).astype(int))
    [[0 0 1]
     [1 0 0]]
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  c = _check_classes(expertise_classes, num_classes, "expertise_classes")
  if c.ndim == 1:
    c = c[:, None]
  if c.ndim != 2 or c.shape[0] < 1:
    raise ValueError(f"`expertise_classes` must have shape [J] or [J, E] "
                     f"with J >= 1, got {np.shape(expertise_classes)}.")
  mask = np.zeros((c.shape[0], num_classes), bool)
  np.put_along_axis(mask, c, True, axis=1)
  return mask


def sample_expertise(key: jax.Array, candidates: Any, *, num_experts: int,
                     classes_per_expert: int, num_classes: int) -> np.ndarray:
  """Draws each expert's expertise classes uniformly among ``candidates``.

  Expert ``j`` draws ``classes_per_expert`` distinct classes with
  ``fold_in(key, j)``.

  Args:
    key: a ``jax.random`` key.
    candidates: ``[C]`` distinct allowed class ids (e.g. the ID classes).
    num_experts: J.
    classes_per_expert: E, ``1 <= E <= C``.
    num_classes: K.

  Returns:
    ``[J, K]`` bool numpy mask (see :func:`expertise_mask`).

  Raises:
    TypeError, ValueError: bad sizes, ids outside ``[0, K)``, repeated
      candidates or ``E > C``.

  Example:
    >>> import jax
    >>> from l2d_jax import experts
    >>> m = experts.sample_expertise(jax.random.key(0), [1, 3, 4],
    ...                              num_experts=2, classes_per_expert=2,
    ...                              num_classes=5)
    >>> m.sum(1).tolist(), bool(m[:, [0, 2]].any())
    ([2, 2], False)
  """
  _validation.check_key(key)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  e = _validation.check_static_int(classes_per_expert, "classes_per_expert",
                                   minimum=1)
  c = _check_classes(candidates, num_classes, "candidates").reshape(-1)
  if np.unique(c).size != c.size:
    raise ValueError(f"`candidates` must not repeat a class, got {c.tolist()}.")
  if e > c.size:
    raise ValueError(f"`classes_per_expert`={e} exceeds the {c.size} "
                     f"candidate classes.")
  picks = np.stack([
      c[np.asarray(jax.random.permutation(jax.random.fold_in(key, j),
                                          c.size))[:e]]
      for j in range(num_experts)])
  return expertise_mask(picks, num_classes=num_classes)


def overlap_experts(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    expertise: jax.typing.ArrayLike,
    overlap: float | jax.typing.ArrayLike,
) -> jax.Array:
  """Answers of experts that are oracles on their expertise classes.

  Elsewhere expert ``j`` answers the true label with probability
  ``overlap`` (per expert if ``[J]``) and otherwise a label drawn uniformly
  over all ``K`` classes (which may be the true one), as in Tailor et al.'s
  simulator. Column ``j`` uses ``jax.random.fold_in(key, j)`` (via
  ``noisy_experts``).

  Args:
    key: a ``jax.random`` key.
    labels: ``[N]`` integer true labels in ``[0, K)``.
    num_classes: K (static).
    expertise: ``[J, K]`` bool expertise mask (:func:`expertise_mask`).
    overlap: ``p`` in ``[0, 1]``, a scalar or ``[J]``.

  Returns:
    ``[N, J]`` int32 answers (``-1`` where, under jit, a label is out of
    range).

  Raises:
    TypeError: a non-boolean ``expertise``, a bad key or labels.
    ValueError: ``expertise`` not ``[J, K]``, ``overlap`` outside
      ``[0, 1]`` or not broadcastable to ``[J]``; labels out of range (when
      concrete).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> m = experts.expertise_mask([0, 1], num_classes=3)
    >>> a = experts.overlap_experts(jax.random.key(0), jnp.array([0, 0, 1]),
    ...                             num_classes=3, expertise=m, overlap=0.5)
    >>> print(a[:2, 0], a[2, 1])
    [0 0] 1
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  if jnp.result_type(expertise) != jnp.bool_:
    raise TypeError(f"`expertise` must be boolean [J, K], got "
                    f"{jnp.result_type(expertise)}.")
  shape = tuple(jnp.shape(expertise))
  if len(shape) != 2 or shape[1] != num_classes or shape[0] < 1:
    raise ValueError(f"`expertise` must have shape [J, K={num_classes}], got "
                     f"{shape}.")
  _validation.check_unit_interval(overlap, "overlap")
  if jnp.ndim(overlap) > 1 or (jnp.ndim(overlap) == 1
                               and jnp.shape(overlap)[0] != shape[0]):
    raise ValueError(f"`overlap` must be a scalar or [J={shape[0]}], got "
                     f"shape {tuple(jnp.shape(overlap))}.")
  p = jnp.asarray(overlap, jnp.float32)
  p = jnp.broadcast_to(p.reshape(-1, 1) if p.ndim else p, shape)
  p_correct = jnp.where(jnp.asarray(expertise), 1.0, p)
  return noisy_experts(key, labels, num_classes=num_classes,
                       p_correct=p_correct)


def true_accuracy(expertise: Any, *, overlap: Any) -> np.ndarray:
  """Per-class accuracy of :func:`overlap_experts`: 1 or ``p + (1 − p)/K``.

  Args:
    expertise: ``[J, K]`` bool expertise mask.
    overlap: ``p`` in ``[0, 1]`` (scalar or ``[J]``).

  Returns:
    ``[J, K]`` float64 numpy accuracies.

  Example:
    >>> from l2d_jax import experts
    >>> m = experts.expertise_mask([0], num_classes=4)
    >>> print(experts.true_accuracy(m, overlap=0.2))
    [[1.  0.4 0.4 0.4]]
  """
  m = np.asarray(expertise, bool)
  if m.ndim != 2:
    raise ValueError(f"`expertise` must have shape [J, K], got {m.shape}.")
  _validation.check_unit_interval(overlap, "overlap")
  p = np.asarray(overlap, np.float64).reshape(-1, 1)
  k = m.shape[1]
  return np.where(m, 1.0, p + (1 - p) / k)


def per_class_accuracy_experts(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    expertise_class: Any,
    accuracy_expertise: Any,
    accuracy_other: Any,
) -> jax.Array:
  """Experts with exact accuracies: ``a_e`` on one class, ``a_o`` elsewhere.

  A wrong answer is uniform over the ``K − 1`` wrong labels, so the
  accuracies are exact (the LCB ablation's experts). Column ``j`` uses
  ``fold_in(key, j)``.

  Args:
    key: a ``jax.random`` key.
    labels: ``[N]`` integer true labels in ``[0, K)``.
    num_classes: K (static, >= 2).
    expertise_class: ``[J]`` integer expertise class per expert.
    accuracy_expertise: ``[J]`` (or scalar) accuracy on the expertise class.
    accuracy_other: ``[J]`` (or scalar) accuracy on the other classes.

  Returns:
    ``[N, J]`` int32 answers.

  Raises:
    TypeError, ValueError: ids outside ``[0, K)``, accuracies outside
      ``[0, 1]``, shapes that do not broadcast to ``[J]``.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from l2d_jax import experts
    >>> a = experts.per_class_accuracy_experts(
    ...     jax.random.key(0), jnp.zeros(4000, jnp.int32), num_classes=3,
    ...     expertise_class=[0, 1], accuracy_expertise=0.9,
    ...     accuracy_other=0.2)
    >>> print(np.asarray(a == 0).mean(0).round(1))
    [0.9 0.2]
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=2)
  c = _check_classes(expertise_class, num_classes, "expertise_class")
  if c.ndim != 1 or c.size < 1:
    raise ValueError(f"`expertise_class` must have shape [J] with J >= 1, got "
                     f"{c.shape}.")
  accs = []
  for value, name in ((accuracy_expertise, "accuracy_expertise"),
                      (accuracy_other, "accuracy_other")):
    _validation.check_unit_interval(value, name)
    v = np.asarray(value, np.float64)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != c.size):
      raise ValueError(f"`{name}` must be a scalar or [J={c.size}], got shape "
                       f"{v.shape}.")
    accs.append(np.broadcast_to(v, c.shape))
  mask = expertise_mask(c, num_classes=num_classes)
  p = np.where(mask, accs[0][:, None], accs[1][:, None])
  return noisy_experts(key, labels, num_classes=num_classes,
                       p_correct=jnp.asarray(p, jnp.float32),
                       exclude_true_label=True)


def sample_class_context(
    key: jax.Array,
    features: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    answers: jax.typing.ArrayLike,
    *,
    counts: jax.typing.ArrayLike,
    capacity: int,
    num_classes: int,
) -> Context:
  """A context set with ``counts[k]`` points of each class ``k``.

  Draws, without replacement, ``counts[k]`` pool points of class ``k``
  (fewer if the pool holds fewer), places them first and pads to
  ``capacity`` with masked copies. ``counts`` may be traced (one compiled
  shape for every count vector); ``jax.vmap`` it over experts.

  Args:
    key: a ``jax.random`` key.
    features: ``[N, ...]`` pool features or inputs.
    labels: ``[N]`` integer true labels in ``[0, K)``.
    answers: ``[N]`` integer expert answers in ``[0, K)``.
    counts: ``[K]`` non-negative integer points per class.
    capacity: static padded size ``C`` (``1 <= C <= N``); with
      ``sum(counts) > C`` only the first ``C`` drawn points are kept.
    num_classes: K.

  Returns:
    A :class:`Context` without batch axis (``[C, ...]``).

  Raises:
    TypeError: non-integer labels, answers or counts.
    ValueError: shapes; ``capacity`` outside ``[1, N]``; (when concrete)
      negative counts or ``sum(counts) > capacity``, labels or answers out
      of range.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> y = jnp.array([0, 0, 0, 1, 1, 1])
    >>> ctx = experts.sample_class_context(
    ...     jax.random.key(0), jnp.zeros((6, 1)), y, y,
    ...     counts=jnp.array([2, 1]), capacity=4, num_classes=2)
    >>> print(ctx.mask, sorted(ctx.labels[:3].tolist()))
    [ True  True  True False] [0, 0, 1]
  """
  _validation.check_key(key)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  capacity = _validation.check_static_int(capacity, "capacity", minimum=1)
  _validation.check_integer(labels, "labels")
  _validation.check_integer(answers, "answers")
  _validation.check_integer(counts, "counts")
  if tuple(jnp.shape(counts)) != (num_classes,):
    raise ValueError(f"`counts` must have shape [K]=({num_classes},), got "
                     f"{tuple(jnp.shape(counts))}.")
  n = pool_size(features, labels, answers)
  if capacity > n:
    raise ValueError(f"`capacity`={capacity} exceeds the pool size N={n}.")
  _validation.check_labels(labels, num_classes, "labels")
  _validation.check_index_range(answers, num_classes, "answers")
  if _validation.is_concrete(counts):
    cnt = np.asarray(counts)
    if cnt.min() < 0:
      raise ValueError(f"`counts` must be non-negative, got {cnt.tolist()}.")
    if cnt.sum() > capacity:
      raise ValueError(f"`counts` sum to {int(cnt.sum())}, above "
                       f"`capacity`={capacity}.")
  labels, answers = jnp.asarray(labels), jnp.asarray(answers)
  counts = jnp.maximum(jnp.asarray(counts), 0)
  valid = ((labels >= 0) & (labels < num_classes) & (answers >= 0)
           & (answers < num_classes))
  safe = jnp.where(valid, labels, num_classes)
  u = jax.random.uniform(key, (n,))
  by_class = jnp.lexsort((u, safe))
  sorted_labels = safe[by_class]
  start = jnp.searchsorted(sorted_labels, sorted_labels, side="left")
  rank = jnp.zeros(n, jnp.int32).at[by_class].set(
      (jnp.arange(n) - start).astype(jnp.int32))
  want = jnp.where(valid, counts[jnp.clip(labels, 0, num_classes - 1)], 0)
  chosen = rank < want
  # Chosen points first (in random order), then padding.
  order = jnp.argsort(jnp.where(chosen, u, 2.0 + u))[:capacity]
  return Context(features=jnp.asarray(features)[order], labels=labels[order],
                 answers=answers[order], mask=chosen[order])


def type_counts(expertise_class: Any, expert_type: ExpertType, *,
                num_classes: int) -> np.ndarray:
  """``[J, K]`` per-class context counts of experts of one LCB type.

  Example:
    >>> from l2d_jax import experts
    >>> t = experts.LCB_EXPERT_TYPES["HS-HU"]
    >>> print(experts.type_counts([1], t, num_classes=3))
    [[1 2 1]]
  """
  mask = expertise_mask(np.asarray(expertise_class), num_classes=num_classes)
  return np.where(mask, expert_type.context_expertise,
                  expert_type.context_other).astype(np.int32)


def self_assessed_prior(
    kind: str,
    accuracy: Any,
    *,
    strength: float,
    wrong_class: int | None = None,
    confidence: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
  """The Beta prior ``(a0, b0)`` of an expert's self-assessment (RQ3).

  - ``'accurate'``: the expert reports its true per-class accuracy
    ``accuracy``; ``prior_from_self_assessment(accuracy, confidence,
    strength=strength)``.
  - ``'uninformative'``: ``Beta(1, 1)`` on every class.
  - ``'misspecified'``: the expert claims its expertise lies on
    ``wrong_class``: the reported accuracies of its true expertise class
    (``argmax accuracy``) and of ``wrong_class`` are swapped.

  Args:
    kind: one of ``PRIOR_KINDS``.
    accuracy: ``[..., K]`` true per-class accuracies in ``[0, 1]``.
    strength: prior strength ``s > 0``.
    wrong_class: the claimed expertise class for ``'misspecified'``.
    confidence: ``c`` in ``[0, 1]``.

  Returns:
    ``(a0, b0)``, float numpy arrays of the shape of ``accuracy``.

  Raises:
    ValueError: an unknown ``kind``, a missing or out-of-range
      ``wrong_class``, values out of range (see
      ``prior_from_self_assessment``).

  Example:
    >>> from l2d_jax import experts
    >>> a0, b0 = experts.self_assessed_prior(
    ...     "misspecified", [0.25, 1.0, 0.25], strength=4.0, wrong_class=0)
    >>> print(a0, b0)
    [5. 2. 2.] [1. 4. 4.]
  """
  if kind not in PRIOR_KINDS:
    raise ValueError(f"`kind` must be one of {PRIOR_KINDS}, got {kind!r}.")
  acc = np.array(accuracy, np.float64)
  if acc.ndim < 1:
    raise ValueError(f"`accuracy` must have shape [..., K], got {acc.shape}.")
  if kind == "uninformative":
    _validation.check_unit_interval(acc, "accuracy")
    return np.ones_like(acc), np.ones_like(acc)
  if kind == "misspecified":
    k = acc.shape[-1]
    if wrong_class is None or not 0 <= int(wrong_class) < k:
      raise ValueError(f"`wrong_class` must be a class id in [0, {k}) for a "
                       f"misspecified prior, got {wrong_class!r}.")
    best = np.argmax(acc, axis=-1)[..., None]
    wrong = np.full_like(best, int(wrong_class))
    a_best = np.take_along_axis(acc, best, -1)
    a_wrong = np.take_along_axis(acc, wrong, -1)
    np.put_along_axis(acc, best, a_wrong, -1)
    np.put_along_axis(acc, wrong, a_best, -1)
  a0, b0 = prior_from_self_assessment(acc, confidence, strength=strength)
  return np.asarray(a0, np.float64), np.asarray(b0, np.float64)
