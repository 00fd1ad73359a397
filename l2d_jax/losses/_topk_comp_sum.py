"""The comp-sum surrogate family: ``comp_sum_loss`` and its weighted sums.

The comp-sum family (Mao, Mohri & Zhong, 2023), for scores ``s [n]`` and a
target ``j``, with ``v = Σ_{j'≠j} exp(s_j' − s_j)``:

  Φ^ν(s, j) = Ψ^ν(v),  Ψ^1(v) = log(1 + v),
  Ψ^ν(v) = ((1 + v)^{1−ν} − 1) / (1 − ν) otherwise,

ν = 0 sum-exponential, ν = 1 logistic (``−log softmax``), ν ∈ (1, 2)
generalised cross-entropy, ν = 2 mean absolute error. It is computed from
``ℓ = −log_softmax(s)_j = log(1 + v)`` as ``expm1((1 − ν)·ℓ) / (1 − ν)``,
accurate near 0 (``ℓ`` of the top score is ``log1p`` of the other scores'
``exp(s_j' − s_top)``, not a rounded log-softmax), in ``O(n)`` per row.
For ``ν >= 1`` the weighted sums ``Σ_j w_j·Φ^ν(s, j)`` that the Top-k
surrogates use (``_weighted_comp_sum``) carry an analytic derivative
(``∂/∂s_i = (Σ_j w_j q_j)·softmax(s)_i − w_i q_i`` with
``q_j = exp((1 − ν)·ℓ_j)``): same values, one pass for the gradient instead
of autodiff through the log-space formula.

``nu`` is a static Python (or NumPy) real number in [0, 2]: it picks the
formula at trace time (a new value compiles a new program). The checks of
``nu``, scores and costs here are shared with ``_topk``.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


def _check_nu(nu: Any) -> float:
  if isinstance(nu, (bool, np.bool_)) or not isinstance(nu, numbers.Real):
    raise TypeError(f"`nu` must be a real number (static), got "
                    f"{type(nu).__name__}.")
  nu = float(nu)
  if not 0.0 <= nu <= 2.0:
    raise ValueError(f"`nu` must lie in [0, 2], got {nu}.")
  return nu


def _check_scores(scores: Any, name: str) -> int:
  _validation.check_floating(scores, name)
  if jnp.ndim(scores) < 1 or jnp.shape(scores)[-1] < 1:
    raise ValueError(f"`{name}` must have shape [..., n] with n >= 1, got "
                     f"shape {tuple(jnp.shape(scores))}.")
  return jnp.shape(scores)[-1]


def _check_costs(costs: Any, scores: Any, name: str, scores_name: str) -> None:
  """Costs of the shape of the scores, finite and >= 0 when concrete."""
  if tuple(jnp.shape(costs)) != tuple(jnp.shape(scores)):
    raise ValueError(
        f"`{name}` must have the shape [..., n] of `{scores_name}`, got "
        f"shapes {tuple(jnp.shape(costs))} and {tuple(jnp.shape(scores))}.")
  if not jnp.issubdtype(jnp.result_type(costs), jnp.number):
    raise TypeError(f"`{name}` must be numeric, got {jnp.result_type(costs)}.")
  if _validation.is_concrete(costs):
    c = np.asarray(costs, dtype=np.float64)
    if not np.all(np.isfinite(c)):
      raise ValueError(f"`{name}` contains NaN or inf.")
    if c.size and c.min() < 0:
      raise ValueError(f"`{name}` must be >= 0, got a minimum of "
                       f"{c.min():.6g}.")


def _psi_of_log(ell: jax.Array, nu: float) -> jax.Array:
  """Ψ^ν as a function of ``ℓ = log(1 + v) >= 0``.

  For ν < 1 the value grows like ``exp((1 − ν)·ℓ)``; once the exponent passes
  ``log(finfo.max) − 1`` the value is +inf (it has no finite representation)
  and its gradient is 0, never NaN.
  """
  if nu == 1.0:
    return ell
  a = 1.0 - nu
  z = a * ell
  if nu > 1.0:
    return jnp.expm1(z) / a
  limit = float(np.log(jnp.finfo(ell.dtype).max)) - 1.0
  over = z > limit
  value = jnp.expm1(jnp.where(over, 0.0, z)) / a
  return jnp.where(over, jnp.inf, value)


def _reduce_rows(gaps: jax.Array, *extra: jax.Array) -> tuple[jax.Array, ...]:
  """``rest = Σ_j exp(gaps_j) − 1`` [...] and the row sums of ``extra``.

  For ``gaps = s − max s <= 0``, the ``− 1`` is taken exactly by leaving the
  top's term out of the sum (tied tops count 1 each beyond the first): one
  pass summing the other terms, counting the tops and summing ``extra``.
  """
  is_top = gaps == 0
  zero = jnp.zeros((), gaps.dtype)
  others, tops, *sums = jax.lax.reduce(
      (jnp.where(is_top, zero, jnp.exp(gaps)), is_top.astype(gaps.dtype),
       *extra), (zero,) * (2 + len(extra)),
      lambda x, y: tuple(a + b for a, b in zip(x, y)), (gaps.ndim - 1,))
  return (others + (tops - 1), *sums)


@jax.custom_jvp
def _rest(gaps: jax.Array) -> jax.Array:
  """``[..., 1]``: ``Σ_j exp(gaps_j) − 1`` (see :func:`_reduce_rows`).

  Its derivative is that of ``Σ_j exp(gaps_j)``.
  """
  return _reduce_rows(gaps)[0][..., None]


@_rest.defjvp
def _rest_jvp(primals, tangents):
  (gaps,), (d_gaps,) = primals, tangents
  return _rest(gaps), jnp.sum(jnp.exp(gaps) * d_gaps, axis=-1, keepdims=True)


@jax.custom_jvp
def _rest_and_weighted_gaps(gaps: jax.Array, weights: jax.Array):
  """``(rest, Σ_j w_j, Σ_j w_j·gaps_j)``, each ``[...]``, in one pass."""
  return _reduce_rows(gaps, weights, weights * gaps)


@_rest_and_weighted_gaps.defjvp
def _rest_and_weighted_gaps_jvp(primals, tangents):
  (gaps, weights), (d_gaps, d_weights) = primals, tangents
  return _rest_and_weighted_gaps(gaps, weights), (
      jnp.sum(jnp.exp(gaps) * d_gaps, axis=-1),
      jnp.sum(d_weights, axis=-1),
      jnp.sum(d_weights * gaps + weights * d_gaps, axis=-1))


def _gaps(scores: jax.Array) -> jax.Array:
  """``s − max s`` (<= 0), the max a constant to autodiff."""
  return scores - jax.lax.stop_gradient(
      jnp.max(scores, axis=-1, keepdims=True))


def _gaps_and_rest(scores: jax.Array):
  """``gaps = s − max s`` [..., n] and ``rest`` [..., 1].

  ``rest = Σ_{j'} exp(s_j' − m) − 1`` with ``m`` the top score (see
  :func:`_reduce_rows`). ``m`` is a constant to autodiff, so
  ``log1p(rest) − gaps`` has the derivatives of ``−log_softmax`` at every
  order, exact at tied scores. ``O(n)`` per row.
  """
  gaps = _gaps(scores)
  return gaps, _rest(gaps)


def _log1p_v(scores: jax.Array) -> jax.Array:
  """``[..., n]``: ``ℓ_j = log(1 + Σ_{j'≠j} exp(s_j' − s_j)) = −log_softmax_j``.

  As ``log1p(rest) − (s_j − m)`` (see :func:`_gaps_and_rest`):
  ``−log_softmax`` would round ``ℓ`` of a confident top score to 0, this
  keeps it accurate near 0.
  """
  gaps, rest = _gaps_and_rest(scores)
  return jnp.log1p(rest) - gaps


def _weighted_sum(weights: jax.Array, phi: jax.Array, nu: float) -> jax.Array:
  """``Σ_j w_j·Φ_j`` with ``0·Φ = 0`` even where Φ is +inf (ν < 1)."""
  if nu >= 1.0:  # Φ^ν is finite
    return jnp.sum(weights * phi, axis=-1)
  zero = weights == 0
  return jnp.sum(jnp.where(zero, 0, weights * jnp.where(zero, 0, phi)),
                 axis=-1)


def _comp_sum_all(scores: jax.Array, nu: float) -> jax.Array:
  """``[..., n]``: Φ^ν(s, j) for every target ``j``."""
  return _psi_of_log(_log1p_v(scores), nu)


def _weighted_comp_sum_general(weights: jax.Array, scores: jax.Array,
                               nu: float) -> jax.Array:
  """``[...]``: ``Σ_j w_j·Φ^ν(s, j)``, differentiated by autodiff."""
  return _weighted_sum(weights, _comp_sum_all(scores, nu), nu)


def _fast_parts(weights: jax.Array, scores: jax.Array, nu: float):
  """Value, ``gaps``, ``rest`` [..., 1], ``Φ`` [..., n], ``w·q``, ``Σ w·q``."""
  gaps = _gaps(scores)
  if nu == 1.0:
    rest, w_sum, wg_sum = _rest_and_weighted_gaps(gaps, weights)
    log1p_rest = jnp.log1p(rest)
    value = w_sum * log1p_rest - wg_sum
    return (value, gaps, rest[..., None], log1p_rest[..., None] - gaps,
            weights, w_sum)
  rest = _rest(gaps)
  ell = jnp.log1p(rest) - gaps
  phi = _psi_of_log(ell, nu)
  wq = weights * jnp.exp((1.0 - nu) * ell)
  return (jnp.sum(weights * phi, axis=-1), gaps, rest, phi, wq,
          jnp.sum(wq, axis=-1))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _weighted_comp_sum_fast(weights: jax.Array, scores: jax.Array,
                            nu: float) -> jax.Array:
  """``Σ_j w_j·Φ^ν(s, j)`` for ``ν >= 1`` with an analytic derivative.

  Same value as :func:`_weighted_comp_sum_general` (Φ^ν is finite for
  ``ν >= 1``). With ``ℓ_j = −log_softmax(s)_j = L − gaps_j``,
  ``L = log1p(rest)``, ``p = softmax(s)`` and ``q_j = dΨ^ν/dℓ =
  exp((1 − ν)·ℓ_j)`` (1 at ν = 1, in (0, 1] above):
  ``∂/∂s_i = (Σ_j w_j q_j)·p_i − w_i q_i`` and ``∂/∂w_j = Φ^ν(s, j)``,
  instead of autodiff through the log-space formula. At ν = 1 the value is
  ``(Σ_j w_j)·L − Σ_j w_j·gaps_j``: one ``log1p`` per row, and, for
  ``w >= 0``, a sum of two non-negative terms (no cancellation, finite at
  scores ±1e4). The rule is itself differentiable (second derivatives by
  autodiff of it).
  """
  return _fast_parts(weights, scores, nu)[0]


@_weighted_comp_sum_fast.defjvp
def _weighted_comp_sum_fast_jvp(nu, primals, tangents):
  weights, scores = primals
  d_weights, d_scores = tangents
  value, gaps, rest, phi, wq, wq_sum = _fast_parts(weights, scores, nu)
  p = jnp.exp(gaps) / (1 + rest)
  d_out = (wq_sum * jnp.sum(p * d_scores, axis=-1)
           - jnp.sum(wq * d_scores, axis=-1)
           + jnp.sum(phi * d_weights, axis=-1))
  return value, d_out


def _weighted_comp_sum(weights: jax.Array, scores: jax.Array,
                       nu: float) -> jax.Array:
  """``[...]``: ``Σ_j w_j·Φ^ν(s, j)``, weights ``[..., n]`` >= 0.

  ``ν >= 1``: the fast path (analytic derivative); ``ν < 1``, where Φ^ν may
  be +inf, the general one (its +inf/0 handling).
  """
  if nu >= 1.0:
    return _weighted_comp_sum_fast(weights, scores, nu)
  return _weighted_comp_sum_general(weights, scores, nu)


def comp_sum_loss(
    scores: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    nu: float = 1.0,
) -> jax.Array:
  r"""Comp-sum loss ``Φ^ν(s, j) = Ψ^ν(Σ_{j'≠j} exp(s_j' − s_j))``.

  ``ν = 1`` is the softmax cross-entropy; ``ν = 0`` the sum-exponential loss
  ``Σ_{j'≠j} exp(s_j' − s_j)``; ``ν ∈ (1, 2)`` the generalised cross-entropy;
  ``ν = 2`` the mean absolute error ``1 − softmax(s)_j``.

  Computed in log space: with ``ℓ = −log_softmax(s)_j = log(1 + v)`` (for the
  top score taken as ``log1p(v)``),
  ``Φ^ν = expm1((1 − ν)·ℓ) / (1 − ν)``, accurate near 0 (a confident right
  score gives ``Φ^ν ≈ v``, not a rounded 0). Values and gradients
  are finite for any finite scores when ``ν >= 1``. For ``ν < 1`` the loss
  grows like ``exp((1 − ν)·ℓ)``: when ``(1 − ν)·ℓ`` exceeds
  ``log(finfo.max) − 1`` (score gaps beyond about 87.7 / (1 − ν) in float32)
  the value is +inf, with gradient 0 there (never NaN).

  Args:
    scores: ``[..., n]`` floating scores.
    targets: ``[...]`` integer targets in ``[0, n)``.
    nu: the comp-sum parameter ν in [0, 2], a static Python/NumPy real.

  Returns:
    ``[...]`` per-example losses (>= 0), dtype of ``scores``; NaN for a
    target out of range (possible only under jit; concrete input raises).

  Raises:
    TypeError: non-floating scores, non-integer targets, ``nu`` not a real.
    ValueError: ``nu`` outside [0, 2], ``targets`` whose shape is not the
      batch shape of ``scores``, targets outside ``[0, n)`` (concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> scores = jnp.array([[1.0, 0.0, -1.0]])
    >>> with jnp.printoptions(precision=4):
    ...   print(losses.comp_sum_loss(scores, jnp.array([0]), nu=0.0))
    ...   print(losses.comp_sum_loss(scores, jnp.array([0]), nu=1.0))
    [0.5032]
    [0.4076]

  References:
    Mao, Mohri & Zhong, Cross-Entropy Loss Functions: Theoretical Analysis
    and Applications, ICML 2023.
  """
  nu = _check_nu(nu)
  n = _check_scores(scores, "scores")
  _validation.check_integer(targets, "targets")
  batch = tuple(jnp.shape(scores)[:-1])
  if tuple(jnp.shape(targets)) != batch:
    raise ValueError(
        f"`targets` must have shape [...] equal to the batch shape {batch} of "
        f"`scores` [..., n], got shape {tuple(jnp.shape(targets))}.")
  _validation.check_index_range(targets, n, "targets")
  scores = jnp.asarray(scores)
  targets = jnp.asarray(targets)
  valid = (targets >= 0) & (targets < n)
  idx = jnp.where(valid, targets, 0)[..., None]
  ell = jnp.take_along_axis(_log1p_v(scores), idx, axis=-1)[..., 0]
  return jnp.where(valid, _psi_of_log(ell, nu), jnp.nan)
