"""Training-free conformal deferral to human experts by segregativity.

For LAC, APS (u = 1) and RAPS every prediction set is a prefix of the labels
sorted by decreasing model probability, so a point has at most ``K + 1``
distinct sets over all miscoverage levels. The sweep therefore decides, once
per point and prefix size ``s`` (0..K), which expert each strategy consults,
and then reads every alpha's outcome with a gather. This turns an
``alphas x points x experts x K^2`` loop into one ``points x experts x K^2``
pass plus ``alphas x points`` lookups.

Conventions: size ``s = 1`` means the model answers; ``s = 0`` (an empty set)
uses each expert's whole confusion matrix, which equals the ``s = K`` prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from l2d_jax.experts import _selection

STRATEGIES = ("segregativity", "naive_most_accurate", "naive_random")
MODEL = -1  # expert id recorded when the model answers


def _prefix_one(order, ry, answer, perm_conf, exclude, valid, undefined_value):
  """Prefix segregativities ``[K + 1]`` of one (point, annotator) pair."""
  del order
  num_k = perm_conf.shape[-1]
  sizes = jnp.arange(1, num_k + 1)
  num = jnp.cumsum(jnp.diagonal(perm_conf))
  q = jnp.cumsum(jnp.cumsum(perm_conf, axis=0), axis=1)
  den = jnp.diagonal(q)
  rm = answer
  ex = exclude.astype(num.dtype)
  num = num - ex * ((ry == rm) & (ry < sizes))
  den = den - ex * (jnp.maximum(ry, rm) < sizes)
  num = jnp.concatenate([num[-1:], num])
  den = jnp.concatenate([den[-1:], den])
  seg = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), undefined_value)
  return jnp.where(valid, seg, -jnp.inf)


def prefix_segregativity(
    order: ArrayLike,
    labels: ArrayLike,
    annotator: ArrayLike,
    answer: ArrayLike,
    valid: ArrayLike,
    confusion: ArrayLike,
    *,
    exclude_own: ArrayLike | None = None,
    undefined_value: float = -1.0,
    batch_size: int = 256,
) -> jax.Array:
  """Segregativity of every annotator of every point for every prefix set.

  Args:
    order: ``[n, K]`` labels by decreasing model probability (``sort_probs``).
    labels: ``[n]`` true labels (used only for the leave-one-out correction).
    annotator: ``[n, M]`` expert ids of each point's annotators.
    answer: ``[n, M]`` their answers.
    valid: ``[n, M]`` bool, which annotators can be consulted on the point.
    confusion: ``[J, K, K]`` assessment counts (rows truth, columns answer).
    exclude_own: ``[n, M]`` bool; where True the annotator's own answer on the
      point is removed from its matrix (the paper's "perfect knowledge":
      leave-one-out). Defaults to ``valid``; pass False where the assessment
      data does not contain the point.
    undefined_value: segregativity of an expert with no assessment pair in
      the set (ranked below every defined value by default).
    batch_size: points per step of ``lax.map`` (bounds memory to
      ``batch_size * M * K^2``).

  Returns:
    ``[n, M, K + 1]`` float: entry ``s`` is the segregativity over the top-``s``
    labels (entry 0, the empty set, uses the whole matrix); ``-inf`` where the
    annotator is not valid.
  """
  order = jnp.asarray(order)
  labels = jnp.asarray(labels)
  annotator = jnp.asarray(annotator)
  answer = jnp.asarray(answer)
  valid = jnp.asarray(valid, bool)
  confusion = jnp.asarray(confusion)
  exclude = valid if exclude_own is None else jnp.asarray(exclude_own, bool)
  n, num_k = order.shape
  if labels.shape != (n,):
    raise ValueError(f"`labels` must have shape [n]=[{n}], got {labels.shape}.")
  for name, arr in (("annotator", annotator), ("answer", answer),
                    ("valid", valid), ("exclude_own", exclude)):
    if arr.ndim != 2 or arr.shape[0] != n:
      raise ValueError(f"`{name}` must have shape [n, M] with n={n}, got "
                       f"{arr.shape}.")
  if confusion.ndim != 3 or confusion.shape[1:] != (num_k, num_k):
    raise ValueError(f"`confusion` must have shape [J, {num_k}, {num_k}], got "
                     f"{confusion.shape}.")
  inv = jnp.argsort(order, axis=-1)  # rank of each label

  def per_point(args):
    o, iv, y, ann, ans, val, exc = args
    ry = iv[y]
    rm = iv[ans]
    perm = confusion[ann][:, o[:, None], o[None, :]]
    return jax.vmap(_prefix_one, in_axes=(None, None, 0, 0, 0, 0, None))(
        o, ry, rm, perm, exc, val, undefined_value)

  return jax.lax.map(per_point, (order, inv, labels, annotator, answer, valid,
                                 exclude), batch_size=batch_size)


class Outcomes(NamedTuple):
  """What a strategy does on each point for each prefix size.

  Attributes:
    correct: ``[n, K + 1]`` bool, whether the final answer is right.
    expert: ``[n, K + 1]`` int32 expert id consulted, or -1 for the model.
  """

  correct: jax.Array
  expert: jax.Array


def strategy_scores(seg_table: ArrayLike, strategy: str) -> jax.Array:
  """Selection scores ``[n, K + 1, M]`` of each annotator under a strategy.

  ``'segregativity'`` scores by segregativity over each prefix set,
  ``'naive_most_accurate'`` by whole-matrix (leave-one-out) accuracy at every
  size, ``'naive_random'`` gives every annotator the same score (a random
  valid annotator is then drawn by the tie-break).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"`strategy` must be one of {STRATEGIES}, got "
                     f"{strategy!r}.")
  seg = jnp.swapaxes(jnp.asarray(seg_table), 1, 2)  # [n, S, M]
  if strategy == "segregativity":
    return seg
  if strategy == "naive_most_accurate":
    return jnp.broadcast_to(seg[:, -1:, :], seg.shape)
  return jnp.zeros(seg.shape, seg.dtype)


