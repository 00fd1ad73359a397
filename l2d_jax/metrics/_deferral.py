"""Deferral metrics: system accuracy, coverage and per-expert deferral rates.

A deferral decision is an int in ``[0, J]``: 0 means the model answers,
``j >= 1`` means expert ``j`` (1-based) answers, as returned by
``l2d_jax.deferral.argmax_deferral``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from l2d_jax import _validation


def _check_defer(defer: Any, where: Any) -> int:
  _validation.check_ndim(defer, 1, "defer", "[N]")
  _validation.check_integer(defer, "defer")
  n = jnp.shape(defer)[0]
  _validation.check_mask(where, n)
  return n


def _masked_mean(x: jax.Array, where: Any, axis: int = 0) -> jax.Array:
  """Mean over ``axis`` of the kept entries; 0 when none is kept."""
  x = x.astype(jnp.result_type(float))
  if where is None:
    return jnp.mean(x, axis=axis)
  w = jnp.asarray(where).astype(x.dtype)
  w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
  total = jnp.sum(w, axis=axis)
  return jnp.where(total > 0,
                   jnp.sum(w * x, axis=axis) / jnp.maximum(total, 1), 0)


def _answers(defer, class_predictions, expert_predictions, where):
  """Checked implementation of `system_predictions` (``where`` for checks)."""
  n = _check_defer(defer, where)
  _validation.check_ndim(class_predictions, 1, "class_predictions", "[N]")
  _validation.check_ndim(expert_predictions, 2, "expert_predictions", "[N, J]")
  _validation.check_integer(class_predictions, "class_predictions")
  _validation.check_integer(expert_predictions, "expert_predictions")
  for name, x in (("class_predictions", class_predictions),
                  ("expert_predictions", expert_predictions)):
    if jnp.shape(x)[0] != n:
      raise ValueError(f"`{name}` must share the length N={n} of `defer`, got "
                       f"shape {tuple(jnp.shape(x))}.")
  num_experts = jnp.shape(expert_predictions)[1]
  _validation.check_index_range(defer, num_experts + 1, "defer", where=where)
  defer = jnp.asarray(defer)
  expert_predictions = jnp.asarray(expert_predictions)
  if num_experts == 0:
    return jnp.asarray(class_predictions)
  slot = jnp.clip(defer - 1, 0, num_experts - 1)
  chosen = jnp.take_along_axis(expert_predictions, slot[:, None], axis=1)[:, 0]
  return jnp.where(defer == 0, class_predictions, chosen)


def system_predictions(
    defer: jax.typing.ArrayLike,
    class_predictions: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
) -> jax.Array:
  """Final answers of the deferral system.

  Args:
    defer: ``[N]`` int decisions in ``[0, J]`` (0 = model, j = expert j).
    class_predictions: ``[N]`` int model predictions.
    expert_predictions: ``[N, J]`` int expert answers.

  Returns:
    ``[N]`` answers: ``class_predictions`` where ``defer == 0``, else
    ``expert_predictions[:, defer - 1]``; dtype of the promoted predictions.

  Raises:
    TypeError: non-integer inputs.
    ValueError: shapes other than ``[N]``/``[N, J]``; decisions outside
      ``[0, J]`` (checked when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> defer = jnp.array([0, 1, 2])
    >>> experts = jnp.array([[5, 6], [5, 6], [5, 6]])
    >>> print(metrics.system_predictions(defer, jnp.array([1, 1, 1]), experts))
    [1 5 6]
  """
  return _answers(defer, class_predictions, expert_predictions, None)


def system_accuracy(
    defer: jax.typing.ArrayLike,
    class_predictions: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Accuracy of the combined model-and-experts system.

  Args:
    defer: ``[N]`` int decisions in ``[0, J]`` (0 = model, j = expert j).
    class_predictions: ``[N]`` int model predictions.
    expert_predictions: ``[N, J]`` int expert answers.
    labels: ``[N]`` int true labels.
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    Scalar share of correct final answers (0 when no example is kept).

  Raises:
    TypeError: non-integer inputs, non-boolean ``where``.
    ValueError: mismatched shapes; decisions outside ``[0, J]`` (when
      concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> defer = jnp.array([0, 1, 2, 0])
    >>> model = jnp.array([0, 0, 0, 0])
    >>> experts = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]])
    >>> labels = jnp.array([0, 1, 1, 1])
    >>> print(metrics.system_accuracy(defer, model, experts, labels))
    0.5

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.
  """
  n = _check_defer(defer, where)
  _validation.check_ndim(labels, 1, "labels", "[N]")
  _validation.check_integer(labels, "labels")
  if jnp.shape(labels)[0] != n:
    raise ValueError(f"`labels` must share the length N={n} of `defer`, got "
                     f"shape {tuple(jnp.shape(labels))}.")
  answers = _answers(defer, class_predictions, expert_predictions, where)
  return _masked_mean(answers == jnp.asarray(labels), where)


def coverage(
    defer: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Share of examples the model keeps (``defer == 0``).

  Args:
    defer: ``[N]`` int decisions in ``[0, J]``.
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    Scalar coverage in ``[0, 1]`` (0 when no example is kept).

  Raises:
    TypeError: non-integer ``defer``, non-boolean ``where``.
    ValueError: ``defer`` not ``[N]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> print(metrics.coverage(jnp.array([0, 1, 2, 0])))
    0.5

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.
  """
  _check_defer(defer, where)
  return _masked_mean(jnp.asarray(defer) == 0, where)


def deferral_rates(
    defer: jax.typing.ArrayLike,
    *,
    num_experts: int,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Share of all examples deferred to each expert.

  ``coverage(defer) + deferral_rates(defer, ...).sum() == 1``.

  Args:
    defer: ``[N]`` int decisions in ``[0, J]``.
    num_experts: the number of experts J (static).
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    ``[J]`` rates; entry ``j - 1`` is the share with ``defer == j``.

  Raises:
    TypeError: non-integer ``defer`` or ``num_experts``, non-boolean ``where``.
    ValueError: ``num_experts < 1``; decisions outside ``[0, J]`` (when
      concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> print(metrics.deferral_rates(jnp.array([0, 1, 2, 2]), num_experts=3))
    [0.25 0.5  0.  ]
  """
  if isinstance(num_experts, bool) or not isinstance(num_experts, int):
    raise TypeError(f"`num_experts` must be a Python int, got "
                    f"{type(num_experts).__name__}.")
  if num_experts < 1:
    raise ValueError(f"`num_experts` must be >= 1, got {num_experts}.")
  _check_defer(defer, where)
  _validation.check_index_range(defer, num_experts + 1, "defer", where=where)
  experts = jnp.arange(1, num_experts + 1)
  return _masked_mean(jnp.asarray(defer)[:, None] == experts, where)
