"""Segregativity over every prefix set, and reading a sweep's alphas.

For LAC, APS (u = 1) and RAPS every prediction set is a prefix of the labels
sorted by decreasing model probability, so a point has at most ``K + 1``
distinct sets over all miscoverage levels. ``prefix_segregativity`` scores
every annotator of every point on each of these prefixes once; the decision
rules of ``l2d_jax.deferral`` pick who answers per prefix size, and
``sweep_metrics`` reads every alpha's outcome with a gather. This turns an
``alphas x points x experts x K^2`` loop into one ``points x experts x K^2``
pass plus ``alphas x points`` lookups.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation


def _prefix_counts_batch(order, labels, annotator, answer, exclude, conf_flat,
                         diag_flat):
  """Prefix counts ``(correct, total, ok)`` of a batch of b points.

  ``correct``/``total`` are ``[b, M, K + 1]``: the annotator's correct and
  total assessment pairs inside the top-s prefix (entry 0, the empty set,
  uses the whole matrix), with its own answer removed where ``exclude``;
  ``ok`` ``[b, M]`` says whether the slot's expert id, answer and the point's
  label are in range.

  An assessment pair (y, m) lies inside the top-s prefix iff both ranks are
  below s, i.e. ``max(rank y, rank m) < s``: the prefix sums of every
  annotator's matrix are one small matmul per point against that indicator,
  with no permuted ``[M, K, K]`` copy of the matrices.
  """
  b, num_k = order.shape
  num_j = conf_flat.shape[0]
  dtype = conf_flat.dtype
  rank = jnp.argsort(order, axis=-1)  # [b, K] rank of each label
  sizes = jnp.arange(1, num_k + 1)
  pair_rank = jnp.maximum(rank[:, :, None], rank[:, None, :]).reshape(
      b, num_k * num_k)
  inside = (pair_rank[:, :, None] < sizes).astype(dtype)  # [b, K^2, K]
  diag_inside = (rank[:, :, None] < sizes).astype(dtype)  # [b, K, K]
  ok = ((annotator >= 0) & (annotator < num_j) & (answer >= 0)
        & (answer < num_k) & ((labels >= 0) & (labels < num_k))[:, None])
  ann = jnp.where(ok, annotator, 0)
  den = jnp.einsum("bmq,bqs->bms", conf_flat[ann], inside)
  num = jnp.einsum("bmy,bys->bms", diag_flat[ann], diag_inside)
  # Leave-one-out: remove the annotator's own answer on the point.
  ry = jnp.take_along_axis(rank, jnp.clip(labels, 0, num_k - 1)[:, None],
                           axis=1)  # [b, 1]
  rm = jnp.take_along_axis(rank, jnp.clip(answer, 0, num_k - 1), axis=1)
  ex = exclude.astype(dtype)[:, :, None]
  num = num - ex * ((ry == rm)[:, :, None] & (ry[:, :, None] < sizes))
  den = den - ex * (jnp.maximum(ry, rm)[:, :, None] < sizes)
  num = jnp.concatenate([num[..., -1:], num], axis=-1)
  den = jnp.concatenate([den[..., -1:], den], axis=-1)
  return num, den, ok


def segregativity_from_counts(correct, total, valid, ok, undefined_value=-1.0):
  """Segregativity ``correct / total`` with the masks of ``prefix_segregativity``.

  ``-inf`` where the slot is not ``valid``, NaN where it is valid but not
  ``ok`` (out-of-range id, answer or label), ``undefined_value`` where
  ``total`` is 0. Shapes: counts ``[..., M, S]``, masks ``[..., M]``.
  """
  seg = jnp.where(total > 0, correct / jnp.where(total > 0, total, 1),
                  undefined_value)
  seg = jnp.where(valid[..., None], seg, -jnp.inf)
  return jnp.where((valid & ~ok)[..., None], jnp.nan, seg)


def _batched_prefix_counts(order, labels, annotations, confusion, exclude,
                           batch_size):
  """``_prefix_counts_batch`` over all n points in ``lax.map`` batches."""
  n, num_k = order.shape
  num_j = confusion.shape[0]
  dtype = jnp.result_type(float)
  conf_flat = confusion.astype(dtype).reshape(num_j, num_k * num_k)
  diag_flat = jnp.diagonal(confusion, axis1=1, axis2=2).astype(dtype)
  batch_size = max(1, min(int(batch_size), n))
  pad = (-n) % batch_size
  args = (order, labels, annotations.annotator, annotations.answer, exclude)
  args = tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in args)
  args = tuple(a.reshape((-1, batch_size) + a.shape[1:]) for a in args)
  out = jax.lax.map(
      lambda xs: _prefix_counts_batch(*xs, conf_flat, diag_flat), args)
  return tuple(x.reshape((-1,) + x.shape[2:])[:n] for x in out)


def _check_prefix_args(order, labels, annotations, confusion, exclude_own):
  """Shared checks of ``prefix_segregativity`` and ``prefix_counts``."""
  order = jnp.asarray(order)
  labels = jnp.asarray(labels)
  annotator = annotations.annotator
  answer = annotations.answer
  valid = jnp.asarray(annotations.mask, bool)
  exclude = valid if exclude_own is None else jnp.asarray(exclude_own, bool)
  _validation.check_ndim(order, 2, "order", "[n, K]")
  n, num_k = order.shape
  if labels.shape != (n,):
    raise ValueError(f"`labels` must have shape [n]=[{n}], got {labels.shape}.")
  if annotator.ndim != 2 or annotator.shape[0] != n:
    raise ValueError(f"`annotations` must hold [n, M] arrays with n={n}, got "
                     f"{annotator.shape}.")
  if exclude.shape != annotator.shape:
    raise ValueError(f"`exclude_own` must have shape [n, M]={annotator.shape}, "
                     f"got {exclude.shape}.")
  confusion = jnp.asarray(confusion)
  if confusion.ndim != 3 or confusion.shape[1:] != (num_k, num_k):
    raise ValueError(f"`confusion` must have shape [J, {num_k}, {num_k}], got "
                     f"{confusion.shape}.")
  num_j = confusion.shape[0]
  _validation.check_labels(labels, num_k, "labels")
  _validation.check_index_range(annotator, num_j, "annotations.annotator",
                                where=valid)
  _validation.check_index_range(answer, num_k, "annotations.answer",
                                where=valid)
  if _validation.is_concrete(confusion):
    c = np.asarray(confusion)
    if np.isnan(c).any() or (c < 0).any():
      raise ValueError("`confusion` must hold counts >= 0.")
  return order, labels, valid, exclude, confusion


def prefix_segregativity(
    order: ArrayLike,
    labels: ArrayLike,
    annotations,
    confusion: ArrayLike,
    *,
    exclude_own: ArrayLike | None = None,
    undefined_value: float = -1.0,
    batch_size: int = 256,
) -> jax.Array:
  """Segregativity of every annotator of every point for every prefix set.

  Under jit, a real annotation whose expert id, answer or point label is out
  of range gets NaN (never another expert's value); concrete input raises.

  Args:
    order: ``[n, K]`` labels by decreasing model probability (``sort_probs``).
    labels: ``[n]`` true labels (used only for the leave-one-out correction).
    annotations: ``l2d_jax.experts.Annotations`` of the n points (M slots);
      ``annotations.mask`` says which annotators can be consulted.
    confusion: ``[J, K, K]`` assessment counts (rows truth, columns answer).
    exclude_own: ``[n, M]`` bool; where True the annotator's own answer on the
      point is removed from its matrix (the paper's "perfect knowledge":
      leave-one-out). Defaults to ``annotations.mask``; pass False where the
      assessment data does not contain the point.
    undefined_value: segregativity of an expert with no assessment pair in
      the set (ranked below every defined value by default).
    batch_size: points per step of ``lax.map`` (bounds memory to
      ``batch_size * M * K^2``).

  Returns:
    ``[n, M, K + 1]`` float: entry ``s`` is the segregativity over the top-``s``
    labels (entry 0, the empty set, uses the whole matrix); ``-inf`` where the
    annotator is not valid.

  Raises:
    ValueError: mismatched shapes; (concrete input) labels, expert ids or
      answers out of range, or negative / NaN counts.

  Example:
    >>> import numpy as np
    >>> from l2d_jax import conformal, experts
    >>> ann = experts.Annotations.from_long(
    ...     np.array([0, 0]), np.array([0, 1]), np.array([1, 0]), num_images=1,
    ...     num_experts=2, num_classes=2)
    >>> confusion = np.array([[[5, 5], [0, 10]], [[9, 1], [9, 1]]])
    >>> seg = conformal.prefix_segregativity(
    ...     np.array([[1, 0]]), np.array([0]), ann, confusion)
    >>> print(np.asarray(seg[0], np.float64).round(3))  # sizes 0, 1, 2
    [[0.789 1.    0.789]
     [0.474 1.    0.474]]
  """
  order, labels, valid, exclude, confusion = _check_prefix_args(
      order, labels, annotations, confusion, exclude_own)
  num, den, ok = _batched_prefix_counts(order, labels, annotations, confusion,
                                        exclude, batch_size)
  return segregativity_from_counts(num, den, valid, ok, undefined_value)


def prefix_counts(
    order: ArrayLike,
    labels: ArrayLike,
    annotations,
    confusion: ArrayLike,
    *,
    exclude_own: ArrayLike | None = None,
    batch_size: int = 256,
) -> tuple[jax.Array, jax.Array]:
  """Correct and total assessment answers of every annotator in every prefix set.

  The counts behind ``prefix_segregativity`` (segregativity is
  ``correct / total``): for annotator slot m of point i and prefix size s,
  the number of the expert's assessment pairs (true label, answer) with both
  labels among the point's top-s labels (``total``) and those on the
  diagonal (``correct``), with the annotator's own answer on the point left
  out where ``exclude_own``. Entry ``s = 0`` (the empty set) counts the whole
  matrix. Feed them to ``l2d_jax.experts.beta_posterior`` for a Bayesian
  score (``l2d_jax.deferral.posterior_lcb``).

  Args:
    order: ``[n, K]`` labels by decreasing model probability (``sort_probs``).
    labels: ``[n]`` true labels (used only for the leave-one-out correction).
    annotations: ``l2d_jax.experts.Annotations`` of the n points (M slots).
    confusion: ``[J, K, K]`` assessment counts (rows truth, columns answer).
    exclude_own: ``[n, M]`` bool, as in ``prefix_segregativity`` (default
      ``annotations.mask``).
    batch_size: points per step of ``lax.map``.

  Returns:
    ``(correct, total)``, both ``[n, M, K + 1]`` float. Slots that are not
    valid (``annotations.mask`` False) hold 0; under jit, a valid slot whose
    expert id, answer or point label is out of range holds NaN.

  Raises:
    ValueError: as ``prefix_segregativity``.

  Example:
    >>> import numpy as np
    >>> from l2d_jax import conformal, experts
    >>> ann = experts.Annotations.from_long(
    ...     np.array([0]), np.array([0]), np.array([1]), num_images=1,
    ...     num_experts=1, num_classes=2)
    >>> confusion = np.array([[[5, 5], [0, 10]]])
    >>> correct, total = conformal.prefix_counts(
    ...     np.array([[1, 0]]), np.array([0]), ann, confusion)
    >>> print(np.asarray(correct[0, 0]), np.asarray(total[0, 0]))  # sizes 0-2
    [15. 10. 15.] [19. 10. 19.]
  """
  order, labels, valid, exclude, confusion = _check_prefix_args(
      order, labels, annotations, confusion, exclude_own)
  num, den, ok = _batched_prefix_counts(order, labels, annotations, confusion,
                                        exclude, batch_size)
  keep = lambda x: jnp.where((valid & ~ok)[..., None], jnp.nan,
                             jnp.where(valid[..., None], x, 0.0))
  return keep(num), keep(den)


class SweepMetrics(NamedTuple):
  """Accuracy and workload for each alpha (each field ``[..., A]``)."""

  accuracy: jax.Array
  queries: jax.Array
  max_queries_per_expert: jax.Array
  avg_queries_per_queried_expert: jax.Array


def _workload_per_alpha(agent, num_experts):
  """Workload ``([A], [A], [A])`` of decisions ``[n, A]`` (0 = model)."""
  num_a = agent.shape[1]
  deferred = (agent >= 1) & (agent <= num_experts)
  flat = (jnp.arange(num_a)[None, :] * num_experts
          + jnp.where(deferred, agent - 1, 0)).ravel()
  hist = jnp.zeros(num_a * num_experts, jnp.int32).at[flat].add(
      deferred.ravel().astype(jnp.int32)).reshape(num_a, num_experts)
  queries = hist.sum(axis=1)
  n_queried = (hist > 0).sum(axis=1)
  avg = jnp.where(n_queried > 0, queries / jnp.maximum(n_queried, 1), 0.0)
  return queries, hist.max(axis=1), avg.astype(jnp.result_type(float))


def sweep_metrics(
    sizes: ArrayLike, outcomes, *, num_experts: int
) -> SweepMetrics:
  """Reads every alpha's accuracy and expert workload from the outcomes.

  Args:
    sizes: ``[n, A]`` set size in ``[0, K]`` of each point at each alpha.
    outcomes: ``l2d_jax.deferral.Outcomes`` of one strategy (``[n, K + 1]``).
    num_experts: J, for the per-expert query histogram (Python or NumPy int).

  Returns:
    ``SweepMetrics`` with ``[A]`` fields; ``avg_queries_per_queried_expert``
    is 0 where no expert is queried. An outcome with agent -1 (no valid
    annotator) counts as wrong and as no query.
  """
  num_experts = _validation.check_static_int(num_experts, "num_experts",
                                             minimum=1)
  sizes = jnp.asarray(sizes)
  _validation.check_ndim(sizes, 2, "sizes", "[n, A]")
  correct = jnp.take_along_axis(outcomes.correct, sizes, axis=1)  # [n, A]
  agent = jnp.take_along_axis(outcomes.agent, sizes, axis=1)
  queries, max_q, avg_q = _workload_per_alpha(agent, num_experts)
  return SweepMetrics(accuracy=correct.mean(axis=0), queries=queries,
                      max_queries_per_expert=max_q,
                      avg_queries_per_queried_expert=avg_q)
