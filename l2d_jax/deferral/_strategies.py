"""Who answers each point for each prefix set: the conformal deferral rules.

For LAC, APS and RAPS every prediction set is a prefix of the labels sorted by
decreasing model probability, so a point has at most ``K + 1`` distinct sets
over all miscoverage levels. The rules here decide, once per point and prefix
size ``s`` (0..K), who answers; a sweep over alphas then reads each alpha's
outcome with a gather (``l2d_jax.conformal.sweep_metrics``).

Conventions: size ``s = 1`` means the model answers; ``s = 0`` (an empty set)
uses each expert's whole confusion matrix, which equals the ``s = K`` prefix.
Decisions use the package's one encoding: 0 = the model, ``1 + id`` = the
expert with ``Annotations`` id ``id``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.deferral import _selection
from l2d_jax.deferral._argmax import MODEL
from l2d_jax.experts import _beta

STRATEGIES = ("segregativity", "naive_most_accurate", "naive_random",
              "segregativity_lcb")
NO_ANNOTATOR = -1  # agent recorded where no valid annotator can answer


class Outcomes(NamedTuple):
  """What a strategy does on each point for each prefix size.

  Attributes:
    correct: ``[n, K + 1]`` bool, whether the final answer is right (False
      where ``agent`` is -1).
    agent: ``[n, K + 1]`` int32 who answers: 0 = the model, ``1 + id`` = the
      expert with id ``id``, -1 = nobody (the point has no valid annotator;
      only possible under jit, see ``strategy_outcomes``).
  """

  correct: jax.Array
  agent: jax.Array


def posterior_lcb(
    correct: ArrayLike,
    total: ArrayLike,
    *,
    lcb_lambda: ArrayLike = 1.0,
    prior_a: ArrayLike = 1.0,
    prior_b: ArrayLike = 1.0,
) -> jax.Array:
  """Lower confidence bound ``mu - lcb_lambda * sigma`` of a Beta posterior.

  Bayesian segregativity: an annotator right on ``correct`` of ``total``
  assessment answers inside a prediction set (``conformal.prefix_counts``)
  gets the posterior ``Beta(prior_a + correct, prior_b + total - correct)``
  of its accuracy there (``l2d_jax.experts.beta_posterior``); ranking by its
  mean minus ``lcb_lambda`` standard deviations prefers one right on 30 of
  30 to one right on 3 of 3, which plain segregativity ties (both 1).
  ``lcb_lambda = 0`` ranks by the posterior mean. With no answer inside the
  set the prior alone decides.

  Args:
    correct: ``[...]`` correct answers (``0 <= correct <= total``).
    total: ``[...]`` answers.
    lcb_lambda: standard deviations subtracted, ``>= 0``.
    prior_a: Beta prior ``a0 > 0`` (default 1: uniform prior).
    prior_b: Beta prior ``b0 > 0``.

  Returns:
    ``[...]`` float scores (higher is better); NaN where the counts or prior
    are invalid (under jit, as ``beta_posterior``).

  Raises:
    ValueError: (concrete) a negative ``lcb_lambda`` or invalid counts/priors.

  Example:
    >>> import jax.numpy as jnp
    >>> s = posterior_lcb(jnp.array([3.0, 30.0]), jnp.array([3.0, 30.0]))
    >>> bool(s[1] > s[0])
    True
  """
  if _validation.is_concrete(lcb_lambda):
    lam = np.asarray(lcb_lambda, np.float64)
    if not np.all(np.isfinite(lam)) or lam.min(initial=0.0) < 0:
      raise ValueError(f"`lcb_lambda` must be finite and >= 0, got "
                       f"{lam.tolist()}.")
  post = _beta.beta_posterior(correct, total, prior_a=prior_a,
                              prior_b=prior_b)
  lam = jnp.asarray(lcb_lambda, post.mean.dtype)
  return post.mean - lam * jnp.sqrt(post.var)


def strategy_scores(
    seg_table: ArrayLike,
    strategy: str,
    *,
    lcb_table: ArrayLike | None = None,
) -> jax.Array:
  """Selection scores ``[n, K + 1, M]`` of each annotator under a strategy.

  Args:
    seg_table: ``[n, M, K + 1]`` prefix segregativities
      (``l2d_jax.conformal.prefix_segregativity``).
    strategy: ``'segregativity'`` scores by segregativity over each prefix
      set, ``'naive_most_accurate'`` by whole-matrix (leave-one-out) accuracy
      at every size, ``'naive_random'`` gives every annotator the same score
      (a random valid annotator is then drawn by the tie-break),
      ``'segregativity_lcb'`` by ``lcb_table`` (Bayesian segregativity).
    lcb_table: ``[n, M, K + 1]`` ``posterior_lcb`` of the prefix counts
      (``conformal.prefix_counts``), ``-inf`` where a slot is not valid;
      required by ``'segregativity_lcb'`` only.

  Returns:
    ``[n, K + 1, M]`` scores (higher is better).

  Raises:
    ValueError: unknown ``strategy``, a table that is not 3-D, or a missing
      ``lcb_table``.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"`strategy` must be one of {STRATEGIES}, got "
                     f"{strategy!r}.")
  _validation.check_ndim(seg_table, 3, "seg_table", "[n, M, K + 1]")
  seg = jnp.swapaxes(jnp.asarray(seg_table), 1, 2)  # [n, S, M]
  if strategy == "segregativity_lcb":
    if lcb_table is None:
      raise ValueError("`lcb_table` [n, M, K + 1] is required with "
                       "strategy 'segregativity_lcb'.")
    if np.shape(lcb_table) != np.shape(seg_table):
      raise ValueError(f"`lcb_table` must have the shape "
                       f"{tuple(np.shape(seg_table))} of `seg_table`, got "
                       f"{tuple(np.shape(lcb_table))}.")
    return jnp.swapaxes(jnp.asarray(lcb_table), 1, 2)
  if strategy == "segregativity":
    return seg
  if strategy == "naive_most_accurate":
    return jnp.broadcast_to(seg[:, :1, :], seg.shape)
  return jnp.zeros(seg.shape, seg.dtype)


