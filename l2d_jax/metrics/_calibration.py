"""Calibration metrics: expected calibration error and reliability diagrams.

Bins are equal-width on [0, 1] and right-closed, ``(lo, hi]``, with a
confidence of exactly 0 in the first bin (Guo et al. 2017). ``num_bins`` is
static: jit with ``static_argnames="num_bins"``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from l2d_jax import _validation


class ReliabilityDiagram(NamedTuple):
  """Per-bin statistics of a reliability diagram (a pytree).

  Attributes:
    edges: ``[num_bins + 1]`` bin edges ``0, 1/M, ..., 1``.
    confidence: ``[num_bins]`` mean confidence in each bin (0 where empty).
    accuracy: ``[num_bins]`` share of correct examples in each bin (0 where
      empty).
    counts: ``[num_bins]`` int32 number of (unmasked) examples in each bin.
  """

  edges: jax.Array
  confidence: jax.Array
  accuracy: jax.Array
  counts: jax.Array


def _check_inputs(confidences: Any, correct: Any, num_bins: Any,
                  where: Any) -> int:
  """Checks the arguments; returns ``num_bins`` as a Python int."""
  num_bins = _validation.check_static_int(num_bins, "num_bins", minimum=1)
  _validation.check_ndim(confidences, 1, "confidences", "[N]")
  _validation.check_floating(confidences, "confidences")
  n = jnp.shape(confidences)[0]
  if jnp.shape(correct) != (n,):
    raise ValueError(f"`correct` must have shape [N]=({n},) like "
                     f"`confidences`, got {tuple(jnp.shape(correct))}.")
  _validation.check_mask(where, n)
  _validation.check_unit_interval(confidences, "confidences", where=where)
  _validation.check_unit_interval(correct, "correct", where=where)
  return num_bins


# Jitted so that eager calls compile once per shape, not once per primitive.
@functools.partial(jax.jit, static_argnums=2)
def _bin_sums(confidences, correct, num_bins, where):
  """Per-bin weighted counts, confidence sums and correct sums."""
  conf = jnp.asarray(confidences)
  dtype = conf.dtype
  correct = jnp.asarray(correct).astype(dtype)
  if where is None:
    weight = jnp.ones_like(conf)
  else:
    weight = jnp.asarray(where).astype(dtype)
    # Masked entries may hold padding (NaN); zero them before any arithmetic.
    conf = jnp.where(where, conf, 0)
    correct = jnp.where(where, correct, 0)
  edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=dtype)
  # Right-closed bins: edges[b] < c <= edges[b + 1]; out-of-range values
  # (possible only under jit) fall into the first or last bin.
  index = jnp.clip(jnp.searchsorted(edges, conf, side="left") - 1, 0,
                   num_bins - 1)
  def seg(x):
    return jax.ops.segment_sum(x, index, num_segments=num_bins)
  return edges, seg(weight), seg(weight * conf), seg(weight * correct)


def expected_calibration_error(
    confidences: jax.typing.ArrayLike,
    correct: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Expected calibration error with equal-width bins.

  .. math::
    \mathrm{ECE} = \sum_b \frac{n_b}{n} \left|\mathrm{acc}_b -
      \mathrm{conf}_b\right|
      = \frac{1}{n} \sum_b \Big|\sum_{i \in b} (c_i - p_i)\Big|,

  where ``p_i`` are confidences and ``c_i`` the 0/1 outcomes. Empty bins
  contribute 0; with no (unmasked) example the ECE is 0. For multi-expert
  L2D pass one expert's correctness estimate (softmax estimates capped at 1)
  and ``correct = expert_predictions[:, j] == labels``.

  Args:
    confidences: ``[N]`` floating confidences in ``[0, 1]``.
    correct: ``[N]`` bool or 0/1 outcomes.
    num_bins: number of equal-width bins M on [0, 1] (static; Python or NumPy
      int).
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    Scalar ECE in ``[0, 1]``, dtype of ``confidences``.

  Raises:
    TypeError: non-floating ``confidences``, non-boolean ``where``,
      non-int ``num_bins``.
    ValueError: shapes other than ``[N]``, ``num_bins < 1``; values outside
      [0, 1] or NaN (checked when concrete, on unmasked entries).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> conf = jnp.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2])
    >>> correct = jnp.array([1, 1, 1, 0, 0, 0])
    >>> ece = metrics.expected_calibration_error(conf, correct, num_bins=10)
    >>> print(f"{float(ece):.4f}")  # (4 * |0.75 - 0.9| + 2 * |0 - 0.2|) / 6
    0.1667

  References:
    Naeini, Cooper & Hauskrecht, Obtaining Well Calibrated Probabilities Using
    Bayesian Binning, AAAI 2015.

    Guo, Pleiss, Sun & Weinberger, On Calibration of Modern Neural Networks,
    ICML 2017.
  """
  num_bins = _check_inputs(confidences, correct, num_bins, where)
  _, count, sum_conf, sum_correct = _bin_sums(
      confidences, correct, num_bins, where)
  total = jnp.sum(count)
  gap = jnp.sum(jnp.abs(sum_correct - sum_conf))
  return jnp.where(total > 0, gap / jnp.maximum(total, 1), 0)


