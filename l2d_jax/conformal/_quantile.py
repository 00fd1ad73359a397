"""Exact split-conformal quantiles, prediction sets, coverage and set size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation

# (n + 1) * alpha is snapped to the nearest integer when it lies this close
# (relative) to it, so that decimal alphas such as 0.1 are treated as exact in
# float32 and float64 alike.
_SNAP_RTOL = 1e-6


def quantile_rank(n: int, alpha: ArrayLike) -> jax.Array:
  """1-indexed order statistic ``ceil((n + 1) * (1 - alpha))``.

  Computed as ``n + 1 - floor((n + 1) * alpha)`` with ``(n + 1) * alpha``
  snapped to an integer within a relative ``1e-6``, which makes decimal
  alphas exact in float32.

  Args:
    n: number of calibration scores.
    alpha: miscoverage level(s) in (0, 1), any shape.

  Returns:
    int32 ranks in ``[1, n + 1]`` with the shape of ``alpha``; a rank of
    ``n + 1`` means the quantile is ``+inf``.
  """
  alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
  t = (n + 1) * alpha
  r = jnp.round(t)
  snapped = jnp.where(jnp.abs(t - r) <= _SNAP_RTOL * jnp.maximum(1.0, t), r,
                      jnp.floor(t))
  return (n + 1 - snapped).astype(jnp.int32)


def conformal_quantile(
    scores: ArrayLike,
    alpha: ArrayLike,
    *,
    presorted: bool = False,
) -> jax.Array:
  """Split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

  This is the exact order statistic of Vovk et al. / Angelopoulos & Bates, not
  ``np.quantile(..., method='higher')`` at level ``ceil((n+1)(1-alpha))/n``,
  which returns the next order statistic for most ``n`` and ``alpha``.

  Args:
    scores: ``[n]`` calibration scores (``n >= 1``).
    alpha: scalar or ``[A]`` miscoverage levels in (0, 1).
    presorted: set when ``scores`` are already sorted ascending (the sort is
      the expensive part on CPU; sort once and sweep many alphas).

  Returns:
    Scalar for a scalar ``alpha``, ``[A]`` for an array: the threshold, or
    ``+inf`` where the rank exceeds ``n``.

  Raises:
    ValueError: empty ``scores``, NaN scores, or ``alpha`` outside (0, 1).

  Example:
    >>> import jax.numpy as jnp
    >>> conformal_quantile(jnp.arange(9.0), 0.2)   # ceil(10 * 0.8) = 8th
    Array(7., dtype=float32)
  """
  _validation.check_ndim(scores, 1, "scores", "[n]")
  n = jnp.shape(scores)[0]
  if n < 1:
    raise ValueError("`scores` is empty: the calibration set must hold at "
                     "least one point.")
  _validation.check_finite(scores, "scores")
  _validation.check_alpha(alpha, "alpha")
  s = jnp.asarray(scores)
  s = s if presorted else jnp.sort(s)
  k = quantile_rank(n, alpha)
  q = s[jnp.clip(k - 1, 0, n - 1)]
  return jnp.where(k > n, jnp.inf, q).astype(s.dtype)


def prediction_sets(
    scores: ArrayLike, qhat: ArrayLike, *, include_crossing: bool = False
) -> jax.Array:
  """Prediction sets ``{y : s(x, y) <= qhat}``.

  Args:
    scores: ``[n, K]`` scores of every label.
    qhat: scalar threshold, or ``[A]`` thresholds (one set per alpha).
    include_crossing: also include the threshold-crossing label, the label
      with the smallest score above ``qhat`` (first label on ties). With APS
      or RAPS scores calibrated with ``u = 1`` this is the non-randomized
      set of Romano et al. / Angelopoulos et al. (``allow_zero_sets=False``):
      never empty, and a superset of the plain set, so still valid.

  Returns:
    ``[n, K]`` bool for a scalar ``qhat``; ``[A, n, K]`` for ``[A]``.
  """
  _validation.check_ndim(scores, 2, "scores", "[n, num_classes]")
  s, q = jnp.asarray(scores), jnp.asarray(qhat)
  if q.ndim == 0:
    sets = s <= q
  else:
    _validation.check_ndim(q, 1, "qhat", "[] or [A]")
    s = s[None]
    q = q[:, None, None]
    sets = s <= q
  if include_crossing:
    above = jnp.where(sets, jnp.inf, s)
    crossing = jnp.argmin(above, axis=-1)
    has = jnp.isfinite(jnp.min(above, axis=-1))
    sets = sets | (jax.nn.one_hot(crossing, s.shape[-1], dtype=bool)
                   & has[..., None])
  return sets


def coverage(sets: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Share of points whose true label is in their set.

  Args:
    sets: ``[..., n, K]`` bool prediction sets.
    labels: ``[n]`` int labels.

  Returns:
    ``[...]`` empirical coverage.
  """
  sets = jnp.asarray(sets)
  labels = jnp.asarray(labels)
  hit = jnp.take_along_axis(
      sets, jnp.broadcast_to(labels[:, None], sets.shape[:-1] + (1,)), axis=-1)
  return hit[..., 0].mean(axis=-1)


def mean_set_size(sets: ArrayLike) -> jax.Array:
  """Mean number of labels per set, ``[...]`` for ``[..., n, K]`` sets."""
  return jnp.asarray(sets).sum(axis=-1).mean(axis=-1)


def set_sizes_from_sorted(
    sorted_scores: ArrayLike, qhat: ArrayLike, *, include_crossing: bool = False
) -> jax.Array:
  """Set sizes when scores are non-decreasing along the class axis.

  For LAC/APS/RAPS scores given rank by rank (see ``sort_probs``), each set is
  the prefix of the first ``size`` ranks.

  Args:
    sorted_scores: ``[n, K]`` non-decreasing rank scores.
    qhat: ``[A]`` thresholds (or scalar).
    include_crossing: add the threshold-crossing rank (see
      ``prediction_sets``): ``size = min(K, count + 1)``.

  Returns:
    ``[n, A]`` (or ``[n]``) int32 set sizes in ``[0, K]``.
  """
  s = jnp.asarray(sorted_scores)
  q = jnp.asarray(qhat)
  side = jax.vmap(lambda row: jnp.searchsorted(row, q, side="right"))
  sizes = side(s).astype(jnp.int32)
  if include_crossing:
    sizes = jnp.minimum(sizes + 1, s.shape[-1])
  return sizes


def paper_alpha_grid(model_accuracy: float) -> np.ndarray:
  """The paper's alpha grid: fine up to ``1 - accuracy``, coarse to 0.99.

  Alphas go from 0.001 to ``round(1 - model_accuracy, 3)`` in steps of 0.001,
  then continue from that value in steps of 0.01 up to 0.99. (The paper's text
  is ambiguous about the coarse part; the alpha_opt values it reports, e.g.
  0.109/0.209/0.319 for a 99.14% model, fit a coarse grid continuing from the
  end of the fine one.)

  Args:
    model_accuracy: top-1 accuracy of the model in (0, 1).

  Returns:
    ``[A]`` float64 increasing alphas, rounded to 1e-3.
  """
  if not 0.0 < model_accuracy < 1.0:
    raise ValueError(f"`model_accuracy` must lie in (0, 1), got "
                     f"{model_accuracy}.")
  end = max(1, int(round((1.0 - model_accuracy) * 1000)))
  fine = np.arange(1, end + 1)
  coarse = np.arange(end + 10, 991, 10)
  return np.round(np.concatenate([fine, coarse]) / 1000.0, 3)
