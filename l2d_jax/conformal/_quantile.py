"""Exact split-conformal quantiles, prediction sets, coverage and set size.

Two equivalent thresholds are offered. ``conformal_quantile`` is the textbook
one on scores ``s``: the ``ceil((n + 1)(1 - alpha))``-th smallest calibration
score. ``conformity_threshold`` is the same order statistic seen from the
other side, on conformities ``c = 1 - s`` (``*_conformity`` in ``_scores``):
the ``floor((n + 1) alpha)``-th smallest calibration conformity, ``-inf`` when
that rank is 0. A label is in the set when ``s <= qhat``, i.e. ``c >= t``
(ties at the threshold are in the set). Sets are built in the conformity
space (``prediction_sets``, ``set_sizes_from_sorted``, ``split_set_sizes``)
so that they do not depend on float precision.

Alphas are read as the decimals they were written as: a float alpha is
treated as the shortest decimal with at most 6 significant digits that rounds
to it in its own dtype (``float32(0.01)`` is exactly ``1/100``), otherwise as
its exact binary value; ranks are then exact integer arithmetic.
"""

from __future__ import annotations

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.conformal import _scores

# Alphas are snapped to decimals with at most this many significant digits.
_DECIMAL_DIGITS = 6
# Under jit, decimals with up to this many decimal places are handled exactly
# in int32 arithmetic (10**8 keeps the wrapped differences below 2**31).
_TRACED_MAX_PLACES = 8


def _check_alpha(alpha: ArrayLike) -> None:
  """``alpha`` in the open interval (0, 1) (when concrete)."""
  if not _validation.is_concrete(alpha):
    return
  a = np.asarray(alpha, dtype=np.float64)
  if a.size and (not np.all(np.isfinite(a)) or a.min() <= 0.0
                 or a.max() >= 1.0):
    bad = a.reshape(-1)[~((a > 0) & (a < 1)).reshape(-1)][0]
    raise ValueError(f"`alpha` must lie in the open interval (0, 1), got "
                     f"{bad!r}.")


def _check_n(n: int) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
    raise TypeError(f"`n` must be an int, got {type(n).__name__}.")
  if not 1 <= n < 2**31 - 1:
    raise ValueError(f"`n` must lie in [1, 2**31 - 1), got {n}.")
  return int(n)


def _decimal_alpha(a: np.floating) -> fractions.Fraction:
  """The shortest decimal (<= 6 significant digits) that rounds to ``a``."""
  x = float(a)  # exact for float16/32/64
  exact = fractions.Fraction(x)
  lo = fractions.Fraction(float(np.nextafter(a, a.dtype.type(-np.inf))))
  hi = fractions.Fraction(float(np.nextafter(a, a.dtype.type(np.inf))))
  lo, hi = (lo + exact) / 2, (exact + hi) / 2
  for digits in range(1, _DECIMAL_DIGITS + 1):
    cand = fractions.Fraction(f"{x:.{digits - 1}e}")
    if lo <= cand <= hi:
      return cand
  return exact


def _floor_concrete(n1: int, alpha: np.ndarray) -> np.ndarray:
  """``floor(n1 * alpha)`` in exact rational arithmetic (numpy in, int64 out)."""
  if not np.issubdtype(alpha.dtype, np.floating):
    alpha = alpha.astype(np.float64)
  flat = [math.floor(n1 * _decimal_alpha(a)) for a in alpha.reshape(-1)]
  return np.asarray(flat, dtype=np.int64).reshape(alpha.shape)


