"""Top-k and Top-k(x) deferral: which agents answer, and how their answers mix.

Agents follow the package encoding: agent 0 is the main model and agents
``1..J`` are the experts, ``A = J + 1`` in all. A rejector scores every agent
(``[..., A]``, higher is better); the rejector set ``A_k(x)`` holds the ``k``
agents with the highest scores, ordered from the highest. Exact ties go to the
lower agent index, and ``-0.0`` ties with ``0.0``.

Top-k(x) adds a selector that scores the cardinalities ``k = 1..K``
(``[..., K]`` with ``K <= A``); ``k(x) = 1 + argmax``, ties to the smaller
``k``. The set functions (``set_predictions``, ``set_losses``,
``set_budgets``) return one value per cardinality, ``[..., A]`` over
``k = 1..A`` (index ``k - 1``), so a sweep over ``k`` (and, through
:func:`l2d_jax.losses.cardinality_loss`, over the trade-off ``λ``) is one
call; :func:`at_cardinality` then picks the value at each example's ``k(x)``.

Every function works on any leading batch shape and under ``jax.jit`` and
``jax.vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.deferral import _ranking

SET_RULES = ("majority_vote", "weighted_vote", "weighted_average",
             "uniform_average")
SET_METRICS = ("top_k", "majority_vote", "weighted_vote", "best_agent",
               "weighted_average", "uniform_average")
REGRESSION_LOSSES = ("squared", "absolute")

_CLASSIFICATION = ("top_k", "majority_vote", "weighted_vote")


def top_k_agents(
    rejector_scores: jax.typing.ArrayLike, *, k: int
) -> jax.Array:
  """The rejector set ``A_k(x)``: the ``k`` highest-scoring agents, in order.

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores (agent 0 = the
      model, agents ``1..J`` = the experts).
    k: the number of agents to consult, ``1 <= k <= A`` (static int).

  Returns:
    ``[..., k]`` int32 agent indices, highest score first; exact ties go to
    the lower index. A row with a NaN score has no ranking: concrete input
    raises, and under jit the row is all -1.

  Raises:
    TypeError: non-floating scores, or ``k`` not an int.
    ValueError: a scalar score array, ``k`` outside ``[1, A]``, NaN in
      concrete scores.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> scores = jnp.array([[0.1, 2.0, 0.5, 2.0], [3.0, -1.0, 0.0, 1.0]])
    >>> print(deferral.top_k_agents(scores, k=2))
    [[1 3]
     [0 3]]

  References:
    Montreuil, Carlier, Ng & Ooi, Why Ask One When You Can Ask k? Two-Stage
    Learning-to-Defer to a Set of Experts, 2025.
  """
  num_agents = _ranking.check_scores(rejector_scores, "rejector_scores")
  k = _ranking.check_k(k, num_agents)
  return _ranking.ranked(jnp.asarray(rejector_scores), k)


def bayes_optimal_agents(
    expected_costs: jax.typing.ArrayLike, *, k: int
) -> jax.Array:
  """The Bayes-optimal rejector set: the ``k`` agents of lowest expected cost.

  Lemma 4.5 of the paper: the minimiser of the top-k deferral risk consults,
  for each input, the ``k`` agents with the lowest ``E[c_j | x]``.

  Args:
    expected_costs: ``[..., A]`` floating expected costs ``E[c_j | x]``.
    k: the number of agents, ``1 <= k <= A`` (static int).

  Returns:
    ``[..., k]`` int32 agent indices, lowest expected cost first; ties go to
    the lower index (-1 rows for NaN costs under jit).

  Raises:
    TypeError, ValueError: as :func:`top_k_agents`, naming
      ``expected_costs``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.bayes_optimal_agents(jnp.array([0.3, 0.1, 0.3]), k=2))
    [1 0]
  """
  num_agents = _ranking.check_scores(expected_costs, "expected_costs")
  k = _ranking.check_k(k, num_agents)
  return _ranking.ranked(-jnp.asarray(expected_costs), k)


def select_cardinality(
    selector_scores: jax.typing.ArrayLike, *, num_agents: int | None = None
) -> jax.Array:
  """Top-k(x) cardinality ``k(x) = 1 + argmax_k s_k(x)``, ties to smaller k.

  Args:
    selector_scores: ``[..., K]`` floating scores of the cardinalities
      ``k = 1..K``.
    num_agents: optional number of agents ``A``; ``K > A`` then raises.

  Returns:
    ``[...]`` int32 cardinalities in ``[1, K]``; -1 on rows with a NaN score
    (possible only under jit).

  Raises:
    TypeError: non-floating scores.
    ValueError: a scalar score array, NaN in concrete scores, or more
      cardinalities than ``num_agents``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.select_cardinality(jnp.array([[0.0, 2.0, 2.0],
    ...                                              [5.0, 1.0, 0.0]])))
    [2 1]
  """
  width = _ranking.check_scores(selector_scores, "selector_scores")
  if num_agents is not None:
    num_agents = _validation.check_static_int(num_agents, "num_agents",
                                              minimum=1)
    if width > num_agents:
      raise ValueError(
          f"`selector_scores` has {width} cardinalities but there are only "
          f"A={num_agents} agents (shape [..., K] with K <= A).")
  s = jnp.asarray(selector_scores)
  k = jnp.argmax(s, axis=-1).astype(jnp.int32) + 1
  return jnp.where(jnp.any(jnp.isnan(s), axis=-1), -1, k).astype(jnp.int32)


def top_kx_agents(
    rejector_scores: jax.typing.ArrayLike,
    selector_scores: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """The Top-k(x) allocation: the first ``k(x)`` agents of the rejector set.

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores.
    selector_scores: ``[..., K]`` floating selector scores, ``K <= A``, same
      batch shape.

  Returns:
    ``(agents, k)``: ``agents [..., A]`` int32 agent indices in rank order,
    -1 after position ``k(x)``; ``k [...]`` int32 cardinalities ``k(x)``.
    Rows with a NaN score (under jit) are all -1.

  Raises:
    ValueError: ``K > A`` (a selector with more cardinalities than agents),
      different batch shapes, NaN in concrete scores.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> agents, k = deferral.top_kx_agents(jnp.array([0.0, 3.0, 1.0]),
    ...                                    jnp.array([0.0, 1.0, 0.0]))
    >>> print(agents, k)
    [ 1  2 -1] 2

  References:
    Montreuil, Carlier, Ng & Ooi, Why Ask One When You Can Ask k? Two-Stage
    Learning-to-Defer to a Set of Experts, 2025.
  """
  num_agents = _ranking.check_scores(rejector_scores, "rejector_scores")
  _ranking.check_scores(selector_scores, "selector_scores")
  if jnp.shape(selector_scores)[:-1] != jnp.shape(rejector_scores)[:-1]:
    raise ValueError(
        f"`selector_scores` [..., K] must have the batch shape of "
        f"`rejector_scores` [..., A], got shapes "
        f"{tuple(jnp.shape(selector_scores))} and "
        f"{tuple(jnp.shape(rejector_scores))}.")
  k = select_cardinality(selector_scores, num_agents=num_agents)
  ranked = _ranking.ranked(jnp.asarray(rejector_scores), num_agents)
  keep = jnp.arange(num_agents) < k[..., None]
  agents = jnp.where(keep & (ranked >= 0), ranked, -1)
  k = jnp.where(ranked[..., 0] < 0, -1, k)
  return agents.astype(jnp.int32), k.astype(jnp.int32)


def at_cardinality(
    values: jax.typing.ArrayLike, k: jax.typing.ArrayLike
) -> jax.Array:
  """Picks ``values[..., k - 1]``: a per-``k`` quantity at each ``k(x)``.

  Args:
    values: ``[..., A]`` floating values for ``k = 1..A`` (e.g. from
      :func:`set_losses` or :func:`set_budgets`).
    k: ``[...]`` integer cardinalities in ``[1, A]`` (e.g. from
      :func:`select_cardinality`).

  Returns:
    ``[...]`` the value at each example's cardinality; NaN where ``k`` is out
    of range (possible only under jit; concrete input raises).

  Raises:
    TypeError: non-floating ``values`` or non-integer ``k``.
    ValueError: batch shapes that differ, ``k`` outside ``[1, A]``
      (concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.at_cardinality(jnp.array([[1.0, 2.0], [3.0, 4.0]]),
    ...                               jnp.array([2, 1])))
    [2. 3.]
  """
  _validation.check_floating(values, "values")
  _validation.check_integer(k, "k")
  if jnp.ndim(values) < 1 or jnp.shape(k) != jnp.shape(values)[:-1]:
    raise ValueError(
        f"`k` must have the batch shape [...] of `values` [..., A], got "
        f"shapes {tuple(jnp.shape(k))} and {tuple(jnp.shape(values))}.")
  width = jnp.shape(values)[-1]
  if _validation.is_concrete(k):
    kk = np.asarray(k)
    if kk.size and (kk.min() < 1 or kk.max() > width):
      raise ValueError(f"`k` must lie in [1, {width}], got values in "
                       f"[{kk.min()}, {kk.max()}].")
  values = jnp.asarray(values)
  k = jnp.asarray(k)
  valid = (k >= 1) & (k <= width)
  idx = jnp.clip(k - 1, 0, width - 1)
  picked = jnp.take_along_axis(values, idx[..., None], axis=-1)[..., 0]
  return jnp.where(valid, picked, jnp.nan)


def _check_set_inputs(agent_predictions, rejector_scores):
  num_agents = _ranking.check_scores(rejector_scores, "rejector_scores")
  if tuple(jnp.shape(agent_predictions)) != tuple(jnp.shape(rejector_scores)):
    raise ValueError(
        f"`agent_predictions` must have the shape [..., A] of "
        f"`rejector_scores`, got shapes {tuple(jnp.shape(agent_predictions))} "
        f"and {tuple(jnp.shape(rejector_scores))}.")
  return num_agents


def _in_rank_order(agent_predictions, rejector_scores):
  """Predictions and scores sorted by rank (highest score first)."""
  scores = jnp.asarray(rejector_scores)
  order = _ranking.ranked(scores, scores.shape[-1])
  safe = jnp.maximum(order, 0)
  preds = jnp.take_along_axis(jnp.asarray(agent_predictions), safe, axis=-1)
  ranked_scores = jnp.take_along_axis(scores, safe, axis=-1)
  return preds, ranked_scores, order[..., :1] >= 0


def _prefix_vote(labels, weights):
  """Winning label of every prefix of ``labels`` (rank order).

  ``tally[..., k, i]`` is the total weight of the votes for ``labels[i]``
  among the first ``k + 1`` agents; the winner is the label of the first
  (highest-ranked) agent holding the largest tally, so ties in the vote go to
  the highest-ranked agent among the tied labels.
  """
  n = labels.shape[-1]
  same = labels[..., :, None] == labels[..., None, :]  # [..., i, i']
  tally = jnp.cumsum(jnp.where(same, weights[..., None, :], 0), axis=-1)
  tally = jnp.swapaxes(tally, -1, -2)  # [..., k, i]
  in_set = jnp.arange(n)[None, :] <= jnp.arange(n)[:, None]
  tally = jnp.where(in_set, tally, -1)
  winner = jnp.argmax(tally, axis=-1)
  return jnp.take_along_axis(labels, winner, axis=-1)


def set_predictions(
    agent_predictions: jax.typing.ArrayLike,
    rejector_scores: jax.typing.ArrayLike,
    *,
    rule: str,
) -> jax.Array:
  """The aggregated answer of the rejector set ``A_k(x)`` for every ``k``.

  Rules (agents ranked by rejector score, highest first; ``w_i`` is the
  softmax of the *selected* agents' scores, i.e. ``exp(r_i)`` normalised
  over ``A_k(x)`` only):

  * ``'majority_vote'`` (integer labels): the most frequent answer in
    ``A_k``; a tie goes to the answer of the highest-ranked agent among the
    tied answers.
  * ``'weighted_vote'`` (integer labels): the answer with the largest total
    weight ``Σ_{i ∈ A_k, m_i = y} w_i``; ties as for the majority vote. (The
    normalisation does not change the winner.)
  * ``'weighted_average'`` (regression): ``Σ_{i ∈ A_k} w_i m_i``.
  * ``'uniform_average'`` (regression): ``(1/k) Σ_{i ∈ A_k} m_i``.

  Args:
    agent_predictions: ``[..., A]`` answers of every agent (integer labels
      for votes, floating values for averages).
    rejector_scores: ``[..., A]`` floating rejector scores.
    rule: one of ``SET_RULES``.

  Returns:
    ``[..., A]`` aggregated answers for ``k = 1..A`` (index ``k - 1``):
    int32 labels for votes, floating values for averages. Rows with a NaN
    score (under jit) get -1 (votes) or NaN (averages); the weighted rules
    need finite scores (an infinite one makes the row's weights NaN under
    jit).

  Raises:
    TypeError: integer predictions for an average or floating ones for a
      vote; non-floating scores.
    ValueError: unknown ``rule``, shapes that differ, NaN in concrete
      scores, infinite concrete scores for the weighted rules.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> answers = jnp.array([3, 5, 5])
    >>> scores = jnp.array([2.0, 1.0, 0.0])
    >>> print(deferral.set_predictions(answers, scores, rule="majority_vote"))
    [3 3 5]
  """
  if rule not in SET_RULES:
    raise ValueError(f"`rule` must be one of {SET_RULES}, got {rule!r}.")
  _check_set_inputs(agent_predictions, rejector_scores)
  if rule.startswith("weighted"):
    _validation.check_finite(rejector_scores, "rejector_scores")
  vote = rule.endswith("vote")
  if vote:
    _validation.check_integer(agent_predictions, "agent_predictions")
  else:
    _validation.check_floating(agent_predictions, "agent_predictions")
  preds, scores, valid = _in_rank_order(agent_predictions, rejector_scores)
  n = preds.shape[-1]
  # Weights relative to the top score: w_1 = 1 and every w_i <= 1.
  weights = jnp.exp(scores - scores[..., :1])
  if rule == "majority_vote":
    out = _prefix_vote(preds, jnp.ones_like(weights))
  elif rule == "weighted_vote":
    out = _prefix_vote(preds, weights)
  elif rule == "weighted_average":
    out = jnp.cumsum(weights * preds, axis=-1) / jnp.cumsum(weights, axis=-1)
  else:
    out = jnp.cumsum(preds, axis=-1) / jnp.arange(1, n + 1, dtype=preds.dtype)
  if vote:
    return jnp.where(valid, out, -1).astype(jnp.int32)
  return jnp.where(valid, out, jnp.nan)


def _regression_loss(pred, target, loss):
  diff = pred - target
  return diff * diff if loss == "squared" else jnp.abs(diff)


def set_losses(
    agent_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    rejector_scores: jax.typing.ArrayLike,
    *,
    metric: str,
    loss: str = "squared",
) -> jax.Array:
  """The metric ``d(A_k(x), y)`` of the rejector set for every ``k``.

  Classification metrics (integer labels; 0-1 values):

  * ``'top_k'``: 1 unless some agent of ``A_k`` answers ``y``.
  * ``'majority_vote'``, ``'weighted_vote'``: 1 unless the vote of
    :func:`set_predictions` answers ``y``.

  Regression metrics (floating values; ``loss`` is the base loss
  ``'squared'`` or ``'absolute'``):

  * ``'best_agent'``: the lowest error among the agents of ``A_k``
    (prediction error only; consultation costs enter the cardinality loss
    through ``λ``).
  * ``'weighted_average'``, ``'uniform_average'``: the error of the
    aggregate of :func:`set_predictions`.

  Args:
    agent_predictions: ``[..., A]`` answers of every agent.
    targets: ``[...]`` true labels (classification) or values (regression).
    rejector_scores: ``[..., A]`` floating rejector scores.
    metric: one of ``SET_METRICS``.
    loss: base regression loss, one of ``REGRESSION_LOSSES`` (ignored for
      classification metrics).

  Returns:
    ``[..., A]`` floating losses for ``k = 1..A`` (index ``k - 1``), dtype of
    the scores (or of the regression values); NaN on rows with a NaN score
    (under jit).

  Raises:
    TypeError: predictions/targets of the wrong kind for the metric.
    ValueError: unknown ``metric`` or ``loss``, shapes that differ (naming
      ``agent_predictions`` or ``targets``), NaN in concrete scores or
      regression values.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> answers = jnp.array([3, 5, 7])
    >>> scores = jnp.array([2.0, 1.0, 0.0])
    >>> print(deferral.set_losses(answers, jnp.array(5), scores,
    ...                           metric="top_k"))
    [1. 0. 0.]
  """
  if metric not in SET_METRICS:
    raise ValueError(f"`metric` must be one of {SET_METRICS}, got "
                     f"{metric!r}.")
  if loss not in REGRESSION_LOSSES:
    raise ValueError(f"`loss` must be one of {REGRESSION_LOSSES}, got "
                     f"{loss!r}.")
  _check_set_inputs(agent_predictions, rejector_scores)
  if tuple(jnp.shape(targets)) != tuple(jnp.shape(rejector_scores)[:-1]):
    raise ValueError(
        f"`targets` must have the batch shape [...] of `agent_predictions` "
        f"[..., A], got shapes {tuple(jnp.shape(targets))} and "
        f"{tuple(jnp.shape(agent_predictions))}.")
  dtype = jnp.result_type(rejector_scores)
  if metric in _CLASSIFICATION:
    _validation.check_integer(agent_predictions, "agent_predictions")
    _validation.check_integer(targets, "targets")
    y = jnp.asarray(targets)[..., None]
    if metric == "top_k":
      preds, _, valid = _in_rank_order(agent_predictions, rejector_scores)
      hit = jax.lax.cummax((preds == y).astype(jnp.int32), axis=preds.ndim - 1)
      out = (1 - hit).astype(dtype)
    else:
      vote = set_predictions(agent_predictions, rejector_scores, rule=metric)
      valid = vote[..., :1] >= 0
      out = (vote != y).astype(dtype)
    return jnp.where(valid, out, jnp.nan)
  _validation.check_floating(agent_predictions, "agent_predictions")
  _validation.check_floating(targets, "targets")
  _validation.check_finite(agent_predictions, "agent_predictions")
  _validation.check_finite(targets, "targets")
  y = jnp.asarray(targets)[..., None]
  if metric == "best_agent":
    preds, _, valid = _in_rank_order(agent_predictions, rejector_scores)
    err = _regression_loss(preds, y, loss)
    out = jax.lax.cummin(err, axis=err.ndim - 1)
  else:
    agg = set_predictions(agent_predictions, rejector_scores, rule=metric)
    out = _regression_loss(agg, y, loss)
    valid = ~jnp.isnan(agg[..., :1])
  return jnp.where(valid, out, jnp.nan)


def _check_beta(beta: Any, num_agents: int) -> None:
  if jnp.ndim(beta) > 1 or (jnp.ndim(beta) == 1 and
                            jnp.shape(beta)[0] != num_agents):
    raise ValueError(f"`beta` must be a scalar or have shape [A]=({num_agents},"
                     f"), got shape {tuple(jnp.shape(beta))}.")
  if _validation.is_concrete(beta):
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)):
      raise ValueError("`beta` contains NaN or inf.")
    if b.size and b.min() < 0:
      raise ValueError(f"`beta` (consultation costs) must be >= 0, got "
                       f"{b.min():.6g}.")


def set_budgets(
    rejector_scores: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    *,
    count_model: bool = True,
) -> jax.Array:
  """Consultation cost ``Σ_{i≤k} β_{r(i)}`` of the rejector set, every ``k``.

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores.
    beta: ``[A]`` (or scalar) non-negative consultation costs per agent.
    count_model: whether the main model's ``β_0`` counts when agent 0 is in
      the set (default True: every consulted agent costs its ``β``); False
      treats the model as free.

  Returns:
    ``[..., A]`` budgets for ``k = 1..A`` (index ``k - 1``), NaN on rows
    with a NaN score (under jit).

  Raises:
    ValueError: ``beta`` of the wrong shape, negative, NaN or inf (concrete);
      NaN in concrete scores.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> scores = jnp.array([0.0, 2.0, 1.0])
    >>> print(deferral.set_budgets(scores, jnp.array([0.5, 0.25, 0.125])))
    [0.25  0.375 0.875]
  """
  num_agents = _ranking.check_scores(rejector_scores, "rejector_scores")
  _check_beta(beta, num_agents)
  scores = jnp.asarray(rejector_scores)
  beta = jnp.broadcast_to(jnp.asarray(beta, scores.dtype), (num_agents,))
  if not count_model:
    beta = beta.at[0].set(0)
  order = _ranking.ranked(scores, num_agents)
  costs = jnp.take_along_axis(
      jnp.broadcast_to(beta, scores.shape), jnp.maximum(order, 0), axis=-1)
  return jnp.where(order[..., :1] >= 0, jnp.cumsum(costs, axis=-1), jnp.nan)


def expected_budget(
    rejector_scores: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    *,
    k: int | jax.typing.ArrayLike,
    count_model: bool = True,
) -> jax.Array:
  """``E[Σ_{i≤k(x)} β_{r(i)}]``: the mean consultation cost of an allocation.

  Args:
    rejector_scores: ``[..., A]`` floating rejector scores.
    beta: ``[A]`` (or scalar) non-negative consultation costs.
    k: a static int (Top-k) or an ``[...]`` integer array of cardinalities
      ``k(x)`` (Top-k(x), e.g. from :func:`select_cardinality`).
    count_model: whether the main model's ``β_0`` counts (see
      :func:`set_budgets`).

  Returns:
    Scalar mean over every leading position; NaN if some ``k(x)`` is out of
    range or a score is NaN (possible only under jit).

  Raises:
    ValueError: ``k`` outside ``[1, A]``; as :func:`set_budgets`.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> scores = jnp.array([[0.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    >>> beta = jnp.array([0.0, 0.1, 0.2])
    >>> print(deferral.expected_budget(scores, beta, k=jnp.array([1, 3])))
    0.2
  """
  budgets = set_budgets(rejector_scores, beta, count_model=count_model)
  if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
    k = _ranking.check_k(k, budgets.shape[-1])
    return jnp.mean(budgets[..., k - 1])
  return jnp.mean(at_cardinality(budgets, k))


def expected_cardinality(k: jax.typing.ArrayLike) -> jax.Array:
  """``E[k(x)]``: the mean number of consulted agents.

  Args:
    k: ``[...]`` integer cardinalities (e.g. from :func:`select_cardinality`).

  Returns:
    Scalar float32 mean; NaN if some ``k`` is below 1 (the -1 of a row with
    no decision, possible only under jit).

  Raises:
    TypeError: non-integer ``k``.
    ValueError: concrete ``k`` below 1.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.expected_cardinality(jnp.array([1, 2, 2, 3])))
    2.0
  """
  _validation.check_integer(k, "k")
  if _validation.is_concrete(k):
    kk = np.asarray(k)
    if kk.size and kk.min() < 1:
      raise ValueError(f"`k` must be >= 1, got {kk.min()}.")
  k = jnp.asarray(k)
  return jnp.where(jnp.all(k >= 1), jnp.mean(k.astype(jnp.float32)), jnp.nan)
