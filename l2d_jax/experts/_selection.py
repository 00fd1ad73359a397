"""Choosing one expert among the candidates of a point, with tie-breaking."""

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
  """Index of the best-scoring valid candidate, ties broken at random or by cost.

  Scores that are equal as floats are ties (segregativities are ratios of
  integer counts, so equal ratios are equal floats). With ``tie_break='cost'``
  the cheapest tied candidate wins and remaining ties go to the first slot
  (or at random when a ``key`` is given).

  Args:
    scores: ``[..., M]`` scores of the candidates (higher is better).
    valid: ``[..., M]`` bool, which candidates may be chosen.
    tie_break: ``'random'`` (needs ``key``) or ``'cost'`` (needs ``costs``).
    key: PRNG key.
    costs: ``[..., M]`` candidate costs (lower is better).
    priority: optional random priorities broadcastable to ``[..., M]`` used
      instead of drawing from ``key`` (e.g. one draw per point and candidate
      shared by all prefix sets, which is much cheaper than one per set).

  Returns:
    ``[...]`` int32 slot index; 0 where no candidate is valid (check
    ``valid.any(-1)``).

  Raises:
    ValueError: unknown ``tie_break`` or missing ``key``/``costs``.
  """
  if tie_break not in TIE_BREAKS:
    raise ValueError(f"`tie_break` must be one of {TIE_BREAKS}, got "
                     f"{tie_break!r}.")
  scores = jnp.asarray(scores)
  valid = jnp.asarray(valid, bool)
  if scores.shape != valid.shape:
    raise ValueError(f"`scores` and `valid` must have the same shape, got "
                     f"{scores.shape} and {valid.shape}.")
  s = jnp.where(valid, scores, -jnp.inf)
  tied = valid & (s == s.max(axis=-1, keepdims=True))
  if tie_break == "cost":
    if costs is None:
      raise ValueError("`costs` is required when `tie_break='cost'`.")
    c = jnp.where(tied, jnp.broadcast_to(jnp.asarray(costs), s.shape), jnp.inf)
    tied = tied & (c == c.min(axis=-1, keepdims=True))
    if key is None and priority is None:
      return jnp.argmax(tied, axis=-1).astype(jnp.int32)
  elif key is None and priority is None:
    raise ValueError("`key` is required when `tie_break='random'`.")
  if priority is None:
    u = jax.random.uniform(key, s.shape)
  else:
    u = jnp.broadcast_to(jnp.asarray(priority), s.shape)
  return jnp.argmax(jnp.where(tied, u, -1.0), axis=-1).astype(jnp.int32)
