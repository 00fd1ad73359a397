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


def _label_rank_positions(order: jax.Array, sorted_probs: jax.Array,
                          labels: jax.Array) -> jax.Array:
  """0-indexed rank of each true label (start of its tie group)."""
  pos = jnp.argmax(order == labels[:, None], axis=-1)
  start = _scores._tie_group_start(sorted_probs)
  return jnp.take_along_axis(start, pos[:, None], axis=-1)[:, 0]


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
  # Both ranks below are exact: ceil(m (1 - a)) = m - floor(m a).
  low_k = _quantile.alpha_floor(n - 1, alpha)
  low_q = _quantile.alpha_floor(n + 1, alpha)
  scalar = low_k.ndim == 0
  low_k, low_q = jnp.atleast_1d(low_k), jnp.atleast_1d(low_q)
  lam_grid = jnp.asarray(lam_grid, dtype=jnp.result_type(float))
  order, sp = _scores.sort_probs(probs)
  labels = jnp.asarray(labels)
  rank1 = jnp.sort(_label_rank_positions(order, sp, labels) + 1)
  # numpy's quantile(..., 1 - alpha, method="higher") on n values: index
  # ceil((n - 1)(1 - alpha)), 0-based.
  k_reg = rank1[jnp.clip(n - 1 - low_k, 0, n - 1)]
  pos = jnp.argmax(order == labels[:, None], axis=-1)

  # RAPS conformity = APS conformity - lam * max(0, r1 - k): the APS part and
  # the tie-group ranks are shared by every (alpha, lam); the difference is
  # non-increasing along the ranks (see ``split_set_sizes``), so a set size
  # is a count of conformities above the threshold.
  aps = _scores.sorted_aps_conformity(sp, key=key, randomized=randomized)
  r1 = _scores._tie_group_start(sp) + 1
  pick = lambda x: jnp.take_along_axis(x, pos[:, None], axis=-1)[:, 0]
  aps_y, r1_y = pick(aps), pick(r1)
  num_k = sp.shape[-1]
  num_l = lam_grid.shape[0]
  # k_reg is a rank in [1, K]: the calibration conformities of every (k, lam)
  # pair are sorted once ([K, L, n]) instead of once per (alpha, lam).
  k_all = jnp.arange(1, num_k + 1)[:, None, None]  # [K, 1, 1]
  lam_b = lam_grid[None, :, None]  # [1, L, 1]
  cal = jnp.sort(aps_y - lam_b * jnp.maximum(0, r1_y - k_all), axis=-1)
  k_row = jnp.clip(k_reg - 1, 0, num_k - 1)[:, None]  # [A, 1]
  l_col = jnp.arange(num_l)[None, :]  # [1, L]
  j = low_q[:, None]
  t = cal[k_row, l_col, jnp.clip(j - 1, 0, n - 1)]
  t = jnp.where(j == 0, -jnp.inf, t)  # [A, L]
  # Mean set size min(count + 1, K) with count = #{r : c_r >= t}: the RAPS
  # conformity is non-increasing along the ranks (see ``split_set_sizes``),
  # so sum_i min(count_i + 1, K) = n + #{(i, r <= K - 2) : c_r(i) >= t}, a
  # count in the sorted conformities of every (k, lam) pair.
  c = aps[:, None, None, :num_k - 1] - lam_grid[None, None, :, None] * (
      jnp.maximum(0, r1[:, None, None, :num_k - 1]
                  - jnp.arange(1, num_k + 1)[None, :, None, None]))
  vals = jnp.sort(jnp.moveaxis(c, 0, 2).reshape(num_k, num_l, -1), axis=-1)
  m = vals.shape[-1]
  below = jnp.zeros(t.shape, jnp.int32)  # #{v < t}, by binary search
  step = (1 << (m.bit_length() - 1)) if m else 0
  while step:
    cand = below + step
    ok = (cand <= m) & (vals[k_row, l_col, jnp.clip(cand - 1, 0, m - 1)] < t)
    below = jnp.where(ok, cand, below)
    step >>= 1
  total = n + (m - below)
  sizes = total / n  # [A, L], the mean set size, exactly as a mean would be
  lam = lam_grid[jnp.argmin(sizes, axis=-1)]
  invalid = (low_k < 0) | (low_q < 0)
  k_reg = jnp.where(invalid, -1, k_reg).astype(jnp.int32)
  lam = jnp.where(invalid, jnp.nan, lam)
  if scalar:
    return k_reg[0], lam[0]
  return k_reg, lam


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
