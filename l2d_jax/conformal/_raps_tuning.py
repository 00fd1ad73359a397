"""Tuning RAPS's ``k_reg`` and ``lam`` on a held-out part of the calibration set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.conformal import _quantile
from l2d_jax.conformal import _scores

DEFAULT_LAM_GRID = (0.001, 0.01, 0.1, 0.2, 0.5)


def tune_raps(
    probs: ArrayLike,
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    lam_grid: ArrayLike = DEFAULT_LAM_GRID,
    randomized: bool = False,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Chooses RAPS ``(k_reg, lam)`` for each alpha on a tuning set.

  Follows Angelopoulos et al. (2021): ``k_reg`` is the ``1 - alpha`` quantile
  (numpy's ``'higher'`` rule, as in the reference implementation) of the
  1-indexed ranks of the true labels; ``lam`` is the grid value whose
  conformalised sets on the tuning set have the smallest mean size (first
  value on ties). Sets keep the threshold-crossing label, as the
  non-randomized sets of the reference implementation do, and are built in
  the conformity space (see ``split_set_sizes``), so the choice does not
  depend on float precision.

  Args:
    probs: ``[n, K]`` probabilities of the tuning points.
    labels: ``[n]`` their labels.
    alpha: scalar or ``[A]`` miscoverage levels.
    lam_grid: ``[L]`` candidate penalties, finite and >= 0.
    randomized: use randomized scores (needs ``key``).
    key: PRNG key for randomized scores.

  Returns:
    ``(k_reg, lam)`` with the shape of ``alpha``; ``k_reg`` int32. Under
    jit, an alpha outside (0, 1) gives ``k_reg = -1`` and ``lam = NaN``.

  Raises:
    ValueError: bad shapes, probabilities, labels, alpha, fewer than 2
      points, or a ``lam_grid`` that is empty, NaN or negative.

  References:
    Angelopoulos, Bates, Malik and Jordan, "Uncertainty sets for image
    classifiers using conformal prediction", ICLR 2021.
  """
  _validation.check_ndim(probs, 2, "probs", "[n, num_classes]")
  _validation.check_probabilities(probs, "probs")
  _validation.check_ndim(labels, 1, "labels", "[n]")
  _validation.check_same_leading(probs, labels, "probs", "labels")
  _validation.check_labels(labels, np.shape(probs)[-1], "labels")
  if np.ndim(alpha) > 1:
    raise ValueError(f"`alpha` must be a scalar or have shape [A], got shape "
                     f"{tuple(np.shape(alpha))}.")
  _check_lam_grid(lam_grid)
  n = np.shape(probs)[0]
  if n < 2:
    raise ValueError(f"the RAPS tuning set must hold at least 2 points, got {n}.")
  order, sp = _scores.sort_probs(probs)
  labels = jnp.asarray(labels)
  pos = jnp.argmax(order == labels[:, None], axis=-1)
  aps = _scores.sorted_aps_conformity(sp, key=key, randomized=randomized)
  r1 = _scores._tie_group_start(sp) + 1  # pylint: disable=protected-access
  k_reg, lam, _ = _tune_from_conformity(aps, r1, pos, alpha,
                                        jnp.asarray(lam_grid))
  return k_reg, lam