def _floor_traced(n1, alpha: jax.Array) -> jax.Array:
  """``floor(n1 * alpha)`` under jit; -1 where alpha is not in (0, 1).

  ``n1`` is an int, or a tuple of ints for ``[len(n1), *alpha.shape]``
  floors of each (the decimal analysis of alpha done once; each row equals
  the single-int result).

  Decimal alphas (<= 6 significant digits, <= 8 decimal places) are exact:
  the float product only brackets the answer within ``w`` integers, and each
  candidate ``c`` is tested exactly with ``n1 * k - c * 10**d >= 0`` in int32
  arithmetic, whose wrap-around is harmless because the true difference is
  below ``2**31``. Other alphas (and ``n1`` above about 5e7 in float32) use
  the rounded float product.
  """
  dtype = alpha.dtype
  work = jnp.promote_types(dtype, jnp.float32)
  a = alpha.astype(work)
  places = np.arange(1, _TRACED_MAX_PLACES + 1)
  scale = jnp.asarray(10.0**places, work)
  k = jnp.round(a[..., None] * scale)
  match = ((k >= 1) & (k < 10**_DECIMAL_DIGITS)
           & ((k / scale).astype(dtype) == alpha[..., None]))
  first = jnp.argmax(match, axis=-1)
  is_decimal = jnp.any(match, axis=-1)
  k_int = jnp.take_along_axis(k, first[..., None], axis=-1)[..., 0]
  k_int = jnp.where(is_decimal, k_int, 0).astype(jnp.int32)
  m_int = jnp.asarray(10**places, jnp.int32)[first]
  if isinstance(n1, tuple):
    # One row per n: n as a [len(n1), 1, ...] constant (exact in float32
    # and int32 like the Python int), the window w wide enough for all.
    n_max = max(n1)
    n1 = np.asarray(n1).reshape((-1,) + (1,) * alpha.ndim)
  else:
    n_max = n1
  t = n1 * a
  c0 = jnp.floor(t)
  eps = float(jnp.finfo(work).eps)
  w = int(math.ceil(1.5 * n_max * eps)) + 1
  if 2 * w * 10**_TRACED_MAX_PLACES < 2**31:
    c0i = jnp.clip(c0, 0, n1).astype(jnp.int32)
    cands = c0i[..., None] + jnp.arange(-w + 1, w + 1, dtype=jnp.int32)
    diff = ((jnp.asarray(n1, jnp.int32) * k_int)[..., None]
            - cands * m_int[..., None])
    exact = c0i - w + jnp.sum(diff >= 0, axis=-1, dtype=jnp.int32)
    out = jnp.where(is_decimal, exact, c0i)
  else:
    out = jnp.clip(c0, 0, n1).astype(jnp.int32)
  valid = (alpha > 0) & (alpha < 1)
  return jnp.where(valid, out, -1).astype(jnp.int32)


def alpha_floor(n1: int, alpha: ArrayLike) -> jax.Array:
  """``floor(n1 * alpha)`` (int32), -1 for an invalid traced alpha."""
  if _validation.is_concrete(alpha):
    _check_alpha(alpha)
    return jnp.asarray(_floor_concrete(n1, np.asarray(alpha)), jnp.int32)
  alpha = jnp.asarray(alpha)
  if not jnp.issubdtype(alpha.dtype, jnp.floating):
    alpha = alpha.astype(float)
  return _floor_traced(n1, alpha)


def alpha_floors(ns: tuple[int, ...], alpha: ArrayLike) -> jax.Array:
  """``[len(ns), *alpha.shape]``: row r is ``alpha_floor(ns[r], alpha)``."""
  if _validation.is_concrete(alpha):
    return jnp.stack([alpha_floor(n, alpha) for n in ns])
  alpha = jnp.asarray(alpha)
  if not jnp.issubdtype(alpha.dtype, jnp.floating):
    alpha = alpha.astype(float)
  return _floor_traced(tuple(int(n) for n in ns), alpha)


def quantile_rank(n: int, alpha: ArrayLike) -> jax.Array:
  """1-indexed order statistic ``ceil((n + 1) * (1 - alpha))``, exactly.

  Computed as ``n + 1 - floor((n + 1) * alpha)`` in integer arithmetic, with
  ``alpha`` read as the shortest decimal (at most 6 significant digits) that
  rounds to it in its dtype, so float32 and float64 decimals give the same,
  exact rank for every ``n``.

  Args:
    n: number of calibration scores (``>= 1``).
    alpha: miscoverage level(s) in (0, 1), any shape.

  Returns:
    int32 ranks in ``[1, n + 1]`` with the shape of ``alpha``; a rank of
    ``n + 1`` means the quantile is ``+inf``. Under jit, where values cannot
    be checked, an alpha outside (0, 1) or NaN gives ``-1``.

  Raises:
    ValueError: a concrete ``alpha`` outside (0, 1) or NaN; ``n < 1``.

  Example:
    >>> int(quantile_rank(20000, 0.99))   # ceil(20001 * 0.01) = ceil(200.01)
    201
  """
  n = _check_n(n)
  low = alpha_floor(n + 1, alpha)
  return jnp.where(low < 0, -1, n + 1 - low).astype(jnp.int32)


