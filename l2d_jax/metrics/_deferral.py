"""Deferral metrics: system answers and accuracy, model coverage, workload.

A decision says who answers an input, in the one encoding of
``l2d_jax.deferral``: an int where 0 means the model answers and ``j >= 1``
means expert ``j`` (expert id ``j - 1`` of ``Annotations``, column ``j - 1`` of
``expert_predictions``) answers, as returned by
``l2d_jax.deferral.argmax_deferral``.

Decisions outside ``[0, J]`` raise ``ValueError`` when the arrays are
concrete. Under jit, where values cannot be inspected, such a decision (e.g.
the -1 that ``argmax_deferral`` gives a row with NaN logits) is never counted
for the model or for another expert: each function's docstring says what it
does with it instead. Empty inputs (or fully masked ones) give 0, not NaN.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


def _check_decisions(decisions: Any, where: Any) -> int:
  """Checks ``[N]`` integer decisions and an optional ``[N]`` mask; returns N."""
  _validation.check_ndim(decisions, 1, "decisions", "[N]")
  _validation.check_integer(decisions, "decisions")
  n = jnp.shape(decisions)[0]
  _validation.check_mask(where, n)
  return n


def _masked_mean(x: jax.Array, where: Any, axis: int = 0) -> jax.Array:
  """Mean over ``axis`` of the kept entries; 0 when none is kept (or N = 0)."""
  x = x.astype(jnp.result_type(float))
  if where is None:
    w = jnp.ones(x.shape[:axis + 1], x.dtype)
  else:
    w = jnp.asarray(where).astype(x.dtype)
  w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
  w = jnp.broadcast_to(w, x.shape)
  total = jnp.sum(w, axis=axis)
  return jnp.where(total > 0,
                   jnp.sum(w * x, axis=axis) / jnp.maximum(total, 1), 0)


def _answers(decisions, class_predictions, expert_predictions, where):
  """Checked `system_predictions` (``where`` only selects the value checks).

  Returns ``(answers, valid)``: ``valid`` is False for decisions outside
  ``[0, J]``, whose answer is -1.
  """
  n = _check_decisions(decisions, where)
  _validation.check_ndim(class_predictions, 1, "class_predictions", "[N]")
  _validation.check_ndim(expert_predictions, 2, "expert_predictions", "[N, J]")
  _validation.check_integer(class_predictions, "class_predictions")
  _validation.check_integer(expert_predictions, "expert_predictions")
  for name, x in (("class_predictions", class_predictions),
                  ("expert_predictions", expert_predictions)):
    if jnp.shape(x)[0] != n:
      raise ValueError(
          f"`{name}` must share the length N={n} of `decisions`, got shape "
          f"{tuple(jnp.shape(x))}.")
  num_experts = jnp.shape(expert_predictions)[1]
  _validation.check_index_range(decisions, num_experts + 1, "decisions",
                                where=where)
  decisions = jnp.asarray(decisions)
  class_predictions = jnp.asarray(class_predictions)
  expert_predictions = jnp.asarray(expert_predictions)
  dtype = jnp.result_type(class_predictions, expert_predictions)
  valid = (decisions >= 0) & (decisions <= num_experts)
  if num_experts == 0:
    chosen = jnp.zeros(n, dtype)
  else:
    slot = jnp.clip(decisions - 1, 0, num_experts - 1)
    chosen = jnp.take_along_axis(expert_predictions, slot[:, None],
                                 axis=1)[:, 0]
  answers = jnp.where(decisions == 0, class_predictions, chosen)
  return jnp.where(valid, answers, -1).astype(dtype), valid


def system_predictions(
    decisions: jax.typing.ArrayLike,
    class_predictions: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
) -> jax.Array:
  """Final answers of the deferral system.

  Args:
    decisions: ``[N]`` int decisions in ``[0, J]`` (0 = model, j = expert j).
    class_predictions: ``[N]`` int model predictions.
    expert_predictions: ``[N, J]`` int expert answers.

  Returns:
    ``[N]`` answers: ``class_predictions`` where ``decisions == 0``, else
    ``expert_predictions[:, decisions - 1]``; dtype of the promoted
    predictions. Under jit a decision outside ``[0, J]`` gets the answer -1
    (no class), never another agent's answer.

  Raises:
    TypeError: non-integer inputs.
    ValueError: shapes other than ``[N]``/``[N, J]``; decisions outside
      ``[0, J]`` (checked when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> decisions = jnp.array([0, 1, 2])
    >>> experts = jnp.array([[5, 6], [5, 6], [5, 6]])
    >>> print(metrics.system_predictions(decisions, jnp.array([1, 1, 1]),
    ...                                  experts))
    [1 5 6]
  """
  answers, _ = _answers(decisions, class_predictions, expert_predictions,
                        None)
  return answers


def system_accuracy(
    decisions: jax.typing.ArrayLike,
    class_predictions: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Accuracy of the combined model-and-experts system.

  Args:
    decisions: ``[N]`` int decisions in ``[0, J]`` (0 = model, j = expert j).
    class_predictions: ``[N]`` int model predictions.
    expert_predictions: ``[N, J]`` int expert answers.
    labels: ``[N]`` int true labels.
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    Scalar share of correct final answers; 0 when ``N = 0`` or no example is
    kept. NaN when a kept decision lies outside ``[0, J]`` (possible only
    under jit, where it cannot raise).

  Raises:
    TypeError: non-integer inputs, non-boolean ``where``.
    ValueError: mismatched shapes; decisions outside ``[0, J]`` (when
      concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> decisions = jnp.array([0, 1, 2, 0])
    >>> model = jnp.array([0, 0, 0, 0])
    >>> experts = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]])
    >>> labels = jnp.array([0, 1, 1, 1])
    >>> print(metrics.system_accuracy(decisions, model, experts, labels))
    0.5

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.
  """
  n = _check_decisions(decisions, where)
  _validation.check_ndim(labels, 1, "labels", "[N]")
  _validation.check_integer(labels, "labels")
  if jnp.shape(labels)[0] != n:
    raise ValueError(f"`labels` must share the length N={n} of `decisions`, "
                     f"got shape {tuple(jnp.shape(labels))}.")
  answers, valid = _answers(decisions, class_predictions, expert_predictions,
                            where)
  accuracy = _masked_mean(answers == jnp.asarray(labels), where)
  kept = valid if where is None else valid | ~jnp.asarray(where)
  return jnp.where(jnp.all(kept), accuracy, jnp.nan)


def model_coverage(
    decisions: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Share of examples the model keeps (``decisions == 0``).

  Not to be confused with ``conformal.set_coverage`` (share of prediction
  sets holding the true label).

  Args:
    decisions: ``[N]`` int decisions in ``[0, J]``.
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    Scalar share in ``[0, 1]``; 0 when ``N = 0`` or no example is kept.
    Negative decisions (possible only under jit, e.g. -1 from
    ``argmax_deferral`` on NaN logits) count in ``N`` but not as kept, so
    ``model_coverage + sum(deferral_rates) < 1`` reveals them.

  Raises:
    TypeError: non-integer ``decisions``, non-boolean ``where``.
    ValueError: ``decisions`` not ``[N]``; negative decisions (when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> print(metrics.model_coverage(jnp.array([0, 1, 2, 0])))
    0.5

  References:
    Mozannar & Sontag, Consistent Estimators for Learning to Defer to an
    Expert, ICML 2020.
  """
  _check_decisions(decisions, where)
  # J is unknown here: only the lower end of [0, J] can be checked.
  if _validation.is_concrete(decisions) and (
      where is None or _validation.is_concrete(where)):
    d = np.asarray(decisions)
    kept = d if where is None else d[np.asarray(where, bool)]
    if kept.size and kept.min() < 0:
      raise ValueError(f"`decisions` must be >= 0 (0 = model, j >= 1 = "
                       f"expert j), got values in [{kept.min()}, "
                       f"{kept.max()}].")
  return _masked_mean(jnp.asarray(decisions) == 0, where)


def deferral_rates(
    decisions: jax.typing.ArrayLike,
    *,
    num_experts: int,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Share of all examples deferred to each expert.

  ``model_coverage(decisions) + deferral_rates(decisions, ...).sum() == 1``
  for valid decisions.

  Args:
    decisions: ``[N]`` int decisions in ``[0, J]``.
    num_experts: the number of experts J (static; Python or NumPy int).
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    ``[J]`` rates; entry ``j - 1`` is the share with ``decisions == j``; 0
    when ``N = 0`` or no example is kept. A decision outside ``[0, J]``
    (possible only under jit) counts in ``N`` but for no expert.

  Raises:
    TypeError: non-integer ``decisions`` or ``num_experts``, non-boolean
      ``where``.
    ValueError: ``num_experts < 1``; decisions outside ``[0, J]`` (when
      concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> print(metrics.deferral_rates(jnp.array([0, 1, 2, 2]), num_experts=3))
    [0.25 0.5  0.  ]
  """
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  _check_decisions(decisions, where)
  _validation.check_index_range(decisions, num_experts + 1, "decisions",
                                where=where)
  experts = jnp.arange(1, num_experts + 1)
  return _masked_mean(jnp.asarray(decisions)[:, None] == experts, where)


def workload(
    decisions: jax.typing.ArrayLike,
    *,
    num_experts: int,
    where: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """How many queries the experts get, and how evenly.

  Works on any leading batch shape (e.g. ``[splits, alphas, N]``), reducing
  over the last axis only.

  Args:
    decisions: ``[..., N]`` int decisions in ``[0, J]`` (0 = model, j = expert
      j).
    num_experts: the number of experts J (static; Python or NumPy int).
    where: optional bool of the shape of ``decisions``; only these examples
      count.

  Returns:
    ``(queries, max_queries_per_expert, avg_queries_per_queried_expert)``,
    each of shape ``[...]``: the number of deferred examples (int32), the
    most any one expert gets (int32), and ``queries`` divided by the number
    of experts that get at least one (floating; 0 when no expert is
    queried). A decision outside ``[0, J]`` (possible only under jit) is
    dropped: it counts for no expert and not in ``queries``.

  Raises:
    TypeError: non-integer ``decisions`` or ``num_experts``, non-boolean
      ``where``.
    ValueError: scalar ``decisions``, ``where`` of another shape,
      ``num_experts < 1``; decisions outside ``[0, J]`` (when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> queries, most, avg = metrics.workload(jnp.array([0, 3, 3, 1, 0, 3]),
    ...                                       num_experts=3)
    >>> print(queries, most, avg)
    4 3 2.0

  References:
    Bary, Macq & Petit, No Need for "Learning" to Defer? A Training Free
    Deferral Framework to Multiple Experts through Conformal Prediction
    (the workload columns of its tables).
  """
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  _validation.check_integer(decisions, "decisions")
  shape = tuple(jnp.shape(decisions))
  if not shape:
    raise ValueError("`decisions` must have shape [..., N], got a scalar.")
  if where is not None:
    if tuple(jnp.shape(where)) != shape:
      raise ValueError(f"`where` must have the shape {shape} of `decisions`, "
                       f"got {tuple(jnp.shape(where))}.")
    if jnp.result_type(where) != jnp.bool_:
      raise TypeError(f"`where` must be boolean, got "
                      f"{jnp.result_type(where)}.")
  _validation.check_index_range(decisions, num_experts + 1, "decisions",
                                where=where)
  batch, n = shape[:-1], shape[-1]
  rows = int(np.prod(batch, dtype=np.int64))
  flat = jnp.asarray(decisions).reshape(rows, n)
  deferred = (flat >= 1) & (flat <= num_experts)
  if where is not None:
    deferred = deferred & jnp.asarray(where).reshape(rows, n)
  slot = jnp.where(deferred, flat - 1, 0)
  hist = jnp.zeros((rows, num_experts), jnp.int32).at[
      jnp.arange(rows)[:, None], slot].add(deferred.astype(jnp.int32))
  queries = hist.sum(axis=-1)
  queried = (hist > 0).sum(axis=-1)
  avg = jnp.where(queried > 0, queries / jnp.maximum(queried, 1), 0.0)
  avg = avg.astype(jnp.result_type(float))
  return (queries.reshape(batch), hist.max(axis=-1).reshape(batch),
          avg.reshape(batch))
