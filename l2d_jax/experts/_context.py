"""Context sets and a synthetic expert population (L2D-Pop).

A *context set* summarises one expert by a few of its past decisions: points
``x_c`` with their true labels ``y_c`` and the expert's answers ``m_c``.
:class:`Context` holds one padded set per query so that a batch of queries,
each paired with its expert's set, is a fixed-shape pytree: every context
size ``n <= C`` shares one compiled shape, the padding being masked out.

The synthetic population follows the L2D-Pop protocol: expert ``e`` knows an
*oracle set* of ``H`` classes (:func:`population_oracle_sets`) and answers
them correctly; elsewhere it answers uniformly at random
(:func:`population_answers`). :func:`pseudo_expert_labels` turns a predicted
correctness into an expert label (limited demonstrations, Ramgolam et al.).

Randomness only comes from an explicit ``jax.random`` key, the first
positional argument.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation

WRONG_ANSWERS = ("other", "all")
ORACLE_ORDERS = ("cyclic", "lexicographic")


class Context(NamedTuple):
  """Padded context sets, one per query (a pytree; works under jit/vmap).

  Attributes:
    features: ``[B, C, D]`` features ``φ(x_c)`` of the context points, or raw
      inputs ``[B, C, ...]`` (e.g. images) for a model that embeds them.
    labels: ``[B, C]`` integer true labels ``y_c`` in ``[0, K)``.
    answers: ``[B, C]`` integer expert answers ``m_c`` in ``[0, K)``.
    mask: ``[B, C]`` bool; False marks padding, whose values are ignored.

  :func:`sample_context` returns one set without the ``B`` axis (``[C, ...]``);
  ``jax.vmap`` it over keys for ``[B, C, ...]``, or use :meth:`broadcast` to
  give every query of a batch the same set.
  """

  features: jax.Array
  labels: jax.Array
  answers: jax.Array
  mask: jax.Array

  def broadcast(self, batch: int) -> Context:
    """Repeats one context set ``[C, ...]`` for ``batch`` queries."""
    batch = _validation.check_static_int(batch, "batch", minimum=1)
    return Context(*(jnp.broadcast_to(a, (batch,) + jnp.shape(a))
                     for a in self))


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
  return value


def _in_range(x: jax.Array, upper: int) -> jax.Array:
  return (x >= 0) & (x < upper)


def pool_size(features: Any, labels: Any, answers: Any) -> int:
  """N of a pool ``features [N, ...]``, ``labels [N]``, ``answers [N]``.

  Raises:
    ValueError: a scalar ``features``, or labels/answers not of shape [N].
  """
  if jnp.ndim(features) < 1:
    raise ValueError("`features` must have shape [N, ...], got a scalar.")
  n = jnp.shape(features)[0]
  for arg, name in ((labels, "labels"), (answers, "answers")):
    if tuple(jnp.shape(arg)) != (n,):
      raise ValueError(f"`{name}` must have shape [N]=({n},) like the leading "
                       f"axis of `features`, got {tuple(jnp.shape(arg))}.")
  return n


def sample_context(
    key: jax.Array,
    features: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    answers: jax.typing.ArrayLike,
    *,
    size: int | jax.typing.ArrayLike,
    capacity: int,
    num_classes: int,
    balanced: bool = False,
    where: jax.typing.ArrayLike | None = None,
) -> Context:
  """Samples one expert's context set of ``size`` points, padded to ``capacity``.

  Draws ``size`` distinct points of the pool uniformly at random (without
  replacement); with ``balanced=True`` the points are spread over the classes
  as evenly as possible: every class gets ``size // K`` points, and
  ``size % K`` randomly chosen classes one more (a class with too few points
  in the pool gives its share to the others). The sampled points come first,
  the ``capacity - size`` padding slots (copies of other pool points) after
  them, with ``mask`` False.

  ``size`` may be a traced integer (one compiled shape for every size up to
  ``capacity``); the static ``capacity`` fixes the shape. Under jit, where
  values cannot be checked, a ``size`` above ``capacity`` fills all slots, a
  ``size`` above the pool gives as many valid points as the pool has, and
  pool points whose label or answer is outside ``[0, K)`` are never sampled.

  Args:
    key: a ``jax.random`` key.
    features: ``[N, ...]`` pool features (``[N, D]``) or raw inputs.
    labels: ``[N]`` integer true labels in ``[0, K)``.
    answers: ``[N]`` integer answers of the expert in ``[0, K)``.
    size: number of points ``n`` to sample, ``0 <= n <= capacity``; a Python
      int or an integer scalar array (may be traced).
    capacity: static padded size ``C`` (``1 <= C <= N``).
    num_classes: number of classes ``K``.
    balanced: spread the points evenly over the classes.
    where: optional ``[N]`` bool; only points where it is True are sampled
      (e.g. the points this expert labelled, inside a fixed-size pool).

  Returns:
    A :class:`Context` without batch axis: ``features [C, ...]``,
    ``labels [C]``, ``answers [C]``, ``mask [C]``.

  Raises:
    TypeError: a bad key, non-integer labels/answers/size, non-bool ``where``.
    ValueError: mismatched leading sizes; ``capacity`` outside ``[1, N]``;
      (when concrete) ``size`` negative or above ``capacity`` or above the
      number of available pool points; labels or answers outside ``[0, K)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> x = jnp.arange(12.0).reshape(6, 2)
    >>> y = jnp.array([0, 0, 0, 1, 1, 1])
    >>> ctx = experts.sample_context(jax.random.key(0), x, y, y, size=2,
    ...                              capacity=4, num_classes=2, balanced=True)
    >>> print(ctx.mask, sorted(ctx.labels[:2].tolist()))
    [ True  True False False] [0, 1]
  """
  _validation.check_key(key)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  capacity = _validation.check_static_int(capacity, "capacity", minimum=1)
  _validation.check_integer(labels, "labels")
  _validation.check_integer(answers, "answers")
  _validation.check_integer(size, "size")
  if jnp.ndim(size) != 0:
    raise ValueError(f"`size` must be a scalar, got shape "
                     f"{tuple(jnp.shape(size))}.")
  n = pool_size(features, labels, answers)
  _validation.check_mask(where, n, "where")
  if capacity > n:
    raise ValueError(f"`capacity`={capacity} exceeds the pool size N={n}.")
  _validation.check_index_range(labels, num_classes, "labels", where=where)
  _validation.check_index_range(answers, num_classes, "answers", where=where)
  if _validation.is_concrete(size):
    s = int(size)
    available = n if where is None else (
        int(np.asarray(where).sum()) if _validation.is_concrete(where) else n)
    if s < 0 or s > capacity:
      raise ValueError(f"`size` must lie in [0, capacity={capacity}], got "
                       f"{s}.")
    if s > available:
      raise ValueError(f"`size`={s} exceeds the {available} points available "
                       f"in the pool.")
  labels = jnp.asarray(labels)
  answers = jnp.asarray(answers)
  valid = _in_range(labels, num_classes) & _in_range(answers, num_classes)
  if where is not None:
    valid &= jnp.asarray(where)
  key_points, key_classes = jax.random.split(key)
  u = jax.random.uniform(key_points, (n,))
  if balanced:
    # Round robin over classes: rank r within its class (random order), then a
    # random order of classes inside each round; the first n points of the
    # sorted pool are as balanced as the pool allows.
    safe = jnp.where(valid, labels, num_classes)
    by_class = jnp.lexsort((u, safe))
    sorted_labels = safe[by_class]
    start = jnp.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = jnp.zeros(n, jnp.int32).at[by_class].set(
        (jnp.arange(n) - start).astype(jnp.int32))
    class_order = jax.random.permutation(key_classes, num_classes)
    class_rank = jnp.zeros(num_classes, jnp.int32).at[class_order].set(
        jnp.arange(num_classes, dtype=jnp.int32))
    score = (rank * num_classes
             + class_rank[jnp.clip(labels, 0, num_classes - 1)]).astype(
                 jnp.float32)
  else:
    score = u
  score = jnp.where(valid, score, jnp.inf)
  order = jnp.argsort(score)[:capacity]
  mask = (jnp.arange(capacity) < size) & valid[order]
  return Context(features=jnp.asarray(features)[order], labels=labels[order],
                 answers=answers[order], mask=mask)


def population_oracle_sets(
    num_experts: int,
    num_classes: int,
    *,
    size_h: int,
    order: str = "cyclic",
) -> np.ndarray:
  """Oracle sets of a synthetic population: the ``H`` classes each expert knows.

  ``order='cyclic'`` (the paper): expert ``e`` knows classes
  ``e, e+1, ..., e+H-1 (mod K)``, so consecutive experts overlap in ``H - 1``
  classes. ``order='lexicographic'`` (the official code): expert ``e`` knows
  the ``e``-th ``H``-subset of ``range(K)`` in ``itertools.combinations``
  order; for ``K = 10, H = 8`` all ten first subsets contain classes 0-4.

  Args:
    num_experts: number of experts ``E``.
    num_classes: number of classes ``K``.
    size_h: oracle-set size ``H`` in ``[1, K]``.
    order: ``'cyclic'`` or ``'lexicographic'``.

  Returns:
    ``[E, K]`` bool numpy array; row ``e`` marks the classes expert ``e``
    answers correctly.

  Raises:
    TypeError: non-int sizes.
    ValueError: ``E < 1``, ``K < 1``, ``size_h`` outside ``[1, K]``, an unknown
      ``order``, or (lexicographic) more experts than ``C(K, H)`` subsets.

  Example:
    >>> from l2d_jax import experts
    >>> print(experts.population_oracle_sets(3, 4, size_h=2).astype(int))
    [[1 1 0 0]
     [0 1 1 0]
     [0 0 1 1]]
  """
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  size_h = _validation.check_static_int(size_h, "size_h")
  if not 1 <= size_h <= num_classes:
    raise ValueError(f"`size_h` must lie in [1, num_classes={num_classes}], "
                     f"got {size_h}.")
  _check_choice(order, "order", ORACLE_ORDERS)
  sets = np.zeros((num_experts, num_classes), bool)
  if order == "cyclic":
    known = (np.arange(num_experts)[:, None] + np.arange(size_h)) % num_classes
  else:
    total = math.comb(num_classes, size_h)
    if num_experts > total:
      raise ValueError(
          f"`num_experts`={num_experts} exceeds the C({num_classes}, "
          f"{size_h})={total} distinct lexicographic oracle sets.")
    known = np.array(list(itertools.islice(
        itertools.combinations(range(num_classes), size_h), num_experts)))
  np.put_along_axis(sets, known, True, axis=1)
  return sets


def _wrong_answer(key, label, num_classes, wrong):
  """Uniform over the other classes (``'other'``) or all classes (``'all'``)."""
  if wrong == "all":
    return jax.random.randint(key, (), 0, num_classes)
  draw = jax.random.randint(key, (), 0, max(num_classes - 1, 1))
  return jnp.where(draw >= label, draw + 1, draw)


def population_answers(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    image_ids: jax.typing.ArrayLike,
    expert_ids: jax.typing.ArrayLike,
    oracle_sets: jax.typing.ArrayLike,
    *,
    wrong: str = "other",
) -> jax.Array:
  """Answers of synthetic population experts, a fixed function of the inputs.

  Expert ``e`` answers the true label on the classes of its oracle set
  (``oracle_sets[e]``); elsewhere it answers uniformly at random over the
  ``K - 1`` wrong labels (``wrong='other'``, the paper) or over all ``K``
  labels (``wrong='all'``, which may hit the true label: expert accuracy
  ``(H + (K - H) / K) / K`` on balanced data, 82% for ``K = 10, H = 8``).
  The draw for (expert ``e``, image ``i``) uses
  ``fold_in(fold_in(key, e), i)``, so asking again for the same expert and
  image id gives the same answer, whatever else is in the batch.

  Args:
    key: a ``jax.random`` key.
    labels: ``[N]`` integer true labels in ``[0, K)``.
    image_ids: ``[N]`` non-negative integer ids of the images (e.g. their
      index in the data set).
    expert_ids: ``[]`` (one expert for every image), ``[N]`` (one per
      image) or ``[N, J]`` (``J`` per image) integer ids in ``[0, E)``.
    oracle_sets: ``[E, K]`` bool, e.g. from :func:`population_oracle_sets`.
    wrong: ``'other'`` or ``'all'``.

  Returns:
    int32 answers of shape ``[N]`` (``[]``/``[N]`` expert ids) or ``[N, J]``.
    Under jit an out-of-range label or expert id gives -1 (never a valid
    answer).

  Raises:
    TypeError: a bad key, non-integer ids/labels, non-bool ``oracle_sets``.
    ValueError: bad shapes, an unknown ``wrong``; (when concrete) labels
      outside ``[0, K)``, negative image ids, expert ids outside ``[0, E)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> sets = experts.population_oracle_sets(2, 3, size_h=3)
    >>> print(experts.population_answers(jax.random.key(0), jnp.array([2, 0]),
    ...                                  jnp.arange(2), jnp.array(1), sets))
    [2 0]
  """
  _validation.check_key(key)
  _check_choice(wrong, "wrong", WRONG_ANSWERS)
  _validation.check_integer(labels, "labels")
  _validation.check_integer(image_ids, "image_ids")
  _validation.check_integer(expert_ids, "expert_ids")
  _validation.check_ndim(oracle_sets, 2, "oracle_sets", "[E, K]")
  if jnp.result_type(oracle_sets) != jnp.bool_:
    raise TypeError(f"`oracle_sets` must be boolean, got "
                    f"{jnp.result_type(oracle_sets)}.")
  num_experts, num_classes = jnp.shape(oracle_sets)
  if (wrong == "other" and num_classes < 2
      and not (_validation.is_concrete(oracle_sets)
               and np.asarray(oracle_sets).all())):
    raise ValueError("`oracle_sets` with K=1 class leaves no wrong answer for "
                     "wrong='other': every expert must know the class.")
  _validation.check_ndim(labels, 1, "labels", "[N]")
  n = jnp.shape(labels)[0]
  if tuple(jnp.shape(image_ids)) != (n,):
    raise ValueError(f"`image_ids` must have shape [N]=({n},) like `labels`, "
                     f"got {tuple(jnp.shape(image_ids))}.")
  eshape = tuple(jnp.shape(expert_ids))
  if eshape not in ((), (n,)) and not (len(eshape) == 2 and eshape[0] == n):
    raise ValueError(f"`expert_ids` must have shape [], [N] or [N, J] with "
                     f"N={n}, got {eshape}.")
  _validation.check_index_range(labels, num_classes, "labels")
  _validation.check_index_range(expert_ids, num_experts, "expert_ids")
  if _validation.is_concrete(image_ids):
    ids = np.asarray(image_ids)
    if ids.size and ids.min() < 0:
      raise ValueError(f"`image_ids` must be non-negative, got a minimum of "
                       f"{ids.min()}.")
  labels = jnp.asarray(labels)
  image_ids = jnp.asarray(image_ids)
  expert_ids = jnp.asarray(expert_ids)
  oracle_sets = jnp.asarray(oracle_sets)
  if len(eshape) == 2:
    labels = labels[:, None]
    image_ids = image_ids[:, None]
  labels, image_ids, expert_ids = jnp.broadcast_arrays(labels, image_ids,
                                                       expert_ids)

  def one(label, image, expert):
    ok = _in_range(label, num_classes) & _in_range(expert, num_experts)
    safe_label = jnp.clip(label, 0, num_classes - 1)
    safe_expert = jnp.clip(expert, 0, num_experts - 1)
    k = jax.random.fold_in(jax.random.fold_in(key, safe_expert), image)
    knows = oracle_sets[safe_expert, safe_label]
    answer = jnp.where(knows, safe_label,
                       _wrong_answer(k, safe_label, num_classes, wrong))
    return jnp.where(ok, answer, -1).astype(jnp.int32)

  flat = jax.vmap(one)(labels.reshape(-1), image_ids.reshape(-1),
                       expert_ids.reshape(-1))
  return flat.reshape(labels.shape)


def pseudo_expert_labels(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    correct: jax.typing.ArrayLike,
    *,
    num_classes: int,
    wrong: str = "other",
) -> jax.Array:
  """Expert labels from a predicted correctness (limited demonstrations, eq. 5).

  Where the expert is predicted correct the pseudo label is the true label
  ``y``; elsewhere it is drawn uniformly over the ``K - 1`` other classes
  (``wrong='other'``, the paper) or over all ``K`` classes, ``y`` included
  (``wrong='all'``, the official code). A floating ``correct`` is the
  predicted probability that the expert is right, thresholded as the argmax of
  the binary predictor: correct iff ``p > 1/2``.

  Args:
    key: a ``jax.random`` key.
    labels: ``[...]`` integer true labels in ``[0, K)``.
    correct: ``[...]`` bool predicted correctness, or floating
      probabilities in ``[0, 1]``.
    num_classes: number of classes ``K`` (``>= 2`` for ``wrong='other'``).
    wrong: ``'other'`` or ``'all'``.

  Returns:
    ``[...]`` int32 pseudo labels; -1 where the label is outside ``[0, K)``
    (possible only under jit).

  Raises:
    TypeError: a bad key, non-integer labels, integer ``correct``.
    ValueError: mismatched shapes, an unknown ``wrong``, ``K < 2`` with
      ``wrong='other'``; (when concrete) labels outside ``[0, K)``,
      probabilities outside ``[0, 1]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> out = experts.pseudo_expert_labels(
    ...     jax.random.key(0), jnp.array([1, 1]), jnp.array([True, False]),
    ...     num_classes=2)
    >>> print(out)
    [1 0]

  References:
    Ramgolam, Carneiro & Chen, Learning To Defer To A Population With Limited
    Demonstrations, 2025.
  """
  _validation.check_key(key)
  _check_choice(wrong, "wrong", WRONG_ANSWERS)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  if wrong == "other" and num_classes < 2:
    raise ValueError("`num_classes` must be >= 2 with wrong='other' (there is "
                     "no other class to draw).")
  _validation.check_integer(labels, "labels")
  if tuple(jnp.shape(correct)) != tuple(jnp.shape(labels)):
    raise ValueError(f"`correct` must have the shape of `labels` "
                     f"{tuple(jnp.shape(labels))}, got "
                     f"{tuple(jnp.shape(correct))}.")
  dtype = jnp.result_type(correct)
  if dtype == jnp.bool_:
    is_correct = jnp.asarray(correct)
  elif jnp.issubdtype(dtype, jnp.floating):
    _validation.check_unit_interval(correct, "correct")
    is_correct = jnp.asarray(correct) > 0.5
  else:
    raise TypeError(f"`correct` must be boolean or floating probabilities, "
                    f"got {dtype}.")
  _validation.check_index_range(labels, num_classes, "labels")
  labels = jnp.asarray(labels)
  safe = jnp.clip(labels, 0, num_classes - 1)
  if wrong == "all":
    draw = jax.random.randint(key, labels.shape, 0, num_classes)
  else:
    draw = jax.random.randint(key, labels.shape, 0, num_classes - 1)
    draw = jnp.where(draw >= safe, draw + 1, draw)
  out = jnp.where(is_correct, safe, draw)
  return jnp.where(_in_range(labels, num_classes), out, -1).astype(jnp.int32)
