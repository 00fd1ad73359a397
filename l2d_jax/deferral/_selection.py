"""Choosing one candidate (annotator) of a point, with tie-breaking."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

TIE_BREAKS = ("random", "cost")


def select_expert(
    scores: ArrayLike,
    valid: ArrayLike,
    *,
    tie_break: str = "random",
    key: jax.Array | None = None,
    costs: ArrayLike | None = None,
    priority: ArrayLike | None = None,
) -> jax.Array:
  """Slot of the best-scoring valid candidate, ties broken at random or by cost.

  Scores that are equal as floats are ties (segregativities are ratios of
  integer counts, so equal ratios are equal floats). With ``tie_break='cost'``
  the cheapest tied candidate wins and remaining ties go to the first slot
  (or at random when a ``key`` or ``priority`` is given). A NaN score makes
  its candidate invalid.

  Args:
    scores: ``[..., M]`` scores of the candidates (higher is better).
    valid: ``[..., M]`` bool, which candidates may be chosen.
    tie_break: ``'random'`` (needs ``key`` or ``priority``) or ``'cost'``
      (needs ``costs``).
    key: PRNG key.
    costs: ``[..., M]`` candidate costs (lower is better), broadcastable.
    priority: optional random priorities broadcastable to ``[..., M]`` used
      instead of drawing from ``key`` (e.g. one draw per point and candidate
      shared by all prefix sets, which is much cheaper than one per set); the
      highest priority wins a tie.

  Returns:
    ``[...]`` int32 slot index in ``[0, M)``, or -1 where no candidate is
    valid (all invalid or NaN). Never an invalid slot.

  Raises:
    ValueError: unknown ``tie_break``, missing ``key``/``costs``, or
      ``scores``/``valid`` of different shapes.

  Example:
    >>> import jax.numpy as jnp
    >>> from l2d_jax import deferral
    >>> scores = jnp.array([[0.9, jnp.nan, 0.5], [0.2, 0.7, 0.7]])
    >>> valid = jnp.array([[False, True, True], [True, True, True]])
    >>> print(deferral.select_expert(scores, valid, tie_break="cost",
    ...                              costs=jnp.array([0.0, 2.0, 1.0])))
    [2 2]
  """
  if tie_break not in TIE_BREAKS:
    raise ValueError(f"`tie_break` must be one of {TIE_BREAKS}, got "
                     f"{tie_break!r}.")
  scores = jnp.asarray(scores)
  valid = jnp.asarray(valid, bool)
  if scores.shape != valid.shape:
    raise ValueError(f"`scores` and `valid` must have the same shape [..., M], "
                     f"got {scores.shape} and {valid.shape}.")
  if tie_break == "cost" and costs is None:
    raise ValueError("`costs` is required when `tie_break='cost'`.")
  if tie_break == "random" and key is None and priority is None:
    raise ValueError("`key` (or `priority`) is required when "
                     "`tie_break='random'`.")
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    scores = scores.astype(jnp.result_type(float))
  valid = valid & ~jnp.isnan(scores)
  s = jnp.where(valid, scores, -jnp.inf)
  tied = valid & (s == s.max(axis=-1, keepdims=True))
  if tie_break == "cost":
    c = jnp.broadcast_to(jnp.asarray(costs, jnp.result_type(float)), s.shape)
    c = jnp.where(tied & ~jnp.isnan(c), c, jnp.inf)  # NaN cost = infinite
    tied = tied & (c == c.min(axis=-1, keepdims=True))
  if key is None and priority is None:
    slot = jnp.argmax(tied, axis=-1)
  else:
    if priority is None:
      u = jax.random.uniform(key, s.shape)
    else:
      u = jnp.broadcast_to(jnp.asarray(priority), s.shape)
    slot = jnp.argmax(jnp.where(tied, u, -jnp.inf), axis=-1)
  return jnp.where(valid.any(axis=-1), slot, -1).astype(jnp.int32)
