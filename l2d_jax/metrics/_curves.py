"""Deferral curves and the areas under them (AURSAC, AURDAC).

Test points are ranked by a deferral priority (highest first) and deferred
one at a time: after ``d`` deferrals the ``d`` points of highest priority are
answered by the expert and the others by the model. SysAcc(d) is the system
accuracy, ExpAcc(d) the expert's accuracy on the deferred points.

Both readings of the paper's protocol are a matter of inputs:

- routed: with per-expert priorities ``P [N, J]`` and correctness
  ``C [N, J]``, route each point to ``j_i = argmax_j P[i, j]`` and pass
  ``priority = P[i, j_i]`` and ``expert_correct = C[i, j_i]``;
- per expert: call once per expert with ``P[:, j]`` and ``C[:, j]`` (e.g.
  ``jax.vmap`` over the expert axis, ``in_axes=(1, None, 1)``) and average
  the areas.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


class DeferralCurves(NamedTuple):
  """SysAcc and ExpAcc for every number of deferred points ``d = 0..N``.

  Attributes:
    system_accuracy: ``[N + 1]``; entry ``d`` is SysAcc after deferring the
      ``d`` points of highest priority (deferral fraction ``d / N``).
    expert_accuracy: ``[N + 1]``; entry ``d >= 1`` is the expert's accuracy
      on those ``d`` points; entry 0 (nothing deferred, undefined) is set to
      entry 1.
  """

  system_accuracy: jax.Array
  expert_accuracy: jax.Array


def _check_correct(x: Any, name: str, n: int) -> None:
  if tuple(jnp.shape(x)) != (n,):
    raise ValueError(f"`{name}` must have shape [N]=({n},) like `priority`, "
                     f"got {tuple(jnp.shape(x))}.")
  dtype = jnp.result_type(x)
  if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer)
          or jnp.issubdtype(dtype, jnp.floating)):
    raise TypeError(f"`{name}` must be boolean or numeric, got {dtype}.")
  _validation.check_unit_interval(x, name)


def _check_priority(priority: Any) -> int:
  _validation.check_ndim(priority, 1, "priority", "[N]")
  n = jnp.shape(priority)[0]
  if n < 1:
    raise ValueError("`priority` must hold at least one point, got N=0.")
  dtype = jnp.result_type(priority)
  if dtype == jnp.bool_ or not (jnp.issubdtype(dtype, jnp.integer)
                                or jnp.issubdtype(dtype, jnp.floating)):
    raise TypeError(f"`priority` must be numeric, got {dtype}.")
  if _validation.is_concrete(priority):
    p = np.asarray(priority)
    if np.isnan(p).any():
      raise ValueError(f"`priority` contains NaN ({int(np.isnan(p).sum())} "
                       f"of {p.size} points): the ranking is undefined.")
  return n


def deferral_curves(
    priority: jax.typing.ArrayLike,
    model_correct: jax.typing.ArrayLike,
    expert_correct: jax.typing.ArrayLike,
) -> DeferralCurves:
  """SysAcc(d) and ExpAcc(d) for every deferral count ``d = 0..N``.

  Points are deferred in decreasing priority; ties keep index order (a
  stable sort: among equal priorities the lower index is deferred first).
  With ``S`` the ``d`` deferred points,
  ``SysAcc(d) = (Σ_{i∈S} e_i + Σ_{i∉S} m_i) / N`` and
  ``ExpAcc(d) = Σ_{i∈S} e_i / d``; ExpAcc is undefined with nothing
  deferred, and ``ExpAcc(0) := ExpAcc(1)`` (the accuracy on the single
  point of highest priority). See the module docstring for the routed and
  per-expert readings with several experts.

  Args:
    priority: ``[N]`` deferral priorities (higher = deferred earlier), e.g.
      ``g_⊥ − max_k g_k``.
    model_correct: ``[N]`` bool (or 0/1, or probabilities in ``[0, 1]``):
      whether the model is right on each point.
    expert_correct: ``[N]`` likewise for the expert that would answer it.

  Returns:
    :class:`DeferralCurves` of two ``[N + 1]`` float arrays; index ``d`` is
    the deferral fraction ``d / N``. Under jit a ``priority`` with NaN
    gives all-NaN curves.

  Raises:
    TypeError: non-numeric inputs.
    ValueError: shapes other than ``[N]`` (``N >= 1``); (when concrete) NaN
      in ``priority``, correctness outside ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> curves = metrics.deferral_curves(jnp.array([0.3, 0.9, 0.1, 0.5]),
    ...                                  jnp.array([1, 0, 1, 1]),
    ...                                  jnp.array([0, 1, 1, 0]))
    >>> print(curves.system_accuracy)
    [0.75 1.   0.75 0.5  0.5 ]
    >>> print(curves.expert_accuracy)
    [1.         1.         0.5        0.33333334 0.5       ]
  """
  n = _check_priority(priority)
  _check_correct(model_correct, "model_correct", n)
  _check_correct(expert_correct, "expert_correct", n)
  priority = jnp.asarray(priority)
  dtype = jnp.result_type(float)
  m = jnp.asarray(model_correct).astype(dtype)
  e = jnp.asarray(expert_correct).astype(dtype)
  order = jnp.argsort(-priority.astype(dtype), stable=True)
  m, e = m[order], e[order]
  zero = jnp.zeros((1,), dtype)
  expert_sum = jnp.concatenate([zero, jnp.cumsum(e)])
  model_kept = jnp.sum(m) - jnp.concatenate([zero, jnp.cumsum(m)])
  system = (expert_sum + model_kept) / n
  d = jnp.arange(n + 1, dtype=dtype)
  expert = expert_sum / jnp.maximum(d, 1)
  expert = expert.at[0].set(expert[1])
  invalid = jnp.any(jnp.isnan(priority))
  nan = jnp.asarray(jnp.nan, dtype)
  return DeferralCurves(jnp.where(invalid, nan, system),
                        jnp.where(invalid, nan, expert))


def _check_interval(interval: Any) -> tuple[Any, Any]:
  try:
    a, b = interval
  except (TypeError, ValueError):
    raise ValueError(f"`interval` must be a pair (a, b), got "
                     f"{interval!r}.") from None
  if _validation.is_concrete(a) and _validation.is_concrete(b):
    fa, fb = float(a), float(b)
    if not (0.0 <= fa < fb <= 1.0):
      raise ValueError(f"`interval` must satisfy 0 <= a < b <= 1, got "
                       f"({fa:g}, {fb:g}).")
  return a, b


def _area(values: jax.Array, interval: Any) -> jax.Array:
  """Mean of the piecewise-linear curve on ``d / N`` over ``[a, b]``."""
  a, b = _check_interval(interval)
  dtype = values.dtype
  a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
  n = values.shape[0] - 1
  grid = jnp.arange(n + 1, dtype=dtype) / n
  # Clipping the grid to [a, b] turns the segments outside into zero-width
  # ones and the straddling ones into [a, x] / [x, b] with the interpolated
  # end values: the trapezoid over the clipped grid is the exact integral.
  x = jnp.clip(grid, a, b)
  y = jnp.interp(x, grid, values)
  area = jnp.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)
  valid = (a >= 0) & (a < b) & (b <= 1)
  return jnp.where(valid, area / (b - a), jnp.nan)


def aursac(
    priority: jax.typing.ArrayLike,
    model_correct: jax.typing.ArrayLike,
    expert_correct: jax.typing.ArrayLike,
    *,
    interval: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Area under the SysAcc curve over ``interval``, divided by its length.

  The SysAcc curve of :func:`deferral_curves` is linear between the
  deferral fractions ``d / N``; the area over ``[a, b]`` is the trapezoid
  rule on that grid with the end points interpolated at ``a`` and ``b``
  (exact for the piecewise-linear curve), divided by ``b − a``.

  Args:
    priority: ``[N]`` deferral priorities (highest deferred first).
    model_correct: ``[N]`` model correctness (bool, 0/1 or in ``[0, 1]``).
    expert_correct: ``[N]`` correctness of the expert that would answer.
    interval: ``(a, b)`` with ``0 <= a < b <= 1`` (default the whole range).

  Returns:
    A float scalar in ``[0, 1]``; NaN under jit for NaN priorities or a
    traced invalid interval.

  Raises:
    TypeError: non-numeric inputs.
    ValueError: as for :func:`deferral_curves`; an ``interval`` that is not
      a pair with ``0 <= a < b <= 1`` (when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> print(metrics.aursac(jnp.array([0.3, 0.9, 0.1, 0.5]),
    ...                      jnp.array([1, 0, 1, 1]),
    ...                      jnp.array([0, 1, 1, 0])))
    0.71875
  """
  _check_interval(interval)
  return _area(deferral_curves(priority, model_correct,
                               expert_correct).system_accuracy, interval)