def reliability_diagram(
    confidences: jax.typing.ArrayLike,
    correct: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    where: jax.typing.ArrayLike | None = None,
) -> ReliabilityDiagram:
  """Per-bin mean confidence, accuracy and counts (equal-width bins).

  Uses the same bins as :func:`expected_calibration_error`, which equals
  ``sum(counts * |accuracy - confidence|) / sum(counts)``.

  Args:
    confidences: ``[N]`` floating confidences in ``[0, 1]``.
    correct: ``[N]`` bool or 0/1 outcomes.
    num_bins: number of equal-width bins M on [0, 1] (static; Python or NumPy
      int).
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    A :class:`ReliabilityDiagram` with ``edges [M + 1]``, ``confidence [M]``,
    ``accuracy [M]`` and int32 ``counts [M]``; empty bins hold 0 confidence and
    accuracy (mask them with ``counts > 0`` when plotting).

  Raises:
    TypeError: non-floating ``confidences``, non-boolean ``where``,
      non-int ``num_bins``.
    ValueError: shapes other than ``[N]``, ``num_bins < 1``; values outside
      [0, 1] or NaN (checked when concrete, on unmasked entries).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> conf = jnp.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2])
    >>> correct = jnp.array([1, 1, 1, 0, 0, 0])
    >>> diagram = metrics.reliability_diagram(conf, correct, num_bins=2)
    >>> print(diagram.counts, diagram.accuracy)
    [2 4] [0.   0.75]

  References:
    DeGroot & Fienberg, The Comparison and Evaluation of Forecasters, 1983.

    Guo, Pleiss, Sun & Weinberger, On Calibration of Modern Neural Networks,
    ICML 2017.
  """
  num_bins = _check_inputs(confidences, correct, num_bins, where)
  edges, count, sum_conf, sum_correct = _bin_sums(
      confidences, correct, num_bins, where)
  safe = jnp.maximum(count, 1)
  nonempty = count > 0
  return ReliabilityDiagram(
      edges=edges,
      confidence=jnp.where(nonempty, sum_conf / safe, 0),
      accuracy=jnp.where(nonempty, sum_correct / safe, 0),
      counts=count.astype(jnp.int32),
  )


def expert_calibration_errors(
    correctness: jax.typing.ArrayLike,
    expert_predictions: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    num_bins: int = 15,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """ECE of each expert's estimated correctness against its observed one.

  Computes ``expected_calibration_error(correctness[:, j],
  expert_predictions[:, j] == labels)`` for every expert ``j`` (vmapped).

  Args:
    correctness: ``[N, J]`` estimates of P(m_j = y | x) in ``[0, 1]`` (e.g.
      ``losses.softmax_correctness(..., cap=True)`` or
      ``losses.ova_correctness``).
    expert_predictions: ``[N, J]`` integer expert answers.
    labels: ``[N]`` integer true labels.
    num_bins: number of equal-width bins (static; Python or NumPy int).
    where: optional ``[N]`` bool; only these examples count.

  Returns:
    ``[J]`` ECE per expert.

  Raises:
    TypeError: non-floating ``correctness`` or non-integer predictions/labels.
    ValueError: mismatched shapes, or out-of-range values (when concrete).

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import metrics
    >>> est = jnp.array([[1.0, 0.5], [1.0, 0.5]])
    >>> experts = jnp.array([[0, 0], [1, 0]])
    >>> labels = jnp.array([0, 1])
    >>> print(metrics.expert_calibration_errors(est, experts, labels))
    [0. 0.]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  _validation.check_ndim(correctness, 2, "correctness", "[N, J]")
  _validation.check_ndim(labels, 1, "labels", "[N]")
  _validation.check_integer(labels, "labels")
  _validation.check_integer(expert_predictions, "expert_predictions")
  if jnp.shape(expert_predictions) != jnp.shape(correctness):
    raise ValueError(
        f"`expert_predictions` must have the shape [N, J] of `correctness` "
        f"{tuple(jnp.shape(correctness))}, got "
        f"{tuple(jnp.shape(expert_predictions))}.")
  _validation.check_same_leading(correctness, labels, "correctness", "labels")
  correct = jnp.asarray(expert_predictions) == jnp.asarray(labels)[:, None]
  _validation.check_mask(where, jnp.shape(labels)[0])
  _validation.check_floating(correctness, "correctness")
  _validation.check_unit_interval(correctness, "correctness", where=where)
  def one(conf, corr):
    return expected_calibration_error(conf, corr, num_bins=num_bins,
                                      where=where)
  return jax.vmap(one, in_axes=1)(jnp.asarray(correctness), correct)
