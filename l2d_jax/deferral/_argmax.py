"""Who answers when deferral logits are given: the multi-expert argmax rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation

MODEL = 0  # the decision value meaning "the model answers"


def argmax_deferral(
    logits: jax.typing.ArrayLike, *, num_experts: int
) -> jax.Array:
  """Deferral decision of either parameterisation.

  The model answers (0) unless the best deferral logit strictly beats the best
  class logit; then the decision is ``1 + argmax_j g_⊥j`` (expert ``j`` is
  1-based here, so that 0 can mean "the model"). Ties go to the model; the
  paper's rule sends exact ties to an expert, which only differs on a set of
  measure zero. Because sigmoid and softmax are monotone, the same rule serves
  the softmax and the OvA surrogate. Works on any leading batch shape and
  under ``jax.vmap``.

  A row with a NaN logit has no decision: concrete input raises, and under
  jit (where values cannot be inspected) the row gets -1, which
  ``l2d_jax.metrics`` never counts for the model or for an expert.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static; Python or NumPy int).

  Returns:
    ``[...]`` int32 decisions in ``[0, J]``; -1 for rows with a NaN logit
    (possible only under jit).

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns; NaN in
      concrete ``logits``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> logits = jnp.array([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, 0.0, 2.0]])
    >>> print(deferral.argmax_deferral(logits, num_experts=2))
    [0 2]

  References:
    Verma, Barrejón & Nalisnick, Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles, AISTATS 2023.
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  if _validation.is_concrete(logits):
    nan_rows = np.isnan(np.asarray(logits)).any(axis=-1)
    if nan_rows.any():
      first = np.unravel_index(np.argmax(nan_rows), nan_rows.shape)
      raise ValueError(
          f"`logits` contains NaN ({int(nan_rows.sum())} of {nan_rows.size} "
          f"rows, first at index {tuple(int(i) for i in first)}): no decision "
          f"can be made there.")
  logits = jnp.asarray(logits)
  best_class = jnp.max(logits[..., :num_classes], axis=-1)
  deferral = logits[..., num_classes:]
  defer = jnp.max(deferral, axis=-1) > best_class
  expert = jnp.argmax(deferral, axis=-1).astype(jnp.int32) + 1
  decision = jnp.where(defer, expert, MODEL)
  invalid = jnp.any(jnp.isnan(logits), axis=-1)
  return jnp.where(invalid, -1, decision).astype(jnp.int32)
