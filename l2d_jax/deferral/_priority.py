"""Deferral by per-expert priority (EA-L2D's multi-expert inference).

A rejector scored once per expert (e.g. ``models.EARejector`` on each
expert's profile) gives one deferral logit ``g_⊥j`` per expert beside the
classifier's ``K`` class logits. Each expert's priority is its margin
``g_⊥j − max_k g_k``; the query goes to the expert with the highest
priority when that priority is positive, else the model answers.
:func:`l2d_jax.deferral.deferral_priority` is the same margin for logits
concatenated as ``[..., K + J]``, reduced over experts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation
from l2d_jax.deferral._argmax import MODEL


def expert_priorities(
    class_logits: jax.typing.ArrayLike, defer_logits: jax.typing.ArrayLike
) -> jax.Array:
  """Per-expert deferral priority ``g_⊥j − max_k g_k``.

  Args:
    class_logits: ``[..., K]`` floating class logits.
    defer_logits: ``[..., J]`` floating deferral logits, one per expert
      (same leading shape).

  Returns:
    ``[..., J]`` priorities; NaN where the row of ``class_logits`` or the
    entry of ``defer_logits`` is NaN.

  Raises:
    TypeError: non-floating logits.
    ValueError: a scalar, an empty last axis or mismatched leading shapes.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.expert_priorities(jnp.array([2.0, 0.0]),
    ...                                  jnp.array([1.0, 3.0])))
    [-1.  1.]
  """
  _validation.check_floating(class_logits, "class_logits")
  _validation.check_floating(defer_logits, "defer_logits")
  cs, ds = tuple(jnp.shape(class_logits)), tuple(jnp.shape(defer_logits))
  if len(cs) < 1 or cs[-1] < 1:
    raise ValueError(f"`class_logits` must have shape [..., K] with K >= 1, "
                     f"got {cs}.")
  if len(ds) != len(cs) or ds[:-1] != cs[:-1] or ds[-1] < 1:
    raise ValueError(f"`defer_logits` must have shape [..., J] (J >= 1) with "
                     f"the leading shape {cs[:-1]} of `class_logits`, got "
                     f"{ds}.")
  best = jnp.max(jnp.asarray(class_logits), axis=-1, keepdims=True)
  return jnp.asarray(defer_logits) - best


def defer_by_priority(priority: jax.typing.ArrayLike) -> jax.Array:
  """Who answers: the expert with the highest priority if it is positive.

  Decision ``1 + argmax_j priority_j`` when ``max_j priority_j > 0``, else
  0 (the model); ties with 0 go to the model (METHODS.md writes ``≥``; the
  two differ on a set of measure zero), ties between experts to the lowest
  expert index. Works on any leading shape and under jit/vmap.

  Args:
    priority: ``[..., J]`` floating priorities, e.g. from
      :func:`expert_priorities`.

  Returns:
    ``[...]`` int32 decisions in ``[0, J]`` (0 = model, ``j`` = expert ``j``,
    i.e. column ``j - 1``); -1 for rows holding NaN (possible only under
    jit).

  Raises:
    TypeError: non-floating ``priority``.
    ValueError: a scalar or an empty last axis; NaN in a concrete
      ``priority``.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> print(deferral.defer_by_priority(jnp.array([[-1.0, 1.0],
    ...                                             [-0.5, -2.0]])))
    [2 0]
  """
  _validation.check_floating(priority, "priority")
  shape = tuple(jnp.shape(priority))
  if len(shape) < 1 or shape[-1] < 1:
    raise ValueError(f"`priority` must have shape [..., J] with J >= 1, got "
                     f"{shape}.")
  if _validation.is_concrete(priority):
    nan_rows = np.isnan(np.asarray(priority)).any(axis=-1)
    if nan_rows.any():
      first = np.unravel_index(np.argmax(nan_rows), nan_rows.shape)
      raise ValueError(
          f"`priority` contains NaN ({int(nan_rows.sum())} of "
          f"{nan_rows.size} rows, first at index "
          f"{tuple(int(i) for i in first)}): no decision can be made there.")
  priority = jnp.asarray(priority)
  expert = jnp.argmax(priority, axis=-1).astype(jnp.int32) + 1
  decision = jnp.where(jnp.max(priority, axis=-1) > 0, expert, MODEL)
  invalid = jnp.any(jnp.isnan(priority), axis=-1)
  return jnp.where(invalid, -1, decision).astype(jnp.int32)
