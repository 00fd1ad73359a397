"""Tuning RAPS's ``k_reg`` and ``lam`` on a held-out part of the calibration set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.conformal import _quantile
from l2d_jax.conformal import _scores

DEFAULT_LAM_GRID = (0.001, 0.01, 0.1, 0.2, 0.5)


def _label_rank_positions(order: jax.Array, sorted_probs: jax.Array,
                          labels: jax.Array) -> jax.Array:
  """0-indexed rank of each true label (start of its tie group)."""
  pos = jnp.argmax(order == labels[:, None], axis=-1)
  start = _scores._tie_group_start(sorted_probs)  # pylint: disable=protected-access
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
  non-randomized sets of the reference implementation do.

  Args:
    probs: ``[n, K]`` probabilities of the tuning points.
    labels: ``[n]`` their labels.
    alpha: scalar or ``[A]`` miscoverage levels.
    lam_grid: candidate penalties.
    randomized: use randomized scores (needs ``key``).
    key: PRNG key for randomized scores.

  Returns:
    ``(k_reg, lam)`` with the shape of ``alpha``; ``k_reg`` int32.

  References:
    Angelopoulos, Bates, Malik and Jordan, "Uncertainty sets for image
    classifiers using conformal prediction", ICLR 2021.
  """
  _validation.check_ndim(probs, 2, "probs", "[n, num_classes]")
  _validation.check_probabilities(probs, "probs")
  _validation.check_ndim(labels, 1, "labels", "[n]")
  _validation.check_same_leading(probs, labels, "probs", "labels")
  _validation.check_labels(labels, jnp.shape(probs)[-1], "labels")
  _validation.check_alpha(alpha, "alpha")
  n = jnp.shape(probs)[0]
  if n < 2:
    raise ValueError(f"the RAPS tuning set must hold at least 2 points, got {n}.")
  alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
  scalar = alpha.ndim == 0
  alpha = jnp.atleast_1d(alpha)
  lam_grid = jnp.asarray(lam_grid, dtype=jnp.result_type(float))
  order, sp = _scores.sort_probs(probs)
  labels = jnp.asarray(labels)
  rank1 = jnp.sort(_label_rank_positions(order, sp, labels) + 1)
  # numpy's quantile(..., 1 - alpha, method="higher") on n values.
  t = (n - 1) * (1.0 - alpha)
  r = jnp.round(t)
  idx = jnp.where(jnp.abs(t - r) <= 1e-6 * jnp.maximum(1.0, t), r, jnp.ceil(t))
  k_reg = rank1[idx.astype(jnp.int32)]
  pos = jnp.argmax(order == labels[:, None], axis=-1)

  def mean_size(a, k, lam):
    rank_scores = _scores.sorted_raps_scores(sp, k_reg=k, lam=lam, key=key,
                                             randomized=randomized)
    cal = jnp.take_along_axis(rank_scores, pos[:, None], axis=-1)[:, 0]
    q = _quantile.conformal_quantile(cal, a)
    count = (rank_scores <= q).sum(axis=-1)
    return jnp.minimum(count + 1, rank_scores.shape[-1]).mean()

  sizes = jax.vmap(lambda a, k: jax.vmap(lambda lam: mean_size(a, k, lam))(
      lam_grid))(alpha, k_reg)
  lam = lam_grid[jnp.argmin(sizes, axis=-1)]
  if scalar:
    return k_reg[0], lam[0]
  return k_reg, lam
