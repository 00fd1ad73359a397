"""Conformal non-conformity scores (LAC, APS, RAPS) and their conformities.

All three scores are non-decreasing in the rank of a label when labels are
sorted by decreasing model probability (labels with equal probability share a
score). A prediction set ``{y : s(x, y) <= q}`` is therefore always a prefix of
that order, which the deferral sweep exploits: each point has at most ``K + 1``
distinct sets over every miscoverage level. The ``sorted_*`` functions work on
probabilities already sorted in decreasing order so that a pool is sorted once
and reused for every score, split and alpha.

Scores ``s`` keep their textbook meaning (``*_scores``). Sets are built from
the *conformity* ``c = 1 - s`` instead (``*_conformity``), computed directly
as the probability mass *below* the label (a cumulative sum from the least
probable end; LAC: ``c = p_y``), so that nothing close to 1 is ever
subtracted. A confident model puts the APS threshold within 1e-5 of 1, where
float32 steps are 6e-8; in the conformity space the same quantities are small
numbers with full relative precision, and float32 sets equal float64 sets.
When a row sums to exactly 1, ``c = 1 - s``; otherwise ``c`` is the mass
below, which is what ``1 - s`` means for a normalised row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation


def sort_probs(probs: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Sorts each row of probabilities in decreasing order (stable).

  Args:
    probs: ``[..., K]`` class probabilities.

  Returns:
    ``(order, sorted_probs)``, both ``[..., K]``: ``order[..., r]`` is the
    label at rank ``r`` (0 = most probable; ties keep label order) and
    ``sorted_probs[..., r] = probs[..., order[..., r]]``.
  """
  probs = jnp.asarray(probs)
  order = jnp.argsort(-probs, axis=-1, stable=True)
  return order, jnp.take_along_axis(probs, order, axis=-1)


def _tie_group_start(sorted_probs: jax.Array) -> jax.Array:
  """Index of the first rank with the same probability as each rank."""
  k = sorted_probs.shape[-1]
  pos = jnp.broadcast_to(jnp.arange(k), sorted_probs.shape)
  new = jnp.concatenate(
      [jnp.ones(sorted_probs.shape[:-1] + (1,), bool),
       sorted_probs[..., 1:] != sorted_probs[..., :-1]], axis=-1)
  return jax.lax.cummax(jnp.where(new, pos, 0), axis=sorted_probs.ndim - 1)


def _uniform(key, shape, randomized: bool) -> jax.Array | float:
  if not randomized:
    return 1.0
  if key is None:
    raise ValueError("`key` is required when `randomized=True`.")
  return jax.random.uniform(key, shape)


def _exclusive_tail_mass(sp: jax.Array) -> jax.Array:
  """``sum_{j > r} sp_j`` for each rank ``r``, summed from the small end."""
  tail = jnp.flip(jnp.cumsum(jnp.flip(sp, axis=-1), axis=-1), axis=-1)
  zero = jnp.zeros(sp.shape[:-1] + (1,), sp.dtype)
  return jnp.concatenate([tail[..., 1:], zero], axis=-1)


def sorted_lac_scores(sorted_probs: ArrayLike) -> jax.Array:
  """LAC scores ``1 - p`` of each rank, ``[..., K]``, non-decreasing."""
  return 1.0 - jnp.asarray(sorted_probs)