def _check_scores_1d(x: ArrayLike, name: str) -> jax.Array:
  _validation.check_ndim(x, 1, name, "[n]")
  if np.shape(x)[0] < 1:
    raise ValueError(f"`{name}` is empty: the calibration set must hold at "
                     "least one point.")
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.bool_) or not jnp.issubdtype(
      x.dtype, jnp.number):
    raise TypeError(f"`{name}` must be numeric, got {x.dtype}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  _validation.check_finite(x, name)
  return x


def _check_alpha_shape(alpha: ArrayLike) -> None:
  if np.ndim(alpha) > 1:
    raise ValueError(f"`alpha` must be a scalar or have shape [A], got shape "
                     f"{tuple(np.shape(alpha))}.")


def conformal_quantile(
    scores: ArrayLike,
    alpha: ArrayLike,
    *,
    presorted: bool = False,
) -> jax.Array:
  """Split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

  This is the exact order statistic of Vovk et al. / Angelopoulos & Bates, not
  ``np.quantile(..., method='higher')`` at level ``ceil((n+1)(1-alpha))/n``,
  which returns the next order statistic for most ``n`` and ``alpha``. For
  building sets from LAC/APS/RAPS, prefer ``conformity_threshold`` on
  conformities, which does not lose precision near 1.

  Args:
    scores: ``[n]`` calibration scores (``n >= 1``); integer scores are
      promoted to float.
    alpha: scalar or ``[A]`` miscoverage levels in (0, 1).
    presorted: set when ``scores`` are already sorted ascending (the sort is
      the expensive part on CPU; sort once and sweep many alphas).

  Returns:
    Scalar for a scalar ``alpha``, ``[A]`` for an array: the threshold, or
    ``+inf`` where the rank exceeds ``n`` (NaN for an invalid alpha under
    jit).

  Raises:
    ValueError: empty ``scores``, NaN scores, or ``alpha`` outside (0, 1).

  Example:
    >>> import jax.numpy as jnp
    >>> conformal_quantile(jnp.arange(9.0), 0.2)   # ceil(10 * 0.8) = 8th
    Array(7., dtype=float32)
  """
  s = _check_scores_1d(scores, "scores")
  _check_alpha_shape(alpha)
  n = s.shape[0]
  s = s if presorted else jnp.sort(s)
  k = quantile_rank(n, alpha)
  q = s[jnp.clip(k - 1, 0, n - 1)]
  q = jnp.where(k > n, jnp.inf, q)
  return jnp.where(k < 1, jnp.nan, q).astype(s.dtype)


def conformity_threshold(
    conformity: ArrayLike,
    alpha: ArrayLike,
    *,
    presorted: bool = False,
) -> jax.Array:
  """Split-conformal threshold on conformities ``c = 1 - s``.

  The ``floor((n + 1) alpha)``-th smallest calibration conformity. As
  ``c = 1 - s`` reverses the order, this is the ``ceil((n+1)(1-alpha))``-th
  smallest score seen from the other end: ``1 - conformal_quantile(1 - c,
  alpha)`` in exact arithmetic, with ``-inf`` (every label kept) where the
  score quantile is ``+inf`` (rank 0). A label is in the set when its
  conformity is ``>= t``.

  Args:
    conformity: ``[n]`` calibration conformities (``n >= 1``), e.g.
      ``aps_conformity(probs_cal, labels_cal)``.
    alpha: scalar or ``[A]`` miscoverage levels in (0, 1).
    presorted: set when ``conformity`` is already sorted ascending.

  Returns:
    Scalar or ``[A]`` thresholds (NaN for an invalid alpha under jit).

  Raises:
    ValueError: empty or NaN ``conformity``, or ``alpha`` outside (0, 1).

  Example:
    >>> import jax.numpy as jnp
    >>> conformity_threshold(jnp.arange(9.0), 0.2)   # floor(10 * 0.2) = 2nd
    Array(1., dtype=float32)
  """
  c = _check_scores_1d(conformity, "conformity")
  _check_alpha_shape(alpha)
  n = c.shape[0]
  c = c if presorted else jnp.sort(c)
  low = alpha_floor(n + 1, alpha)
  t = c[jnp.clip(low - 1, 0, n - 1)]
  t = jnp.where(low == 0, -jnp.inf, t)
  return jnp.where(low < 0, jnp.nan, t).astype(c.dtype)


def _check_threshold(threshold: ArrayLike) -> jax.Array:
  if np.ndim(threshold) > 1:
    raise ValueError(f"`threshold` must be a scalar or have shape [A], got "
                     f"shape {tuple(np.shape(threshold))}.")
  if _validation.is_concrete(threshold) and np.any(
      np.isnan(np.asarray(threshold, dtype=np.float64))):
    raise ValueError("`threshold` contains NaN (an invalid alpha?); use "
                     "-inf to keep every label, +inf to keep none.")
  return jnp.asarray(threshold)


def set_sizes_from_sorted(
    sorted_conformity: ArrayLike,
    *,
    threshold: ArrayLike,
    include_crossing: bool = False,
) -> jax.Array:
  """Sizes of prefix sets from rank-wise conformities.

  For labels sorted by decreasing probability (``sort_probs``) and their
  conformities (``sorted_lac_conformity`` etc., non-increasing along the
  rank), each set is the prefix of the ranks whose conformity is
  ``>= threshold`` (the longest such prefix, should a row not be monotone).

  ``threshold`` is keyword-only: this function used to take scores and a
  score quantile, and a positional call written for that would now silently
  build complementary sets.

  Args:
    sorted_conformity: ``[n, K]`` rank-wise conformities.
    threshold: scalar or ``[A]`` thresholds from ``conformity_threshold``.
    include_crossing: add the threshold-crossing rank, the next label in
      probability order (``size = min(K, count + 1)``): the never-empty
      non-randomized APS/RAPS set of Romano et al. / Angelopoulos et al.

  Returns:
    ``[n]`` (scalar ``threshold``) or ``[n, A]`` int32 sizes in ``[0, K]``. A
    NaN threshold (possible only under jit) keeps no rank: size 0, or 1 with
    ``include_crossing``, exactly as in ``prediction_sets``.

  Raises:
    ValueError: ``sorted_conformity`` not 2-D, ``threshold`` not 0/1-D, or a
      concrete NaN threshold.
  """
  _validation.check_ndim(sorted_conformity, 2, "sorted_conformity",
                         "[n, num_classes]")
  c = jnp.asarray(sorted_conformity)
  t = _check_threshold(threshold)
  return prefix_sizes(c, t, include_crossing)


def prefix_sizes(c: jax.Array, t: jax.Array,
                 include_crossing: bool) -> jax.Array:
  """``[..., K]`` rank conformities, ``[]``/``[A]`` thresholds -> sizes.

  The size is the length of the longest prefix with ``c >= t``: the number of
  entries ``>= t`` of the running minimum, found by binary search so that
  memory stays ``[..., A]``. A NaN threshold sorts above every value: size 0.
  """
  k = c.shape[-1]
  ascending = jnp.flip(jax.lax.cummin(c, axis=c.ndim - 1), axis=-1)
  rows = ascending.reshape(-1, k)
  below = jax.vmap(lambda row: jnp.searchsorted(row, t, side="left"))(rows)
  sizes = (k - below).reshape(c.shape[:-1] + t.shape).astype(jnp.int32)
  if include_crossing:
    sizes = jnp.minimum(sizes + 1, k)
  return sizes


def prediction_sets(
    probs: ArrayLike,
    *,
    threshold: ArrayLike,
    score: str,
    k_reg: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    include_crossing: bool = False,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """Prediction sets ``{y : c(x, y) >= threshold}`` as boolean masks.

  Every set is a prefix of the labels in decreasing probability (ties in
  probability broken by label index, as ``sort_probs``): labels whose
  conformity reaches the threshold (ties at the threshold are in), plus, with
  ``include_crossing``, the next label in that order. Built from probabilities
  so that the crossing label is chosen in probability order, never by label
  index, and computed in the conformity space so that sets do not depend on
  float precision.

  Args:
    probs: ``[n, K]`` class probabilities.
    threshold: scalar or ``[A]`` from ``conformity_threshold`` on calibration
      conformities of the same ``score``.
    score: ``'lac'``, ``'aps'`` or ``'raps'``.
    k_reg: RAPS regularisation rank (scalar, or ``[A]`` with ``[A]``
      thresholds).
    lam: RAPS penalty (scalar, or ``[A]``).
    include_crossing: add the threshold-crossing label (never-empty
      non-randomized APS/RAPS sets, ``allow_zero_sets=False``).
    key: PRNG key, required when ``randomized``.
    randomized: randomized APS/RAPS conformities (one ``u`` per point).

  Returns:
    ``[n, K]`` bool for a scalar ``threshold``; ``[A, n, K]`` for ``[A]``. A
    NaN threshold under jit keeps no label (but the crossing one).

  Raises:
    ValueError: bad shapes, probabilities, ``score`` or RAPS parameters, or
      a concrete NaN threshold.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[1e-8, 0.99999994, 1e-8]])
    >>> prediction_sets(p, threshold=0.5, score="aps", include_crossing=True)
    Array([[False,  True, False]], dtype=bool)
  """
  _validation.check_ndim(probs, 2, "probs", "[n, num_classes]")
  _validation.check_probabilities(probs, "probs")
  t = _check_threshold(threshold)
  _scores.check_score(score)
  order, sp = _scores.sort_probs(probs)
  sizes = _sizes_for_score(sp, t, score=score, k_reg=k_reg, lam=lam,
                       include_crossing=include_crossing, key=key,
                       randomized=randomized)
  n, k = order.shape
  rank_of_label = jnp.zeros_like(order).at[
      jnp.arange(n)[:, None], order].set(jnp.arange(k, dtype=order.dtype))
  if t.ndim == 0:
    return rank_of_label < sizes[:, None]
  return rank_of_label[None] < sizes.T[:, :, None]


def _sizes_for_score(
    sorted_probs: jax.Array,
    threshold: jax.Array,
    *,
    score: str,
    k_reg: ArrayLike | None,
    lam: ArrayLike | None,
    include_crossing: bool,
    key: jax.Array | None = None,
    randomized: bool = False,
) -> jax.Array:
  """Prefix sizes ``[n]`` / ``[n, A]`` (RAPS parameters may be per alpha)."""
  if score == "raps":
    _scores.check_raps_params(k_reg, lam)
  by_alpha = score == "raps" and (np.ndim(k_reg) > 0 or np.ndim(lam) > 0)
  if not by_alpha:
    c = _scores.sorted_conformity(sorted_probs, score=score, k_reg=k_reg,
                                  lam=lam, key=key, randomized=randomized)
    return prefix_sizes(c, threshold, include_crossing)
  if threshold.ndim != 1:
    raise ValueError("per-alpha RAPS `k_reg`/`lam` need `[A]` thresholds.")
  num = threshold.shape[0]
  ks = per_alpha(k_reg, num, "k_reg")
  ls = per_alpha(lam, num, "lam")
  _scores.check_raps_params(ks, ls)

  def one(t, kr, la):
    c = _scores.sorted_raps_conformity(sorted_probs, k_reg=kr, lam=la,
                                       key=key, randomized=randomized)
    return prefix_sizes(c, t, include_crossing)

  return jax.vmap(one, out_axes=1)(threshold, ks, ls)


def per_alpha(x: ArrayLike, num: int, name: str) -> jax.Array:
  """A scalar or ``[A]`` parameter as ``[A]`` (ValueError naming it)."""
  if np.ndim(x) not in (0, 1) or (np.ndim(x) == 1 and np.shape(x)[0] != num):
    raise ValueError(f"`{name}` must be a scalar or have shape [A]=({num},), "
                     f"got shape {tuple(np.shape(x))}.")
  return jnp.broadcast_to(jnp.asarray(x), (num,))


def set_coverage(sets: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Share of points whose true label is in their set.

  Args:
    sets: ``[..., n, K]`` bool prediction sets.
    labels: ``[n]`` int labels in ``[0, K)``.

  Returns:
    ``[...]`` empirical coverage. Under jit, where labels cannot be checked,
    a label outside ``[0, K)`` counts as not covered (never as another class).

  Raises:
    ValueError: shapes that do not match, or concrete labels outside
      ``[0, K)``.
    TypeError: non-integer labels.

  Example:
    >>> import jax.numpy as jnp
    >>> set_coverage(jnp.array([[True, False], [True, True]]), jnp.array([1, 0]))
    Array(0.5, dtype=float32)
  """
  if np.ndim(sets) < 2:
    raise ValueError(f"`sets` must have shape [..., n, num_classes], got "
                     f"shape {tuple(np.shape(sets))}.")
  _validation.check_ndim(labels, 1, "labels", "[n]")
  n, k = np.shape(sets)[-2:]
  if np.shape(labels)[0] != n:
    raise ValueError(f"`labels` must have shape [n]=({n},) to match `sets` "
                     f"of shape {tuple(np.shape(sets))}, got shape "
                     f"{tuple(np.shape(labels))}.")
  _validation.check_labels(labels, k, "labels")
  sets = jnp.asarray(sets).astype(bool)
  labels = jnp.asarray(labels)
  valid = (labels >= 0) & (labels < k)
  idx = jnp.broadcast_to(jnp.clip(labels, 0, k - 1)[:, None],
                         sets.shape[:-1] + (1,))
  hit = jnp.take_along_axis(sets, idx, axis=-1)[..., 0] & valid
  return hit.mean(axis=-1)


def mean_set_size(sets: ArrayLike) -> jax.Array:
  """Mean number of labels per set, ``[...]`` for ``[..., n, K]`` sets."""
  if np.ndim(sets) < 2:
    raise ValueError(f"`sets` must have shape [..., n, num_classes], got "
                     f"shape {tuple(np.shape(sets))}.")
  return jnp.asarray(sets).sum(axis=-1).mean(axis=-1)


def paper_alpha_grid(model_accuracy: float) -> np.ndarray:
  """The paper's alpha grid: fine up to ``1 - accuracy``, coarse to 0.99.

  Alphas go from 0.001 to ``round(1 - model_accuracy, 3)`` in steps of 0.001,
  then continue from that value in steps of 0.01 up to 0.99. (The paper's text
  is ambiguous about the coarse part; the alpha_opt values it reports, e.g.
  0.109/0.209/0.319 for a 99.14% model, fit a coarse grid continuing from the
  end of the fine one.) Every alpha lies in ``[0.001, 0.999]``: for a model
  below 0.1% accuracy the fine part stops at 0.999.

  Args:
    model_accuracy: top-1 accuracy of the model in (0, 1) (a Python or NumPy
      real scalar).

  Returns:
    ``[A]`` float64 increasing alphas, rounded to 1e-3.

  Raises:
    TypeError: ``model_accuracy`` is not a real scalar.
    ValueError: ``model_accuracy`` outside (0, 1) or NaN.
  """
  if isinstance(model_accuracy, (bool, np.bool_)) or not isinstance(
      model_accuracy, (int, float, np.integer, np.floating)):
    if not (isinstance(model_accuracy, (np.ndarray, jax.Array))
            and np.ndim(model_accuracy) == 0
            and np.issubdtype(np.asarray(model_accuracy).dtype, np.floating)):
      raise TypeError(f"`model_accuracy` must be a real scalar, got "
                      f"{type(model_accuracy).__name__}.")
  acc = float(model_accuracy)
  if not 0.0 < acc < 1.0:
    raise ValueError(f"`model_accuracy` must lie in the open interval (0, 1), "
                     f"got {model_accuracy}.")
  end = min(999, max(1, int(round((1.0 - acc) * 1000))))
  fine = np.arange(1, end + 1)
  coarse = np.arange(end + 10, 991, 10)
  return np.round(np.concatenate([fine, coarse]) / 1000.0, 3)


def _sort_floats(x: jax.Array) -> jax.Array:
  """``x`` sorted along its last axis, for order statistics used in ``>=``.

  The order of ``jnp.sort`` (-0 and 0 equal, NaN last), computed as an
  integer sort, which XLA CPU runs several times faster than a float sort
  with ``jnp.sort``'s total-order comparator: zeros and NaNs are made
  canonical (0.0, the default NaN), the IEEE bits are mapped to integers of
  the same order, sorted and mapped back. The values equal ``jnp.sort``'s
  (a -0.0 comes out as 0.0, a NaN as the default NaN): the same results in
  any comparison. Other float widths than 32 and 64 bits use ``jnp.sort``.
  """
  itype = {4: jnp.int32, 8: jnp.int64}.get(jnp.dtype(x.dtype).itemsize)
  if itype is None or not jnp.issubdtype(x.dtype, jnp.floating):
    return jnp.sort(x, axis=-1)
  x = jnp.where(x == 0, jnp.zeros_like(x), x)
  x = jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)
  low = jnp.array(jnp.iinfo(itype).max, itype)
  flip = lambda b: jnp.where(b < 0, b ^ low, b)  # an involution
  keys = flip(jax.lax.bitcast_convert_type(x, itype))
  keys = jax.lax.sort(keys, dimension=x.ndim - 1, is_stable=False)
  return jax.lax.bitcast_convert_type(flip(keys), x.dtype)