def _expert_correct(annotations, labels) -> jax.Array:
  return annotations.answer == jnp.asarray(labels)[:, None]


def outcomes_from_slots(
    slot: ArrayLike,
    model_correct: ArrayLike,
    annotations,
    labels: ArrayLike,
) -> Outcomes:
  """Outcomes when annotation slot ``slot[i, s]`` answers point i at size s.

  Size 1 is always the model's answer, whatever ``slot`` says.

  Args:
    slot: ``[n, K + 1]`` int slots in ``[0, M)``, or -1 for "nobody"
      (``select_expert``'s answer when no candidate is valid).
    model_correct: ``[n]`` bool, whether the model's top-1 label is right.
    annotations: ``l2d_jax.experts.Annotations`` of the n points.
    labels: ``[n]`` true labels.

  Returns:
    ``Outcomes``; ``agent`` -1 and ``correct`` False where ``slot`` is -1 at a
    size other than 1.
  """
  slot = jnp.asarray(slot)
  num_s = slot.shape[1]
  nobody = slot < 0
  safe = jnp.where(nobody, 0, slot)
  e_correct = jnp.take_along_axis(_expert_correct(annotations, labels), safe,
                                  axis=1)
  e_agent = jnp.take_along_axis(annotations.annotator, safe, axis=1) + 1
  e_correct = jnp.where(nobody, False, e_correct)
  e_agent = jnp.where(nobody, NO_ANNOTATOR, e_agent)
  model_answers = (jnp.arange(num_s) == 1)[None, :]
  correct = jnp.where(model_answers,
                      jnp.asarray(model_correct, bool)[:, None], e_correct)
  agent = jnp.where(model_answers, MODEL, e_agent).astype(jnp.int32)
  return Outcomes(correct=correct, agent=agent)