def aurdac(
    priority: jax.typing.ArrayLike,
    model_correct: jax.typing.ArrayLike,
    expert_correct: jax.typing.ArrayLike,
    *,
    interval: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Area under the ExpAcc curve over ``interval``, divided by its length.

  As :func:`aursac` on the ExpAcc curve of :func:`deferral_curves`, whose
  value with nothing deferred is ``ExpAcc(0) := ExpAcc(1/N)`` (the curve is
  flat on ``[0, 1/N]``). ``model_correct`` does not enter the result; it is
  taken (and checked) so both areas share one call shape.

  Args:
    priority: ``[N]`` deferral priorities (highest deferred first).
    model_correct: ``[N]`` model correctness.
    expert_correct: ``[N]`` correctness of the expert that would answer.
    interval: ``(a, b)`` with ``0 <= a < b <= 1``.

  Returns:
    A float scalar in ``[0, 1]``; NaN under jit for NaN priorities or a
    traced invalid interval.

  Raises:
    TypeError: non-numeric inputs.
    ValueError: as for :func:`aursac`.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> area = metrics.aurdac(jnp.array([0.3, 0.9, 0.1, 0.5]),
    ...                       jnp.array([1, 0, 1, 1]),
    ...                       jnp.array([0, 1, 1, 0]))
    >>> print(round(float(area), 4))  # (2 + 1.5 + 5/6 + 5/6) / 8
    0.6458
  """
  _check_interval(interval)
  return _area(deferral_curves(priority, model_correct,
                               expert_correct).expert_accuracy, interval)