def outcomes_from_slots(
    slot: ArrayLike,
    model_correct: ArrayLike,
    annotator: ArrayLike,
    expert_correct: ArrayLike,
) -> "Outcomes":
  """Outcomes when annotator ``slot[i, s]`` answers point i at set size s.

  Size 1 is always the model's answer, whatever ``slot`` says.
  """
  slot = jnp.asarray(slot)
  annotator = jnp.asarray(annotator)
  num_s = slot.shape[1]
  e_correct = jnp.take_along_axis(jnp.asarray(expert_correct, bool), slot,
                                  axis=1)
  e_id = jnp.take_along_axis(annotator, slot, axis=1)
  model_answers = (jnp.arange(num_s) == 1)[None, :]
  correct = jnp.where(model_answers, jnp.asarray(model_correct, bool)[:, None],
                      e_correct)
  expert = jnp.where(model_answers, MODEL, e_id).astype(jnp.int32)
  return Outcomes(correct=correct, expert=expert)


def strategy_outcomes(
    seg_table: ArrayLike,
    model_correct: ArrayLike,
    annotator: ArrayLike,
    expert_correct: ArrayLike,
    valid: ArrayLike,
    *,
    strategy: str,
    key: jax.Array,
    tie_break: str = "random",
    costs: ArrayLike | None = None,
) -> "Outcomes":
  """Outcome of a deferral strategy for every point and prefix size.

  ``|set| = 1`` lets the model answer. Otherwise ``'segregativity'`` consults
  the annotator with the highest segregativity over the set,
  ``'naive_most_accurate'`` the one with the highest overall (leave-one-out)
  accuracy, and ``'naive_random'`` a uniformly random annotator of the point.

  Args:
    seg_table: ``[n, M, K + 1]`` from ``prefix_segregativity``.
    model_correct: ``[n]`` bool, whether the model's top-1 label is right.
    annotator: ``[n, M]`` expert ids.
    expert_correct: ``[n, M]`` bool, whether each annotator's answer is right.
    valid: ``[n, M]`` bool; every point needs at least one valid annotator.
    strategy: one of ``STRATEGIES``.
    key: PRNG key for random tie-breaks / random choice.
    tie_break: ``'random'`` or ``'cost'`` (cheapest tied annotator, then
      random); ``'naive_random'`` ignores costs.
    costs: ``[J]`` expert costs for ``tie_break='cost'``.

  Returns:
    ``Outcomes`` with ``[n, K + 1]`` arrays.
  """
  scores = strategy_scores(seg_table, strategy)
  annotator = jnp.asarray(annotator)
  valid = jnp.asarray(valid, bool)
  if tie_break not in _selection.TIE_BREAKS:
    raise ValueError(f"`tie_break` must be one of {_selection.TIE_BREAKS}, "
                     f"got {tie_break!r}.")
  if tie_break == "cost" and costs is None:
    raise ValueError("`costs` is required when `tie_break='cost'`.")
  # Equal costs make the cost tie-break a random one (the key draws).
  if tie_break == "cost" and strategy != "naive_random":
    slot_costs = jnp.asarray(costs)[annotator]
  else:
    slot_costs = jnp.zeros(annotator.shape)
  # One random priority per (point, annotator), shared by all set sizes.
  priority = jax.random.uniform(key, annotator.shape)[:, None, :]
  slot = _selection.select_expert(
      scores, jnp.broadcast_to(valid[:, None, :], scores.shape),
      tie_break="cost", costs=slot_costs[:, None, :], priority=priority)
  return outcomes_from_slots(slot, model_correct, annotator, expert_correct)