def strategy_outcomes(
    seg_table: ArrayLike,
    model_correct: ArrayLike,
    annotations,
    labels: ArrayLike,
    *,
    strategy: str,
    key: jax.Array,
    tie_break: str = "random",
    costs: ArrayLike | None = None,
    lcb_table: ArrayLike | None = None,
) -> Outcomes:
  """Outcome of a deferral strategy for every point and prefix size.

  ``|set| = 1`` lets the model answer. Otherwise ``'segregativity'`` consults
  the valid annotator (``annotations.mask``) with the highest segregativity
  over the set, ``'segregativity_lcb'`` the one with the highest
  ``lcb_table`` value over the set, ``'naive_most_accurate'`` the one with the highest overall
  (leave-one-out) accuracy, and ``'naive_random'`` a uniformly random
  annotator of the point. Random tie-breaks draw one priority per (point,
  annotator), shared by all set sizes.

  A point without any valid annotator cannot be deferred: concrete input
  raises, and under jit its outcome at every size but 1 is visibly invalid
  (``agent`` -1, ``correct`` False), never another annotator's answer.

  Args:
    seg_table: ``[n, M, K + 1]`` from ``conformal.prefix_segregativity``.
    model_correct: ``[n]`` bool, whether the model's top-1 label is right.
    annotations: ``l2d_jax.experts.Annotations`` of the n points (M slots).
    labels: ``[n]`` true labels.
    strategy: one of ``STRATEGIES``.
    key: PRNG key for random tie-breaks / random choice.
    tie_break: ``'random'`` or ``'cost'`` (cheapest tied annotator, then
      random); ``'naive_random'`` ignores costs.
    costs: ``[J]`` expert costs for ``tie_break='cost'``.
    lcb_table: ``[n, M, K + 1]`` Bayesian segregativity (``posterior_lcb``
      of ``conformal.prefix_counts``), for ``'segregativity_lcb'``.

  Returns:
    ``Outcomes`` with ``[n, K + 1]`` arrays.

  Raises:
    ValueError: unknown ``strategy``/``tie_break``, missing ``costs``,
      mismatched shapes, or (concrete input) a point without a valid
      annotator.
  """
  scores = strategy_scores(seg_table, strategy, lcb_table=lcb_table)
  annotator = annotations.annotator
  valid = annotations.mask
  n, _, num_m = scores.shape
  if annotator.shape != (n, num_m):
    raise ValueError(f"`annotations` must hold [n, M]=[{n}, {num_m}] slots "
                     f"like `seg_table`, got {annotator.shape}.")
  _validation.check_ndim(labels, 1, "labels", "[n]")
  _validation.check_same_leading(labels, annotator, "labels", "annotations")
  if tie_break not in _selection.TIE_BREAKS:
    raise ValueError(f"`tie_break` must be one of {_selection.TIE_BREAKS}, "
                     f"got {tie_break!r}.")
  if tie_break == "cost" and costs is None:
    raise ValueError("`costs` is required when `tie_break='cost'`.")
  if _validation.is_concrete(valid):
    empty = ~np.asarray(valid).any(axis=1)
    if empty.any():
      raise ValueError(
          f"{int(empty.sum())} points have no valid annotator (first: point "
          f"{int(np.argmax(empty))}); every point needs one to be deferred.")
  # Equal costs make the cost tie-break a random one (the key draws).
  if tie_break == "cost" and strategy != "naive_random":
    slot_costs = jnp.asarray(costs)[annotator]
  else:
    slot_costs = jnp.zeros(annotator.shape)
  priority = jax.random.uniform(key, annotator.shape)[:, None, :]
  slot = _selection.select_expert(
      scores, jnp.broadcast_to(valid[:, None, :], scores.shape),
      tie_break="cost", costs=slot_costs[:, None, :], priority=priority)
  return outcomes_from_slots(slot, model_correct, annotations, labels)
