"""Set sizes of one calibration/test split at every miscoverage level."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.conformal import _quantile
from l2d_jax.conformal import _scores


def _thresholds(cal_c: jax.Array, j: jax.Array) -> jax.Array:
  """Thresholds ``[A]``: the ``j``-th smallest calibration conformity.

  ``cal_c`` is ``[n]`` (shared by every alpha) or ``[A, n]``; ``j`` ``[A]``
  holds 1-based order statistics (``alpha_floor(n + 1, alphas)``); rank 0
  gives ``-inf`` (every label is in the set).
  """
  n = cal_c.shape[-1]
  c = _quantile._sort_floats(cal_c)  # pylint: disable=protected-access
  pos = jnp.clip(j - 1, 0, n - 1)
  at = (c[pos] if c.ndim == 1
        else jnp.take_along_axis(c, pos[:, None], axis=-1)[:, 0])
  return jnp.where(j == 0, -jnp.inf, at)


def _count_at_most(t: jax.Array, x: jax.Array, block: int = 16) -> jax.Array:
  """``#{a : t[a] <= x}`` for sorted ``t`` ``[A]``, elementwise over ``x``.

  Two levels of direct comparisons, each one fused kernel: the number of
  whole blocks of ``block`` thresholds whose last entry is ``<= x``, then
  the entries ``<= x`` in the next block (``t`` padded with +inf). The same
  comparisons ``x >= t[a]`` as a direct count, so the result is exact.
  """
  num_a = t.shape[0]
  num_b = -(-num_a // block)
  pad = jnp.concatenate([t, jnp.full(num_b * block - num_a, jnp.inf,
                                     t.dtype)]).reshape(num_b, block)
  whole = (pad[:, -1] <= x[..., None]).sum(axis=-1, dtype=jnp.int32)
  part = pad[jnp.minimum(whole, num_b - 1)]  # [..., block]
  inside = jnp.where(whole < num_b,
                     (part <= x[..., None]).sum(axis=-1, dtype=jnp.int32), 0)
  # The padding counts only where x = +inf, where every t[a] counts too.
  return jnp.minimum(whole * block + inside, num_a)


def size_boundaries(sorted_conf_test: jax.Array, t: jax.Array, *,
                    include_crossing: bool | jax.Array) -> jax.Array:
  """Where each test set shrinks along sorted alphas, ``[m, K + 2]`` int32.

  For thresholds ``t`` ``[A]`` sorted in increasing order (alphas sorted in
  increasing order give non-decreasing thresholds), LAC and APS set sizes are
  non-increasing along the alphas. Entry ``v`` is the number of alphas at
  which the set has at least ``v`` labels, so the set has exactly ``s``
  labels for alphas ``b[s + 1] <= a < b[s]`` (entry 0 is A, entry ``K + 1``
  is 0). Equal to counting ``split_set_sizes`` rows, without the ``[m, A]``
  sizes.

  Args:
    sorted_conf_test: ``[m, K]`` non-increasing conformities of the test
      points (``sorted_conformity`` of LAC or APS).
    t: ``[A]`` non-decreasing thresholds.
    include_crossing: APS/RAPS sets keep the threshold-crossing label (sizes
      ``min(count + 1, K)``); LAC sets do not. A bool, or a traced bool
      scalar.
  """
  m, k = sorted_conf_test.shape
  num_a = t.shape[0]
  # Rank r is in the set for the first cnt[r] alphas (c_r >= t_a).
  cnt = _count_at_most(t, sorted_conf_test)
  full = jnp.full((m, 1), num_a, jnp.int32)
  zero = jnp.zeros((m, 1), jnp.int32)
  crossing = jnp.concatenate([full, full, cnt[:, :k - 1], zero], axis=1)
  if isinstance(include_crossing, bool):
    return crossing if include_crossing else jnp.concatenate(
        [full, cnt, zero], axis=1)
  # A traced flag (LAC and APS in one vmapped program).
  return jnp.where(include_crossing, crossing,
                   jnp.concatenate([full, cnt, zero], axis=1))


def split_set_sizes(
    sorted_probs_cal: ArrayLike,
    label_rank_cal: ArrayLike,
    sorted_probs_test: ArrayLike,
    alphas: ArrayLike,
    *,
    score: str,
    k_reg: ArrayLike | None = None,
    lam: ArrayLike | None = None,
) -> jax.Array:
  """Size of every test point's conformal set at every alpha, for one split.

  Each set is the prefix of the test point's labels in decreasing probability:
  LAC keeps the labels with ``p_y >= t`` (may be empty); APS and RAPS use the
  non-randomized score (``u = 1``) and add the threshold-crossing label, so
  their sets are never empty (as in the paper). Thresholds are the exact
  order statistics of ``conformity_threshold``, and everything is computed in
  the conformity space (mass below a label), so float32 and float64 give the
  same sizes. The calibration conformities are sorted once for all alphas
  (once per alpha for per-alpha RAPS parameters), and each size is a count of
  conformities above the threshold (one fused comparison, no search).

  Args:
    sorted_probs_cal: ``[n, K]`` calibration probabilities sorted in
      decreasing order (``sort_probs``).
    label_rank_cal: ``[n]`` int 0-based rank of each calibration point's true
      label in that order (any rank within a tie in probability gives the
      same result).
    sorted_probs_test: ``[m, K]`` test probabilities sorted likewise.
    alphas: ``[A]`` miscoverage levels in (0, 1).
    score: ``'lac'``, ``'aps'`` or ``'raps'`` (static under jit).
    k_reg: RAPS regularisation rank, scalar or ``[A]`` (RAPS only).
    lam: RAPS penalty >= 0, scalar or ``[A]`` (RAPS only).

  Returns:
    ``[m, A]`` int32 sizes in ``[0, K]``. Under jit, where values cannot be
    checked, a column whose alpha is outside (0, 1) is ``-1``, and every size
    is ``-1`` when a calibration rank lies outside ``[0, K)``.

  Raises:
    ValueError: shapes, ``score``, alphas or ranks out of range (when
      concrete), missing or negative RAPS parameters.
    TypeError: non-integer ``label_rank_cal``.

  Example:
    >>> import jax.numpy as jnp
    >>> sp = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    >>> # Calibration conformities p_y = 0.7 and 0.3; the thresholds are the
    >>> # floor(3 alpha)-th smallest: 0.3 at alpha 0.4, 0.7 at alpha 0.8.
    >>> split_set_sizes(sp, jnp.array([0, 1]), sp, jnp.array([0.4, 0.8]),
    ...                 score="lac")
    Array([[1, 1],
           [2, 0]], dtype=int32)
  """
  _scores.check_score(score)
  _validation.check_ndim(sorted_probs_cal, 2, "sorted_probs_cal",
                         "[n, num_classes]")
  _validation.check_ndim(sorted_probs_test, 2, "sorted_probs_test",
                         "[m, num_classes]")
  _validation.check_ndim(label_rank_cal, 1, "label_rank_cal", "[n]")
  _validation.check_ndim(alphas, 1, "alphas", "[A]")
  n, k = np.shape(sorted_probs_cal)
  if n < 1:
    raise ValueError("`sorted_probs_cal` is empty: the calibration set must "
                     "hold at least one point.")
  if np.shape(sorted_probs_test)[1] != k:
    raise ValueError(
        f"`sorted_probs_test` must have {k} classes like `sorted_probs_cal`, "
        f"got shape {tuple(np.shape(sorted_probs_test))}.")
  _validation.check_same_leading(sorted_probs_cal, label_rank_cal,
                                 "sorted_probs_cal", "label_rank_cal")
  _validation.check_probabilities(sorted_probs_cal, "sorted_probs_cal")
  _validation.check_probabilities(sorted_probs_test, "sorted_probs_test")
  _validation.check_index_range(label_rank_cal, k, "label_rank_cal")
  if score == "raps":
    _scores.check_raps_params(k_reg, lam)
  elif k_reg is not None or lam is not None:
    raise ValueError(f"`k_reg` and `lam` apply to RAPS only, got score "
                     f"{score!r}.")
  sp_cal = jnp.asarray(sorted_probs_cal)
  sp_test = jnp.asarray(sorted_probs_test)
  ranks = jnp.asarray(label_rank_cal)
  alphas = jnp.asarray(alphas)
  num = alphas.shape[0]
  low = _quantile.alpha_floor(n + 1, alphas)
  include_crossing = score != "lac"
  rank_ok = jnp.all((ranks >= 0) & (ranks < k))
  idx = jnp.clip(ranks, 0, k - 1)[:, None]

  thresholds = _thresholds

  def count(c, t):
    # Non-increasing rows c [m, K] (or [m, A, K]) against t [A]: the prefix
    # length is the number of entries >= t (no search, one fused reduction).
    if c.ndim == 2:
      c = c[:, None, :]
    sizes = (c >= t[None, :, None]).sum(axis=-1, dtype=jnp.int32)
    return jnp.minimum(sizes + 1, k) if include_crossing else sizes

  if score == "raps" and (np.ndim(k_reg) > 0 or np.ndim(lam) > 0):
    ks = _quantile.per_alpha(k_reg, num, "k_reg")
    ls = _quantile.per_alpha(lam, num, "lam")
    # RAPS conformity at rank r: APS conformity - lam * max(0, r1 - k_reg),
    # r1 the 1-based start of r's tie group. APS conformities are
    # non-increasing and the penalty non-decreasing along r, and rounding is
    # monotone, so the difference is already non-increasing: it equals
    # ``sorted_raps_conformity`` (whose running minimum changes nothing) and
    # is compared per alpha without an [A, m, K] copy in memory.
    def raps(sp):
      aps = _scores.sorted_aps_conformity(sp)
      r1 = _scores._tie_group_start(sp) + 1  # pylint: disable=protected-access
      return aps, r1

    def penalised(aps, r1, kr, la):  # [..., K] x [A] -> [..., A, K]
      pen = la[:, None] * jnp.maximum(0, r1[..., None, :] - kr[:, None])
      return aps[..., None, :] - pen

    aps_cal, r1_cal = raps(sp_cal)
    cal_c = penalised(jnp.take_along_axis(aps_cal, idx, axis=-1),
                      jnp.take_along_axis(r1_cal, idx, axis=-1), ks, ls)
    t = thresholds(cal_c[:, :, 0].T, low)  # [A]
    aps_test, r1_test = raps(sp_test)
    sizes = count(penalised(aps_test, r1_test, ks, ls), t)
  else:
    conf = lambda sp: _scores.sorted_conformity(sp, score=score, k_reg=k_reg,
                                                lam=lam)
    cal_c = jnp.take_along_axis(conf(sp_cal), idx, axis=-1)[:, 0]
    t = thresholds(cal_c, low)
    sizes = count(jax.lax.cummin(conf(sp_test), axis=1), t)
  sizes = jnp.where(low[None, :] < 0, -1, sizes)
  return jnp.where(rank_ok, sizes, -1).astype(jnp.int32)


def _raps_sizes(aps_cal_y: jax.Array, r1_cal_y: jax.Array,
                aps_test: jax.Array, r1_test: jax.Array, alphas: jax.Array,
                k_reg: jax.Array, lam_index: jax.Array,
                lam_grid: jax.Array, low: jax.Array | None = None
                ) -> jax.Array:
  """RAPS set sizes ``[m, A]`` with per-alpha ``(k_reg, lam)`` from a grid.

  The same sets as ``split_set_sizes(..., score='raps')`` with
  ``lam = lam_grid[lam_index]``, from precomputed APS conformities: the
  calibration conformities take at most ``K x L`` distinct forms (k_reg is a
  rank in ``[1, K]``, lam a grid value), so they are sorted once per
  ``(k_reg, lam)`` pair, not once per alpha.

  Args:
    aps_cal_y: ``[n]`` APS conformity of each calibration label.
    r1_cal_y: ``[n]`` 1-based start of its tie group.
    aps_test: ``[m, K]`` sorted APS conformities of the test points.
    r1_test: ``[m, K]`` 1-based tie-group starts of their ranks.
    alphas: ``[A]`` miscoverage levels.
    k_reg: ``[A]`` int32 in ``[1, K]`` (``tune_raps``).
    lam_index: ``[A]`` int32 positions in ``lam_grid``.
    lam_grid: ``[L]`` penalties.
    low: ``alpha_floor(n + 1, alphas)`` when the caller has it; None:
      computed here.

  Returns:
    ``[m, A]`` int32 sizes, -1 where alpha is invalid.
  """
  n = aps_cal_y.shape[0]
  num_k = aps_test.shape[-1]
  if low is None:
    low = _quantile.alpha_floor(n + 1, alphas)
  k_all = jnp.arange(1, num_k + 1)[:, None, None]
  cal = _quantile._sort_floats(  # pylint: disable=protected-access
      aps_cal_y - lam_grid[None, :, None]
      * jnp.maximum(0, r1_cal_y - k_all))  # [K, L, n]
  at = cal[jnp.clip(k_reg - 1, 0, num_k - 1), lam_index,
           jnp.clip(low - 1, 0, n - 1)]
  t = jnp.where(low == 0, -jnp.inf, at)  # [A]
  lam = lam_grid[lam_index]
  pen = lam[:, None] * jnp.maximum(0, r1_test[:, None, :] - k_reg[:, None])
  c = aps_test[:, None, :] - pen  # [m, A, K], non-increasing along K
  sizes = (c >= t[None, :, None]).sum(axis=-1, dtype=jnp.int32)
  sizes = jnp.minimum(sizes + 1, num_k)
  return jnp.where(low[None, :] < 0, -1, sizes).astype(jnp.int32)
