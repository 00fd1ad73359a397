"""Top-k and Top-k(x) two-stage deferral: comp-sum surrogates and costs.

Agents follow the package encoding (agent 0 = the main model, agents
``1..J`` = the experts, ``A = J + 1``). A rejector scores every agent; the
Top-k rule consults the ``k`` highest-scoring agents
(:func:`l2d_jax.deferral.top_k_agents`). One surrogate,
:func:`topk_deferral_surrogate`, trains a rejector that serves every ``k``.
Top-k(x) then trains a selector over the cardinalities ``k = 1..A`` on the
frozen rejector with :func:`cardinality_surrogate` and the costs of
:func:`cardinality_loss`.

The surrogates are weighted sums of the comp-sum family ``Φ^ν`` (Mao, Mohri
& Zhong, 2023; ``comp_sum_loss``, in ``_topk_comp_sum`` with its
formulas and its analytic derivative for ``ν >= 1``).

Every loss is per example with any leading batch shape ``[...]``; the caller
reduces. ``nu`` is a static Python (or NumPy) real number in [0, 2]: it picks
the formula at trace time (a new value compiles a new program).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.deferral import _topk as _deferral_topk
from l2d_jax.losses._topk_comp_sum import _check_costs
from l2d_jax.losses._topk_comp_sum import _check_nu
from l2d_jax.losses._topk_comp_sum import _check_scores
from l2d_jax.losses._topk_comp_sum import _weighted_comp_sum

AGENT_LOSSES = ("zero_one", "squared", "absolute")


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
