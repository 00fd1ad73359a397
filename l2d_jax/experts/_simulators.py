"""Pure, keyed simulators of synthetic experts.

Every expert follows one model: on an example of group ``g`` (its class, or its
mixture cluster when ``groups`` is given) it answers the true label with
probability ``p[g]`` and otherwise guesses a label uniformly at random over all
``K`` classes. As in the code released with Verma, Barrejón & Nalisnick
(2023) (and Mozannar & Sontag 2020), the random guess may hit the true label,
so the expert's accuracy on group ``g`` is ``p[g] + (1 - p[g]) / K``; an
"oracle" has ``p = 1`` and a "random" expert ``p = 0`` (accuracy ``1/K``). Pass
``exclude_true_label=True`` to draw guesses among the ``K - 1`` wrong labels
instead, which makes ``p`` the exact accuracy.

Randomness only comes from the ``key`` argument, a ``jax.random`` key that is
the first positional argument (as in ``jax.random.*``). The multi-expert
builders are ``jax.vmap`` over the one-expert simulator, and expert ``j``
(column ``j`` of the ``[N, J]`` answers, 0-based) draws from
``jax.random.fold_in(key, j)``: its answers do not depend on how many experts
are simulated, so settings with J = 2 and J = 8 share their first two experts,
and column ``j`` equals the single-expert function called with
``fold_in(key, j)``. The functions jit with the keyword options static
(``num_classes``, ``num_experts``, ...; Python or NumPy ints).

Bad input: shapes, dtypes and static options raise ``TypeError`` /
``ValueError`` naming the argument; values (labels and groups in range,
probabilities in [0, 1]) are checked when concrete. Under ``jax.jit``, where
values cannot be checked, a point whose label or group is out of range gets
the answer ``-1`` (never another class's or group's answer).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


def _check_flag(value: Any, name: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be a bool (static), got "
                    f"{type(value).__name__}.")
  return bool(value)


def _check_labels_groups(key: Any, labels: Any, groups: Any, num_classes: Any,
                         num_groups: int | None) -> int:
  """Checks the common arguments; returns ``num_classes`` as an int."""
  _validation.check_key(key)
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  _validation.check_ndim(labels, 1, "labels", "[N]")
  _validation.check_labels(labels, num_classes, "labels")
  if groups is not None:
    _validation.check_ndim(groups, 1, "groups", "[N]")
    if jnp.shape(groups) != jnp.shape(labels):
      raise ValueError(f"`groups` must have the shape [N] of `labels` "
                       f"{tuple(jnp.shape(labels))}, got "
                       f"{tuple(jnp.shape(groups))}.")
    if num_groups is not None:
      _validation.check_labels(groups, num_groups, "groups")
  elif num_groups is not None and num_groups != num_classes:
    raise ValueError(
        f"without `groups` the groups are the labels, so the per-group "
        f"argument must have num_classes={num_classes} entries, got "
        f"{num_groups}.")
  return num_classes


# Jitted so that eager calls from scripts compile once per shape.
@functools.partial(jax.jit, static_argnums=(4, 5))
def _simulate(key, labels, groups, p_group, num_classes, exclude_true_label):
  """One expert: true label with probability ``p_group[groups]``, else random.

  ``p_group`` is ``[G]`` (or a scalar, then ``groups`` is unused).
  """
  labels = jnp.asarray(labels)
  key_coin, key_guess = jax.random.split(key)
  p = jnp.asarray(p_group)
  valid = (labels >= 0) & (labels < num_classes)
  if p.ndim:
    groups = jnp.asarray(groups)
    valid &= (groups >= 0) & (groups < p.shape[0])
    p = p[jnp.clip(groups, 0, p.shape[0] - 1)]
  knows = jax.random.uniform(key_coin, labels.shape) < p
  if exclude_true_label and num_classes > 1:
    shift = jax.random.randint(key_guess, labels.shape, 1, num_classes)
    guess = (labels + shift) % num_classes
  else:
    guess = jax.random.randint(key_guess, labels.shape, 0, num_classes)
  answer = jnp.where(knows, labels, guess)
  # Out of range (only possible under jit): visibly invalid, never a guess.
  return jnp.where(valid, answer, -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _simulate_many(key, labels, groups, p_correct, num_classes,
                   exclude_true_label):
  """``_simulate`` vmapped over experts: ``p_correct [J(, G)]`` -> ``[N, J]``.

  Expert ``j`` uses ``fold_in(key, j)``, so it does not depend on ``J``.
  """
  def one(j, p):
    return _simulate(jax.random.fold_in(key, j), labels, groups, p,
                     num_classes, exclude_true_label)
  return jax.vmap(one, out_axes=1)(jnp.arange(p_correct.shape[0]), p_correct)


def noisy_expert(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    p_correct: jax.typing.ArrayLike,
    groups: jax.typing.ArrayLike | None = None,
    exclude_true_label: bool = False,
) -> jax.Array:
  """One expert that knows the label with a (per-group) probability.

  With probability ``p_correct[groups[i]]`` the expert answers ``labels[i]``;
  otherwise it guesses uniformly over all ``num_classes`` labels (the guess
  can be right, see the module docstring).

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels in ``[0, num_classes)``.
    num_classes: K (static).
    p_correct: scalar, or ``[G]`` probabilities in [0, 1], one per group.
    groups: optional ``[N]`` int group ids in ``[0, G)`` (e.g. mixture
      clusters); defaults to ``labels`` (then ``G = K``).
    exclude_true_label: draw wrong guesses among the other ``K - 1`` labels,
      so that ``p_correct`` is the exact accuracy.

  Returns:
    ``[N]`` int32 expert predictions (``-1`` where, under jit, a label or
    group is out of range).

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-integer ``labels`` or
      ``groups``, a non-int ``num_classes`` or a non-bool
      ``exclude_true_label``.
    ValueError: bad shapes; labels, groups or probabilities out of range
      (checked when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> labels = jnp.array([0, 1, 2, 3] * 250)
    >>> preds = experts.noisy_expert(jax.random.key(0), labels, num_classes=4,
    ...                              p_correct=0.8, exclude_true_label=True)
    >>> print(abs(float(jnp.mean(preds == labels)) - 0.8) < 0.05)
    True

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  p_correct = jnp.asarray(p_correct)
  p_shape = p_correct.shape
  if len(p_shape) > 1:
    raise ValueError(f"`p_correct` must be a scalar or [G], got shape "
                     f"{tuple(p_shape)}.")
  num_groups = p_shape[0] if p_shape else None
  num_classes = _check_labels_groups(key, labels, groups, num_classes,
                                     num_groups)
  _validation.check_unit_interval(p_correct, "p_correct")
  exclude_true_label = _check_flag(exclude_true_label, "exclude_true_label")
  if groups is None:
    groups = labels
  return _simulate(key, labels, groups, p_correct, num_classes,
                   exclude_true_label)


def oracle_expert(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    oracle_groups: jax.typing.ArrayLike,
    groups: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """One expert that is an oracle on some groups and random elsewhere.

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels in ``[0, num_classes)``.
    num_classes: K (static).
    oracle_groups: ``[G]`` bool, True where the expert always answers the
      true label; elsewhere it guesses uniformly over all K labels.
    groups: optional ``[N]`` int group ids in ``[0, G)``; defaults to
      ``labels`` (then ``G = K``).

  Returns:
    ``[N]`` int32 expert predictions (``-1`` where, under jit, a label or
    group is out of range).

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-boolean
      ``oracle_groups`` or non-integer ``labels``.
    ValueError: bad shapes or out-of-range labels/groups (when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> # Paper, Sec. 5.2: oracle on mixture clusters 3 and 4 (ids 2, 3).
    >>> clusters = jnp.array([0, 1, 2, 3])
    >>> labels = jnp.array([1, 0, 1, 0])
    >>> preds = experts.oracle_expert(
    ...     jax.random.key(0), labels, num_classes=2, groups=clusters,
    ...     oracle_groups=jnp.array([False, False, True, True]))
    >>> print(preds[2:])
    [1 0]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  _validation.check_ndim(oracle_groups, 1, "oracle_groups", "[G]")
  if jnp.result_type(oracle_groups) != jnp.bool_:
    raise TypeError(f"`oracle_groups` must be boolean, got "
                    f"{jnp.result_type(oracle_groups)}.")
  p = jnp.asarray(oracle_groups).astype(jnp.float32)
  return noisy_expert(key, labels, num_classes=num_classes, p_correct=p,
                      groups=groups)


def random_expert(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
) -> jax.Array:
  """One expert that guesses uniformly over all K labels (accuracy 1/K).

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels (only their shape is used).
    num_classes: K (static).

  Returns:
    ``[N]`` int32 predictions, independent of ``labels``.

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-integer ``labels`` or a
      non-int ``num_classes``.
    ValueError: ``labels`` not ``[N]`` or out of range (when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> preds = experts.random_expert(jax.random.key(0), jnp.zeros(5, int),
    ...                               num_classes=3)
    >>> print(preds.shape, preds.dtype)
    (5,) int32
  """
  return noisy_expert(key, labels, num_classes=num_classes, p_correct=0.0)


def noisy_experts(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    p_correct: jax.typing.ArrayLike,
    groups: jax.typing.ArrayLike | None = None,
    exclude_true_label: bool = False,
) -> jax.Array:
  """J independent experts, each knowing the label with its own probability.

  ``jax.vmap`` of :func:`noisy_expert` over the rows of ``p_correct``:
  column ``j`` equals ``noisy_expert(jax.random.fold_in(key, j), labels,
  p_correct=p_correct[j], ...)``, so the first J columns do not change when
  experts are added.

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels in ``[0, num_classes)``.
    num_classes: K (static).
    p_correct: ``[J]`` (one probability per expert) or ``[J, G]`` (per expert
      and group) probabilities in [0, 1].
    groups: optional ``[N]`` int group ids in ``[0, G)``; defaults to
      ``labels``.
    exclude_true_label: as in :func:`noisy_expert`.

  Returns:
    ``[N, J]`` int32 expert predictions; column ``j`` uses
    ``jax.random.fold_in(key, j)`` (``-1`` where, under jit, a label or group
    is out of range).

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-integer ``labels`` or
      ``groups``, a non-int ``num_classes`` or a non-bool
      ``exclude_true_label``.
    ValueError: bad shapes, probabilities outside [0, 1], labels or groups
      out of range (values when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> # Paper, Sec. 5.3 on a 4-cluster mixture: one random expert and
    >>> # three experts that know clusters 1-2 with probability 0.2, 0.5, 0.95.
    >>> p = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.0, 0.0],
    ...                [0.5, 0.5, 0.0, 0.0], [0.95, 0.95, 0.0, 0.0]])
    >>> clusters = jnp.arange(8) % 4
    >>> preds = experts.noisy_experts(jax.random.key(0), clusters % 2,
    ...                               num_classes=2, p_correct=p,
    ...                               groups=clusters)
    >>> print(preds.shape)
    (8, 4)

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  p_correct = jnp.asarray(p_correct)
  p_shape = p_correct.shape
  if len(p_shape) not in (1, 2) or p_shape[0] < 1:
    raise ValueError(f"`p_correct` must have shape [J] or [J, G] with J >= 1, "
                     f"got {tuple(p_shape)}.")
  num_groups = p_shape[1] if len(p_shape) == 2 else None
  num_classes = _check_labels_groups(key, labels, groups, num_classes,
                                     num_groups)
  _validation.check_unit_interval(p_correct, "p_correct")
  exclude_true_label = _check_flag(exclude_true_label, "exclude_true_label")
  if groups is None:
    groups = labels
  return _simulate_many(key, labels, groups, p_correct, num_classes,
                        exclude_true_label)


def oracle_experts(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    oracle_groups: jax.typing.ArrayLike,
    groups: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """J independent experts, each an oracle on its own groups, random elsewhere.

  Column ``j`` equals ``oracle_expert(jax.random.fold_in(key, j), labels,
  oracle_groups=oracle_groups[j], ...)``.

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels in ``[0, num_classes)``.
    num_classes: K (static).
    oracle_groups: ``[J, G]`` bool; row ``j`` marks where expert ``j`` is an
      oracle. For J experts sharing one mask ``m [G]`` pass
      ``jnp.broadcast_to(m, (J, G))`` (paper, Sec. 5.2).
    groups: optional ``[N]`` int group ids in ``[0, G)``; defaults to
      ``labels``.

  Returns:
    ``[N, J]`` int32 expert predictions; column ``j`` uses
    ``jax.random.fold_in(key, j)`` (``-1`` where, under jit, a label or group
    is out of range).

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-boolean
      ``oracle_groups`` or non-integer ``labels``.
    ValueError: bad shapes or out-of-range labels/groups (when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> # CIFAR-10, Sec. 5.2: 3 experts, each an oracle on the first 5 classes.
    >>> mask = jnp.broadcast_to(jnp.arange(10) < 5, (3, 10))
    >>> labels = jnp.arange(10)
    >>> preds = experts.oracle_experts(jax.random.key(0), labels,
    ...                                num_classes=10, oracle_groups=mask)
    >>> print(preds[:5, 0])
    [0 1 2 3 4]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  _validation.check_ndim(oracle_groups, 2, "oracle_groups", "[J, G]")
  if jnp.result_type(oracle_groups) != jnp.bool_:
    raise TypeError(f"`oracle_groups` must be boolean, got "
                    f"{jnp.result_type(oracle_groups)}.")
  p = jnp.asarray(oracle_groups).astype(jnp.float32)
  return noisy_experts(key, labels, num_classes=num_classes, p_correct=p,
                       groups=groups)


def specialised_oracle_groups(
    num_experts: int, num_groups: int, *, groups_per_expert: int = 2
) -> np.ndarray:
  """Masks of non-overlapping expertise: expert e knows groups ``e*c..e*c+c-1``.

  Indices wrap around modulo ``num_groups`` when ``num_experts *
  groups_per_expert`` exceeds it.

  Args:
    num_experts: J.
    num_groups: G (classes, or clusters).
    groups_per_expert: c, the number of groups each expert knows.

  Returns:
    ``[J, G]`` bool numpy mask.

  Raises:
    TypeError, ValueError: non-int or non-positive sizes, ``c > G``.

  Example:
    >>> from l2d_jax import experts
    >>> print(experts.specialised_oracle_groups(2, 5).astype(int))
    [[1 1 0 0 0]
     [0 0 1 1 0]]
  """
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  num_groups = _validation.check_static_int(num_groups, "num_groups",
                                            minimum=1)
  groups_per_expert = _validation.check_static_int(
      groups_per_expert, "groups_per_expert", minimum=1)
  if groups_per_expert > num_groups:
    raise ValueError(f"`groups_per_expert`={groups_per_expert} exceeds "
                     f"`num_groups`={num_groups}.")
  start = np.arange(num_experts)[:, None] * groups_per_expert
  known = (start + np.arange(groups_per_expert)) % num_groups
  mask = np.zeros((num_experts, num_groups), bool)
  np.put_along_axis(mask, known, True, axis=1)
  return mask


def specialised_experts(
    key: jax.Array,
    labels: jax.typing.ArrayLike,
    *,
    num_classes: int,
    num_experts: int,
    classes_per_expert: int = 2,
    groups: jax.typing.ArrayLike | None = None,
    num_groups: int | None = None,
) -> jax.Array:
  """J specialised experts: expert e is an oracle on its own few classes.

  Expert ``e`` (0-based) is an oracle on classes (or groups)
  ``e*c, ..., e*c + c - 1`` (modulo the number of groups) and guesses
  uniformly elsewhere; the paper's Sec. 5.4 uses ``c = 2`` on CIFAR-10.

  Args:
    key: a ``jax.random`` key (``jax.random.key(seed)``).
    labels: ``[N]`` int true labels in ``[0, num_classes)``.
    num_classes: K (static).
    num_experts: J (static).
    classes_per_expert: c, the number of classes (groups) each expert knows.
    groups: optional ``[N]`` int group ids; defaults to ``labels``.
    num_groups: G when ``groups`` is given (defaults to ``num_classes``).

  Returns:
    ``[N, J]`` int32 expert predictions; column ``j`` uses
    ``jax.random.fold_in(key, j)`` (``-1`` where, under jit, a label or group
    is out of range).

  Raises:
    TypeError: ``key`` not a ``jax.random`` key, non-int sizes or
      non-integer ``labels``.
    ValueError: bad shapes, non-positive sizes, ``classes_per_expert`` above
      the number of groups, ``num_groups`` without ``groups``, or
      out-of-range labels/groups (values when concrete).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from l2d_jax import experts
    >>> labels = jnp.arange(10)
    >>> preds = experts.specialised_experts(jax.random.key(0), labels,
    ...                                     num_classes=10, num_experts=5)
    >>> print(preds[jnp.arange(10), jnp.arange(10) // 2])
    [0 1 2 3 4 5 6 7 8 9]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  num_classes = _validation.check_static_int(num_classes, "num_classes",
                                             minimum=1)
  if num_groups is None:
    num_groups = num_classes
  elif groups is None:
    raise ValueError("`num_groups` needs `groups` (without them the groups "
                     "are the classes).")
  num_groups = _validation.check_static_int(num_groups, "num_groups",
                                            minimum=1)
  classes_per_expert = _validation.check_static_int(
      classes_per_expert, "classes_per_expert", minimum=1)
  if classes_per_expert > num_groups:
    raise ValueError(f"`classes_per_expert`={classes_per_expert} exceeds the "
                     f"number of groups {num_groups}.")
  mask = specialised_oracle_groups(num_experts, num_groups,
                                   groups_per_expert=classes_per_expert)
  return oracle_experts(key, labels, num_classes=num_classes,
                        oracle_groups=jnp.asarray(mask), groups=groups)
