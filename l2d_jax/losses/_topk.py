"""Top-k and Top-k(x) two-stage deferral: comp-sum surrogates and costs.

Agents follow the package encoding (agent 0 = the main model, agents
``1..J`` = the experts, ``A = J + 1``). A rejector scores every agent; the
Top-k rule consults the ``k`` highest-scoring agents
(:func:`l2d_jax.deferral.top_k_agents`). One surrogate,
:func:`topk_deferral_surrogate`, trains a rejector that serves every ``k``.
Top-k(x) then trains a selector over the cardinalities ``k = 1..A`` on the
frozen rejector with :func:`cardinality_surrogate` and the costs of
:func:`cardinality_loss`.

The comp-sum family (Mao, Mohri & Zhong, 2023), for scores ``s [n]`` and a
target ``j``, with ``v = Σ_{j'≠j} exp(s_j' − s_j)``:

  Φ^ν(s, j) = Ψ^ν(v),  Ψ^1(v) = log(1 + v),
  Ψ^ν(v) = ((1 + v)^{1−ν} − 1) / (1 − ν) otherwise,

ν = 0 sum-exponential, ν = 1 logistic (``−log softmax``), ν ∈ (1, 2)
generalised cross-entropy, ν = 2 mean absolute error. It is computed from
``ℓ = −log_softmax(s)_j = log(1 + v)`` as ``expm1((1 − ν)·ℓ) / (1 − ν)``,
accurate near 0 (``ℓ`` of the top score is ``log1p`` of the other scores'
``exp(s_j' − s_top)``, not a rounded log-softmax), in ``O(n)`` per row.
For ``ν >= 1`` the weighted sums of the surrogates
(:func:`topk_deferral_surrogate`, :func:`cardinality_surrogate`) carry an
analytic derivative (``∂/∂s_i = (Σ_j w_j q_j)·softmax(s)_i − w_i q_i`` with
``q_j = exp((1 − ν)·ℓ_j)``): same values, one pass for the gradient instead
of autodiff through the log-space formula.

Every loss is per example with any leading batch shape ``[...]``; the caller
reduces. ``nu`` is a static Python (or NumPy) real number in [0, 2]: it picks
the formula at trace time (a new value compiles a new program).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.deferral import _topk as _deferral_topk

AGENT_LOSSES = ("zero_one", "squared", "absolute")


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


def agent_costs(
    agent_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    alpha: jax.typing.ArrayLike = 1.0,
    beta: jax.typing.ArrayLike = 0.0,
    loss: str = "zero_one",
) -> jax.Array:
  """Agent costs ``c_j = α_j·ℓ(m_j(x), y) + β_j``.

  Args:
    agent_predictions: ``[..., A]`` answers of every agent (agent 0 = the
      main model): integer labels for ``'zero_one'``, values for
      ``'squared'`` and ``'absolute'``.
    targets: ``[...]`` true labels or values.
    alpha: ``[A]`` (or scalar) non-negative weights of the prediction loss.
    beta: ``[A]`` (or scalar) non-negative consultation costs.
    loss: ``'zero_one'`` (``1[m_j ≠ y]``), ``'squared'`` or ``'absolute'``.

  Returns:
    ``[..., A]`` costs, float32 (or the floating dtype of the predictions).

  Raises:
    TypeError: non-integer labels for ``'zero_one'``.
    ValueError: unknown ``loss``; ``agent_predictions`` whose batch shape is
      not the shape of ``targets``; ``alpha``/``beta`` not scalar or ``[A]``,
      negative, NaN or inf; NaN or inf in concrete regression values.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> preds = jnp.array([[1, 2, 1]])
    >>> print(losses.agent_costs(preds, jnp.array([1]),
    ...                          beta=jnp.array([0.0, 0.1, 0.2])))
    [[0.  1.1 0.2]]
  """
  if loss not in AGENT_LOSSES:
    raise ValueError(f"`loss` must be one of {AGENT_LOSSES}, got {loss!r}.")
  shape = tuple(jnp.shape(agent_predictions))
  if (len(shape) < 1 or shape[:-1] != tuple(jnp.shape(targets))
      or shape[-1] < 1):
    raise ValueError(
        f"`agent_predictions` must have shape [..., A] with the shape of "
        f"`targets` [...] as batch shape, got shapes {shape} and "
        f"{tuple(jnp.shape(targets))}.")
  num_agents = shape[-1]
  for name, value in (("alpha", alpha), ("beta", beta)):
    if jnp.ndim(value) > 1 or (jnp.ndim(value) == 1
                               and jnp.shape(value)[0] != num_agents):
      raise ValueError(f"`{name}` must be a scalar or have shape [A]="
                       f"({num_agents},), got shape "
                       f"{tuple(jnp.shape(value))}.")
    if _validation.is_concrete(value):
      v = np.asarray(value, dtype=np.float64)
      if not np.all(np.isfinite(v)):
        raise ValueError(f"`{name}` contains NaN or inf.")
      if v.size and v.min() < 0:
        raise ValueError(f"`{name}` must be >= 0, got {v.min():.6g}.")
  preds = jnp.asarray(agent_predictions)
  y = jnp.asarray(targets)[..., None]
  if loss == "zero_one":
    _validation.check_integer(agent_predictions, "agent_predictions")
    _validation.check_integer(targets, "targets")
    dtype = jnp.float32
    err = (preds != y).astype(dtype)
  else:
    _validation.check_finite(agent_predictions, "agent_predictions")
    _validation.check_finite(targets, "targets")
    dtype = jnp.result_type(preds.dtype, y.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
      dtype = jnp.float32
    diff = preds.astype(dtype) - y.astype(dtype)
    err = diff * diff if loss == "squared" else jnp.abs(diff)
  alpha = jnp.asarray(alpha, dtype)
  beta = jnp.asarray(beta, dtype)
  return alpha * err + beta


def topk_deferral_surrogate(
    rejector_scores: jax.typing.ArrayLike,
    costs: jax.typing.ArrayLike,
    *,
    nu: float = 1.0,
) -> jax.Array:
  r"""Top-k deferral surrogate ``Σ_j τ_j·Φ^ν(r, j)``, ``τ_j = Σ_{i≠j} c_i``.

  The surrogate does not depend on ``k``: one rejector, trained once, serves
  every Top-k rule. With ``ν = 1`` its minimiser has
  ``softmax(r)_j ∝ E[τ_j | x]``, which ranks the agents by increasing
  expected cost (the Bayes-optimal rejector set of every size).

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores.
    costs: ``[..., A]`` non-negative agent costs (e.g. :func:`agent_costs`).
    nu: comp-sum parameter ν in [0, 2] (see :func:`comp_sum_loss`).

  Returns:
    ``[...]`` per-example surrogate values (>= 0); NaN where a cost is NaN
    (possible only under jit). Terms with ``τ_j = 0`` contribute 0 even when
    ``Φ^ν`` is +inf.

  Raises:
    TypeError: non-floating scores or non-numeric costs; ``nu`` not a real.
    ValueError: shapes that differ, costs with NaN, inf or negative values
      (concrete), ``nu`` outside [0, 2].

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> scores = jnp.zeros(3)
    >>> costs = jnp.array([0.0, 1.0, 1.0])
    >>> print(f"{losses.topk_deferral_surrogate(scores, costs):.4f}")
    4.3944

  References:
    Montreuil, Carlier, Ng & Ooi, Why Ask One When You Can Ask k? Two-Stage
    Learning-to-Defer to a Set of Experts, 2025.
  """
  nu = _check_nu(nu)
  _check_scores(rejector_scores, "rejector_scores")
  _check_costs(costs, rejector_scores, "costs", "rejector_scores")
  scores = jnp.asarray(rejector_scores)
  costs = jnp.asarray(costs, scores.dtype)
  tau = jnp.sum(costs, axis=-1, keepdims=True) - costs
  return _weighted_comp_sum(tau, scores, nu)


def topk_deferral_loss(
    rejector_scores: jax.typing.ArrayLike,
    costs: jax.typing.ArrayLike,
    *,
    k: int,
) -> jax.Array:
  """The true Top-k deferral loss ``Σ_{i≤k} c_{r(i)}``.

  ``r(1..k)`` are the ``k`` highest-scoring agents (ties to the lower index,
  as :func:`l2d_jax.deferral.top_k_agents`).

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores.
    costs: ``[..., A]`` non-negative agent costs.
    k: the number of consulted agents, ``1 <= k <= A`` (static int).

  Returns:
    ``[...]`` per-example losses; NaN on rows with a NaN score (under jit).

  Raises:
    ValueError: ``k`` outside ``[1, A]``, shapes that differ, NaN in
      concrete scores, costs with NaN, inf or negative values (concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> scores = jnp.array([0.0, 2.0, 1.0])
    >>> costs = jnp.array([0.5, 0.25, 1.0])
    >>> print(losses.topk_deferral_loss(scores, costs, k=2))
    1.25
  """
  _check_scores(rejector_scores, "rejector_scores")
  _check_costs(costs, rejector_scores, "costs", "rejector_scores")
  agents = _deferral_topk.top_k_agents(rejector_scores, k=k)
  costs = jnp.asarray(costs, jnp.result_type(rejector_scores))
  picked = jnp.take_along_axis(costs, jnp.maximum(agents, 0), axis=-1)
  return jnp.where(agents[..., 0] >= 0, jnp.sum(picked, axis=-1), jnp.nan)


def cardinality_loss(
    metric_losses: jax.typing.ArrayLike,
    rejector_scores: jax.typing.ArrayLike,
    *,
    beta: jax.typing.ArrayLike,
    lam: jax.typing.ArrayLike,
    count_model: bool = True,
) -> jax.Array:
  r"""Cardinality loss ``d(A_k(x), y) + λ·Σ_{i≤k} β_{r(i)}`` for every ``k``.

  ``ξ`` (the paper's increasing function of the budget) is the identity; a
  slope is absorbed into ``λ``.

  Args:
    metric_losses: ``[..., A]`` metric ``d(A_k(x), y)`` for ``k = 1..A``
      (from :func:`l2d_jax.deferral.set_losses`).
    rejector_scores: ``[..., A]`` floating scores of the frozen rejector.
    beta: ``[A]`` (or scalar) non-negative consultation costs.
    lam: non-negative trade-off λ: a scalar, or an array broadcast against
      the batch shape ``[...]`` (e.g. ``lams[:, None]`` of shape ``[L, 1]``
      with a ``[B, A]`` batch gives ``[L, B, A]``: a λ sweep in one call).
    count_model: whether the main model's ``β_0`` counts in the budget (see
      :func:`l2d_jax.deferral.set_budgets`).

  Returns:
    ``[..., A]`` (broadcast with ``lam``) cardinality costs.

  Raises:
    ValueError: shapes that differ; ``lam`` or ``beta`` negative, NaN or inf
      (concrete); NaN in concrete metric losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> d = jnp.array([1.0, 0.0, 0.0])
    >>> scores = jnp.array([2.0, 1.0, 0.0])
    >>> print(losses.cardinality_loss(d, scores, beta=jnp.array([0.0, 0.5, 0.5]),
    ...                               lam=1.0))
    [1.  0.5 1. ]

  References:
    Montreuil, Carlier, Ng & Ooi, Why Ask One When You Can Ask k? Two-Stage
    Learning-to-Defer to a Set of Experts, 2025.
  """
  _validation.check_floating(metric_losses, "metric_losses")
  if tuple(jnp.shape(metric_losses)) != tuple(jnp.shape(rejector_scores)):
    raise ValueError(
        f"`metric_losses` must have the shape [..., A] of `rejector_scores` "
        f"(one value per k = 1..A), got shapes "
        f"{tuple(jnp.shape(metric_losses))} and "
        f"{tuple(jnp.shape(rejector_scores))}.")
  _validation.check_finite(metric_losses, "metric_losses")
  if _validation.is_concrete(lam):
    v = np.asarray(lam, dtype=np.float64)
    if not np.all(np.isfinite(v)) or (v.size and v.min() < 0):
      raise ValueError(f"`lam` must be finite and >= 0, got values in "
                       f"[{v.min():.6g}, {v.max():.6g}].")
  budgets = _deferral_topk.set_budgets(rejector_scores, beta,
                                       count_model=count_model)
  lam = jnp.asarray(lam, budgets.dtype)
  return jnp.asarray(metric_losses) + lam[..., None] * budgets


def cardinality_surrogate(
    selector_scores: jax.typing.ArrayLike,
    cardinality_costs: jax.typing.ArrayLike,
    *,
    nu: float = 1.0,
    scale: float | None = None,
) -> jax.Array:
  r"""Cost-sensitive comp-sum surrogate ``Σ_k (1 − c̄_k)·Φ^ν(s, k)``.

  ``c̄`` is the cardinality loss normalised to [0, 1]:

  * ``scale=None``: per example, min-max: ``c̄_k = (c_k − min c) /
    (max c − min c)`` (0 everywhere when all ``c_k`` are equal). Each
    example's best ``k`` gets weight 1 and its worst weight 0, but the
    transform differs between examples, so the minimiser of the expected
    surrogate is ``argmin_k E[c̄_k | x]``, which can differ from
    ``argmin_k E[c_k | x]``.
  * ``scale=S`` (a global bound on the costs, e.g. their maximum over the
    training set): ``c̄_k = min(c_k / S, 1)``. The weights are affine in the
    costs, so for costs ``<= S`` the minimiser of the expected surrogate
    selects ``argmin_k E[c_k | x]`` (consistent), and ``k(x)`` moves
    smoothly with ``λ``.

  Args:
    selector_scores: ``[..., K]`` floating selector scores for
      ``k = 1..K``.
    cardinality_costs: ``[..., K]`` non-negative costs (from
      :func:`cardinality_loss`).
    nu: comp-sum parameter ν in [0, 2] (see :func:`comp_sum_loss`).
    scale: ``None`` (per-example min-max) or a positive float ``S``.

  Returns:
    ``[...]`` per-example surrogate values (>= 0).

  Raises:
    TypeError: non-floating scores; ``nu`` not a real.
    ValueError: shapes that differ; costs with NaN, inf or negative values
      (concrete); ``scale`` not positive and finite; ``nu`` outside [0, 2].

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import losses
    >>> s = jnp.zeros(3)
    >>> c = jnp.array([0.0, 1.0, 2.0])
    >>> print(f"{losses.cardinality_surrogate(s, c):.4f}")
    1.6479
    >>> print(f"{losses.cardinality_surrogate(s, c, scale=4.0):.4f}")
    2.4719

  References:
    Cortes, Mao, Mohri, Mohri & Zhong, Cardinality-Aware Set Prediction and
    Top-k Classification, NeurIPS 2024.
  """
  nu = _check_nu(nu)
  _check_scores(selector_scores, "selector_scores")
  _check_costs(cardinality_costs, selector_scores, "cardinality_costs",
               "selector_scores")
  scores = jnp.asarray(selector_scores)
  costs = jnp.asarray(cardinality_costs, scores.dtype)
  if scale is None:
    lo = jnp.min(costs, axis=-1, keepdims=True)
    span = jnp.max(costs, axis=-1, keepdims=True) - lo
    flat = span == 0
    normalised = jnp.where(flat, 0, (costs - lo) / jnp.where(flat, 1, span))
  else:
    if isinstance(scale, (bool, np.bool_)) or not isinstance(
        scale, numbers.Real):
      raise TypeError(f"`scale` must be None or a real number, got "
                      f"{type(scale).__name__}.")
    if not (np.isfinite(scale) and scale > 0):
      raise ValueError(f"`scale` must be positive and finite, got {scale}.")
    normalised = jnp.minimum(costs / scale, 1)
  weights = 1 - normalised
  return _weighted_comp_sum(weights, scores, nu)
