"""How strongly a learned deferral rule wants to defer: g_⊥ − max_k g_k."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from l2d_jax import _validation


def deferral_priority(
    logits: jax.typing.ArrayLike, *, num_experts: int = 1
) -> jax.Array:
  """Margin of the best deferral logit over the best class logit.

  ``max_j g_⊥j − max_k g_k``: :func:`argmax_deferral` defers exactly where it
  is positive (ties go to the model). For L2D-Pop (``J = 1``, the deferral
  logit conditioned on the query's expert) it is ``g_⊥ − max_k g_k``; sorting
  queries by it defers the most promising ones first (e.g. under a deferral
  budget). Any leading batch shape; works under jit and vmap.

  Args:
    logits: ``[..., K + J]`` floating; class logits then deferral logits.
    num_experts: the number of deferral logits ``J`` (static; default 1).

  Returns:
    ``[...]`` priorities, dtype of ``logits``; NaN where a row has a NaN
    logit (never a valid-looking margin).

  Raises:
    TypeError: ``num_experts`` not an int, non-floating ``logits``.
    ValueError: ``num_experts < 1`` or fewer than ``J + 1`` columns.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> logits = jnp.array([[2.0, 0.0, 1.0], [0.0, 1.0, 2.5]])
    >>> print(deferral.deferral_priority(logits))
    [-1.   1.5]
    >>> print(deferral.argmax_deferral(logits, num_experts=1))
    [0 1]
  """
  num_classes = _validation.check_num_experts(logits, num_experts)
  logits = jnp.asarray(logits)
  margin = (jnp.max(logits[..., num_classes:], axis=-1)
            - jnp.max(logits[..., :num_classes], axis=-1))
  # jnp.max propagates NaN, so a NaN row stays NaN.
  return margin