class SweepMetrics(NamedTuple):
  """Accuracy and workload for each alpha (each field ``[A]``)."""

  accuracy: jax.Array
  queries: jax.Array
  max_queries_per_expert: jax.Array
  avg_queries_per_queried_expert: jax.Array


def sweep_metrics(
    sizes: ArrayLike, outcomes: Outcomes, *, num_experts: int
) -> SweepMetrics:
  """Reads every alpha's accuracy and expert workload from the outcomes.

  Args:
    sizes: ``[n, A]`` set size of each point at each alpha.
    outcomes: ``Outcomes`` of one strategy (``[n, K + 1]``).
    num_experts: J, for the per-expert query histogram.

  Returns:
    ``SweepMetrics``; ``avg_queries_per_queried_expert`` is 0 where no expert
    is queried.
  """
  sizes = jnp.asarray(sizes)
  n, num_a = sizes.shape
  correct = jnp.take_along_axis(outcomes.correct, sizes, axis=1)  # [n, A]
  expert = jnp.take_along_axis(outcomes.expert, sizes, axis=1)
  deferred = expert != MODEL
  accuracy = correct.mean(axis=0)
  queries = deferred.sum(axis=0)
  flat = (jnp.arange(num_a)[None, :] * num_experts
          + jnp.where(deferred, expert, 0)).ravel()
  hist = jnp.zeros(num_a * num_experts, jnp.int32).at[flat].add(
      deferred.ravel().astype(jnp.int32)).reshape(num_a, num_experts)
  max_q = hist.max(axis=1)
  n_queried = (hist > 0).sum(axis=1)
  avg_q = jnp.where(n_queried > 0, queries / jnp.maximum(n_queried, 1), 0.0)
  del n
  return SweepMetrics(accuracy=accuracy, queries=queries,
                      max_queries_per_expert=max_q,
                      avg_queries_per_queried_expert=avg_q)


def workload(expert: ArrayLike, *, num_experts: int) -> tuple[
    jax.Array, jax.Array, jax.Array]:
  """Workload of one assignment ``[n]`` of points to experts (-1 = model).

  Returns:
    ``(queries, max_queries_per_expert, avg_queries_per_queried_expert)``.
  """
  expert = jnp.asarray(expert)
  deferred = expert != MODEL
  hist = jnp.zeros(num_experts, jnp.int32).at[jnp.where(deferred, expert, 0)
                                              ].add(deferred.astype(jnp.int32))
  queries = deferred.sum()
  n_queried = (hist > 0).sum()
  avg = jnp.where(n_queried > 0, queries / jnp.maximum(n_queried, 1), 0.0)
  return queries, hist.max(), avg