def _tune_from_conformity(aps: jax.Array, r1: jax.Array, pos: jax.Array,
                          alpha: ArrayLike, lam_grid: jax.Array, lows=None):
  """``tune_raps`` from the tuning points' sorted APS conformities.

  Args:
    aps: ``[n, K]`` APS conformities of each rank (``sorted_aps_conformity``).
    r1: ``[n, K]`` int 1-based start of each rank's tie group.
    pos: ``[n]`` int rank of each point's true label.
    alpha: scalar or ``[A]`` miscoverage levels.
    lam_grid: ``[L]`` candidate penalties.
    lows: ``alpha_floors((n - 1, n + 1), alpha)`` when the caller has them
      (the sweep computes them once for every split); None: computed here.

  Returns:
    ``(k_reg, lam, lam_index)`` with the shape of ``alpha``; ``lam_index``
    is ``lam``'s position in ``lam_grid`` (0 where alpha is invalid). Shared
    by the sweep, which precomputes ``aps`` and ``r1`` for the whole pool.
  """
  n, num_k = aps.shape
  # Both ranks below are exact: ceil(m (1 - a)) = m - floor(m a).
  if lows is None:
    low_k = _quantile.alpha_floor(n - 1, alpha)
    low_q = _quantile.alpha_floor(n + 1, alpha)
  else:
    low_k, low_q = lows
  scalar = low_k.ndim == 0
  low_k, low_q = jnp.atleast_1d(low_k), jnp.atleast_1d(low_q)
  lam_grid = jnp.asarray(lam_grid, dtype=jnp.result_type(float))
  pick = lambda x: jnp.take_along_axis(x, pos[:, None], axis=-1)[:, 0]
  aps_y, r1_y = pick(aps), pick(r1)
  # 1-indexed rank of each true label (start of its tie group); numpy's
  # quantile(..., 1 - alpha, method="higher") on n values: index
  # ceil((n - 1)(1 - alpha)), 0-based.
  rank1 = jnp.sort(r1_y)
  k_reg = rank1[jnp.clip(n - 1 - low_k, 0, n - 1)]

  # RAPS conformity = APS conformity - lam * max(0, r1 - k): the APS part and
  # the tie-group ranks are shared by every (alpha, lam); the difference is
  # non-increasing along the ranks (see ``split_set_sizes``), so a set size
  # is a count of conformities above the threshold.
  num_l = lam_grid.shape[0]
  # k_reg is a rank in [1, K]: the calibration conformities of every (k, lam)
  # pair are sorted once ([K, L, n]) instead of once per (alpha, lam).
  k_all = jnp.arange(1, num_k + 1)[:, None, None]  # [K, 1, 1]
  lam_b = lam_grid[None, :, None]  # [1, L, 1]
  cal = _quantile._sort_floats(  # pylint: disable=protected-access
      aps_y - lam_b * jnp.maximum(0, r1_y - k_all))
  k_row = jnp.clip(k_reg - 1, 0, num_k - 1)[:, None]  # [A, 1]
  l_col = jnp.arange(num_l)[None, :]  # [1, L]
  j = low_q[:, None]
  t = cal[k_row, l_col, jnp.clip(j - 1, 0, n - 1)]
  t = jnp.where(j == 0, -jnp.inf, t)  # [A, L]
  # Mean set size min(count + 1, K) with count = #{r : c_r >= t}: the RAPS
  # conformity is non-increasing along the ranks (see ``split_set_sizes``),
  # so sum_i min(count_i + 1, K) = n + #{(i, r <= K - 2) : c_r(i) >= t},
  # counted directly for each (alpha, lam) (one fused compare-and-sum).
  k_a = (k_row + 1)[:, :, None, None]  # [A, 1, 1, 1]
  c = aps[None, None, :, :num_k - 1] - lam_grid[None, :, None, None] * (
      jnp.maximum(0, r1[None, None, :, :num_k - 1] - k_a))  # [A, L, n, K-1]
  above = (c >= t[:, :, None, None]).sum(axis=(2, 3), dtype=jnp.int32)
  sizes = (n + above) / n  # [A, L], the mean set size, exactly as a mean
  lam_index = jnp.argmin(sizes, axis=-1)
  lam = lam_grid[lam_index]
  invalid = (low_k < 0) | (low_q < 0)
  k_reg = jnp.where(invalid, -1, k_reg).astype(jnp.int32)
  lam = jnp.where(invalid, jnp.nan, lam)
  lam_index = jnp.where(invalid, 0, lam_index).astype(jnp.int32)
  if scalar:
    return k_reg[0], lam[0], lam_index[0]
  return k_reg, lam, lam_index


def _check_lam_grid(lam_grid: ArrayLike) -> None:
  """``[L]`` non-empty, finite and >= 0 (values when concrete)."""
  if np.ndim(lam_grid) != 1 or np.shape(lam_grid)[0] < 1:
    raise ValueError(f"`lam_grid` must be a non-empty sequence of shape [L], "
                     f"got shape {tuple(np.shape(lam_grid))}.")
  if _validation.is_concrete(lam_grid):
    g = np.asarray(lam_grid, dtype=np.float64)
    if not np.all(np.isfinite(g)) or g.min() < 0:
      raise ValueError(f"`lam_grid` must hold finite penalties >= 0, got "
                       f"{g.tolist()}.")
