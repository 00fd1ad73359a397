"""Who answers when deferral logits are given: the multi-expert argmax rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
  the softmax and the OvA surrogate.

  Args:
    logits: ``[..., K + J]`` floating.
    num_experts: the number of experts J (static).

  Returns:
    ``[...]`` int32 decisions in ``[0, J]``.

  Raises:
    TypeError: ``num_experts`` not an int, or non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

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
  logits = jnp.asarray(logits)
  best_class = jnp.max(logits[..., :num_classes], axis=-1)
  deferral = logits[..., num_classes:]
  defer = jnp.max(deferral, axis=-1) > best_class
  expert = jnp.argmax(deferral, axis=-1).astype(jnp.int32) + 1
  return jnp.where(defer, expert, 0).astype(jnp.int32)