def sorted_aps_scores(
    sorted_probs: ArrayLike,
    *,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """APS scores of each rank for probabilities sorted in decreasing order.

  ``s(x, y) = sum_{j: p_j > p_y} p_j + u * p_y``; labels tied in probability
  share a score. ``u = 1`` unless ``randomized`` (one ``u ~ U(0, 1)`` per
  point, shared by its labels so that sets stay prefixes).

  Args:
    sorted_probs: ``[..., K]`` probabilities sorted in decreasing order.
    key: PRNG key, required when ``randomized``.
    randomized: draw ``u`` instead of using ``u = 1``.

  Returns:
    ``[..., K]`` non-decreasing scores.
  """
  sp = jnp.asarray(sorted_probs)
  exclusive = jnp.cumsum(sp, axis=-1) - sp
  start = _tie_group_start(sp)
  greater = jnp.take_along_axis(exclusive, start, axis=-1)
  u = _uniform(key, sp.shape[:-1] + (1,), randomized)
  return greater + u * sp


def sorted_raps_scores(
    sorted_probs: ArrayLike,
    *,
    k_reg: ArrayLike,
    lam: ArrayLike,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """RAPS scores of each rank: APS + ``lam * max(0, o - k_reg)``.

  ``o`` is the 1-indexed rank of the label in decreasing probability (tied
  labels take the rank of the first of their group).

  Args:
    sorted_probs: ``[..., K]`` probabilities sorted in decreasing order.
    k_reg: regularisation rank (scalar or broadcastable to ``[..., 1]``).
    lam: penalty weight >= 0 (scalar or broadcastable to ``[..., 1]``).
    key: PRNG key, required when ``randomized``.
    randomized: draw ``u`` instead of using ``u = 1``.

  Returns:
    ``[..., K]`` non-decreasing scores.
  """
  sp = jnp.asarray(sorted_probs)
  rank1 = _tie_group_start(sp) + 1
  penalty = jnp.asarray(lam) * jnp.maximum(0, rank1 - jnp.asarray(k_reg))
  return sorted_aps_scores(sp, key=key, randomized=randomized) + penalty


def sorted_lac_conformity(sorted_probs: ArrayLike) -> jax.Array:
  """LAC conformity ``p`` of each rank (``1 - sorted_lac_scores``), ``[..., K]``."""
  return jnp.asarray(sorted_probs)


def sorted_aps_conformity(
    sorted_probs: ArrayLike,
    *,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """APS conformity ``1 - s`` of each rank, computed without subtracting from 1.

  ``c(x, y) = sum_{j: p_j < p_y} p_j + (g - 1) * p_y + (1 - u) * p_y``, the
  mass below the label (``g`` labels tie with ``y``; they share ``c``),
  accumulated from the least probable label so that it keeps full relative
  precision when it is tiny. Equals ``1 - sorted_aps_scores`` for rows that
  sum to 1.

  Args:
    sorted_probs: ``[..., K]`` probabilities sorted in decreasing order.
    key: PRNG key, required when ``randomized`` (the same draws as
      ``sorted_aps_scores`` with the same key).
    randomized: draw ``u`` instead of using ``u = 1``.

  Returns:
    ``[..., K]`` non-increasing conformities in ``[0, 1]``.
  """
  sp = jnp.asarray(sorted_probs)
  below = _exclusive_tail_mass(sp)
  start = _tie_group_start(sp)
  c = jnp.take_along_axis(below, start, axis=-1)
  if randomized:
    u = _uniform(key, sp.shape[:-1] + (1,), randomized)
    c = c + (1.0 - u) * sp
  # Exact arithmetic makes c non-increasing; a parallel cumsum may not round
  # monotonically, and sets must stay prefixes.
  return jax.lax.cummin(c, axis=sp.ndim - 1)


def sorted_raps_conformity(
    sorted_probs: ArrayLike,
    *,
    k_reg: ArrayLike,
    lam: ArrayLike,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """RAPS conformity ``1 - s``: APS conformity ``- lam * max(0, o - k_reg)``.

  Args:
    sorted_probs: ``[..., K]`` probabilities sorted in decreasing order.
    k_reg: regularisation rank (scalar or broadcastable to ``[..., 1]``).
    lam: penalty weight >= 0 (scalar or broadcastable to ``[..., 1]``).
    key: PRNG key, required when ``randomized``.
    randomized: draw ``u`` instead of using ``u = 1``.

  Returns:
    ``[..., K]`` non-increasing conformities (negative once penalised).
  """
  sp = jnp.asarray(sorted_probs)
  rank1 = _tie_group_start(sp) + 1
  penalty = jnp.asarray(lam) * jnp.maximum(0, rank1 - jnp.asarray(k_reg))
  c = sorted_aps_conformity(sp, key=key, randomized=randomized) - penalty
  return jax.lax.cummin(c, axis=sp.ndim - 1)


SCORES = ("lac", "aps", "raps")


def check_score(score: str) -> None:
  """Raises ``ValueError`` unless ``score`` is one of :data:`SCORES`."""
  if not isinstance(score, str) or score not in SCORES:
    raise ValueError(f"`score` must be one of {SCORES}, got {score!r}.")


def sorted_conformity(
    sorted_probs: ArrayLike,
    *,
    score: str,
    k_reg: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """Rank-wise conformity of ``score`` (``'lac'``, ``'aps'`` or ``'raps'``).

  Dispatches to ``sorted_{score}_conformity``; ``k_reg`` and ``lam`` are
  needed for RAPS only, ``key``/``randomized`` for APS and RAPS only.

  Args:
    sorted_probs: ``[..., K]`` probabilities sorted in decreasing order.
    score: which score (static).
    k_reg: RAPS regularisation rank.
    lam: RAPS penalty weight.
    key: PRNG key, required when ``randomized``.
    randomized: draw ``u`` instead of using ``u = 1`` (APS/RAPS).

  Returns:
    ``[..., K]`` non-increasing conformities.
  """
  check_score(score)
  if score == "lac":
    if randomized:
      raise ValueError("`randomized` applies to APS and RAPS only, not LAC.")
    return sorted_lac_conformity(sorted_probs)
  if score == "aps":
    return sorted_aps_conformity(sorted_probs, key=key, randomized=randomized)
  check_raps_params(k_reg, lam)
  return sorted_raps_conformity(sorted_probs, k_reg=k_reg, lam=lam, key=key,
                                randomized=randomized)


def _to_label_space(
    order: jax.Array, rank_scores: jax.Array, labels: ArrayLike | None
) -> jax.Array:
  """Scores of ``labels`` (``[n]``), or of every label (``[n, K]``)."""
  if labels is None:
    rows = jnp.arange(order.shape[0])[:, None]
    return jnp.zeros_like(rank_scores).at[rows, order].set(rank_scores)
  labels = jnp.asarray(labels)
  rank = jnp.argmax(order == labels[:, None], axis=-1)
  return jnp.take_along_axis(rank_scores, rank[:, None], axis=-1)[:, 0]


def _check(probs: ArrayLike, labels: ArrayLike | None) -> jax.Array:
  _validation.check_ndim(probs, 2, "probs", "[n, num_classes]")
  _validation.check_probabilities(probs, "probs")
  probs = jnp.asarray(probs)
  if labels is not None:
    _validation.check_ndim(labels, 1, "labels", "[n]")
    _validation.check_same_leading(probs, labels, "probs", "labels")
    _validation.check_labels(labels, probs.shape[-1], "labels")
  return probs


def check_raps_params(k_reg: ArrayLike, lam: ArrayLike) -> None:
  """``k_reg`` and ``lam`` finite and >= 0 (when concrete)."""
  for name, v in (("k_reg", k_reg), ("lam", lam)):
    if v is None:
      raise ValueError(f"RAPS needs `{name}` (scalar or [A]), got None.")
    if _validation.is_concrete(v):
      a = np.asarray(v, dtype=np.float64)
      if not np.all(np.isfinite(a)) or (a.size and a.min() < 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {v}.")


def lac_scores(probs: ArrayLike, labels: ArrayLike | None = None) -> jax.Array:
  """Least-ambiguous set-valued classifier (LAC) scores ``1 - p_y``.

  Args:
    probs: ``[n, K]`` class probabilities (rows sum to 1).
    labels: ``[n]`` int labels, or None for every label.

  Returns:
    ``[n]`` scores of ``labels`` or ``[n, K]`` scores of every label.

  Example:
    >>> import jax.numpy as jnp
    >>> lac_scores(jnp.array([[0.7, 0.2, 0.1]]), jnp.array([1]))
    Array([0.8], dtype=float32)

  References:
    Sadinle, Lei and Wasserman, "Least ambiguous set-valued classifiers with
    bounded error levels", JASA 2019.
  """
  probs = _check(probs, labels)
  if labels is None:
    return 1.0 - probs
  return 1.0 - jnp.take_along_axis(
      probs, jnp.asarray(labels)[:, None], axis=-1)[:, 0]


def aps_scores(
    probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """Adaptive prediction set (APS) scores.

  ``s(x, y) = sum_{j: p_j > p_y} p_j + u * p_y`` with ``u = 1`` (the
  non-randomized variant that always includes the threshold-crossing label)
  or ``u ~ U(0, 1)`` per point when ``randomized``.

  Args:
    probs: ``[n, K]`` class probabilities.
    labels: ``[n]`` int labels, or None for every label.
    key: PRNG key, required when ``randomized``.
    randomized: use a random ``u`` per point.

  Returns:
    ``[n]`` or ``[n, K]`` scores.

  Example:
    >>> import jax.numpy as jnp
    >>> aps_scores(jnp.array([[0.6, 0.3, 0.1]]), jnp.array([1]))
    Array([0.90000004], dtype=float32)

  References:
    Romano, Sesia and Candes, "Classification with valid and adaptive
    coverage", NeurIPS 2020.
  """
  probs = _check(probs, labels)
  order, sp = sort_probs(probs)
  rank_scores = sorted_aps_scores(sp, key=key, randomized=randomized)
  return _to_label_space(order, rank_scores, labels)


def raps_scores(
    probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    k_reg: ArrayLike,
    lam: ArrayLike,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """Regularized APS (RAPS) scores: APS + ``lam * max(0, o(x, y) - k_reg)``.

  Args:
    probs: ``[n, K]`` class probabilities.
    labels: ``[n]`` int labels, or None for every label.
    k_reg: rank from which the penalty applies (>= 0).
    lam: penalty per rank beyond ``k_reg`` (>= 0).
    key: PRNG key, required when ``randomized``.
    randomized: use a random ``u`` per point.

  Returns:
    ``[n]`` or ``[n, K]`` scores.

  References:
    Angelopoulos, Bates, Malik and Jordan, "Uncertainty sets for image
    classifiers using conformal prediction", ICLR 2021.
  """
  probs = _check(probs, labels)
  check_raps_params(k_reg, lam)
  order, sp = sort_probs(probs)
  rank_scores = sorted_raps_scores(sp, k_reg=k_reg, lam=lam, key=key,
                                   randomized=randomized)
  return _to_label_space(order, rank_scores, labels)


def lac_conformity(
    probs: ArrayLike, labels: ArrayLike | None = None
) -> jax.Array:
  """LAC conformity ``p_y`` (``1 - lac_scores``).

  Args:
    probs: ``[n, K]`` class probabilities (rows sum to 1).
    labels: ``[n]`` int labels, or None for every label.

  Returns:
    ``[n]`` conformities of ``labels`` or ``[n, K]`` of every label.

  Example:
    >>> import jax.numpy as jnp
    >>> lac_conformity(jnp.array([[0.7, 0.2, 0.1]]), jnp.array([1]))
    Array([0.2], dtype=float32)
  """
  probs = _check(probs, labels)
  if labels is None:
    return probs
  return jnp.take_along_axis(probs, jnp.asarray(labels)[:, None], axis=-1)[:, 0]


def aps_conformity(
    probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """APS conformity ``1 - s``: the probability mass below the label.

  See ``sorted_aps_conformity``; unlike ``1 - aps_scores(...)`` it keeps full
  precision when the model is confident (no subtraction from 1).

  Args:
    probs: ``[n, K]`` class probabilities.
    labels: ``[n]`` int labels, or None for every label.
    key: PRNG key, required when ``randomized``.
    randomized: use a random ``u`` per point.

  Returns:
    ``[n]`` or ``[n, K]`` conformities.

  Example:
    >>> import jax.numpy as jnp
    >>> aps_conformity(jnp.array([[0.6, 0.3, 0.1]]), jnp.array([1]))
    Array([0.1], dtype=float32)
  """
  probs = _check(probs, labels)
  order, sp = sort_probs(probs)
  rank_c = sorted_aps_conformity(sp, key=key, randomized=randomized)
  return _to_label_space(order, rank_c, labels)


def raps_conformity(
    probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    k_reg: ArrayLike,
    lam: ArrayLike,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """RAPS conformity ``1 - s`` (see ``sorted_raps_conformity``).

  Args:
    probs: ``[n, K]`` class probabilities.
    labels: ``[n]`` int labels, or None for every label.
    k_reg: rank from which the penalty applies (>= 0).
    lam: penalty per rank beyond ``k_reg`` (>= 0).
    key: PRNG key, required when ``randomized``.
    randomized: use a random ``u`` per point.

  Returns:
    ``[n]`` or ``[n, K]`` conformities.
  """
  probs = _check(probs, labels)
  check_raps_params(k_reg, lam)
  order, sp = sort_probs(probs)
  rank_c = sorted_raps_conformity(sp, k_reg=k_reg, lam=lam, key=key,
                                  randomized=randomized)
  return _to_label_space(order, rank_c, labels)
