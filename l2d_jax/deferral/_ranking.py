"""Agent ranking for Top-k deferral: input checks and the top-k kernel.

Ranks are by decreasing score; exact ties go to the lower agent index, and
``-0.0`` ties with ``0.0``. Used by :mod:`l2d_jax.deferral._topk`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from l2d_jax import _validation


def check_scores(scores: Any, name: str) -> int:
  """Checks floating ``[..., A]`` scores without NaN (concrete); returns A."""
  _validation.check_floating(scores, name)
  if jnp.ndim(scores) < 1 or jnp.shape(scores)[-1] < 1:
    raise ValueError(f"`{name}` must have shape [..., A] with A >= 1 agents, "
                     f"got shape {tuple(jnp.shape(scores))}.")
  if _validation.is_concrete(scores) and np.isnan(np.asarray(scores)).any():
    raise ValueError(f"`{name}` contains NaN: no ranking can be made there.")
  return jnp.shape(scores)[-1]


def check_k(k: Any, num_agents: int) -> int:
  """Checks a static int ``k`` in ``[1, num_agents]``; returns it."""
  k = _validation.check_static_int(k, "k", minimum=1)
  if k > num_agents:
    raise ValueError(f"`k` must lie in [1, A] = [1, {num_agents}], got {k}.")
  return k


# Up to this many agents, ranks come from pairwise comparisons (O(A²) per
# row, ~10x faster than XLA's sort on CPU for A = 16); beyond, lax.top_k.
PAIRWISE_MAX_AGENTS = 32


def ranked(scores: jax.Array, k: int) -> jax.Array:
  """Top-k indices, ties to the lower index, -1 on rows with a NaN score."""
  n = scores.shape[-1]
  if n <= PAIRWISE_MAX_AGENTS:
    idx = jnp.arange(n)
    s_i, s_j = scores[..., :, None], scores[..., None, :]
    # Agent j ranks before agent i: a higher score, or equal and j < i
    # (== treats -0.0 and 0.0 as equal).
    before = (s_j > s_i) | ((s_j == s_i) & (idx[None, :] < idx[:, None]))
    rank = jnp.sum(before, axis=-1, dtype=jnp.int32)  # [..., A], a permutation
    at = rank[..., None, :] == jnp.arange(k)[:, None]  # [..., k, A]
    out = jnp.sum(jnp.where(at, idx, 0), axis=-1, dtype=jnp.int32)
  else:
    # lax.top_k puts equal values in index order (documented) but orders
    # -0.0 below 0.0.
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)
    out = jax.lax.top_k(scores, k)[1]
  nan_row = jnp.any(jnp.isnan(scores), axis=-1, keepdims=True)
  return jnp.where(nan_row, -1, out).astype(jnp.int32)
