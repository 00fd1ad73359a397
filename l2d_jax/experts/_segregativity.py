"""Segregativity: an expert's accuracy on the confusion sub-matrix of a set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation


def _one_expert(confusion: jax.Array, set_mask: jax.Array,
                undefined_value: float) -> jax.Array:
  """Segregativity of one ``[K, K]`` matrix for one ``[K]`` set."""
  m = jnp.where(set_mask.any(), set_mask, True).astype(confusion.dtype)
  num = jnp.sum(jnp.diagonal(confusion) * m)
  den = m @ confusion @ m
  safe = jnp.where(den > 0, den, 1)
  seg = jnp.where(den > 0, num / safe, undefined_value)
  # A matrix with a NaN or a negative count has no segregativity.
  bad = jnp.any(jnp.isnan(confusion) | (confusion < 0))
  return jnp.where(bad, jnp.nan, seg).astype(jnp.result_type(float))


def segregativity(
    confusion: ArrayLike,
    set_mask: ArrayLike,
    *,
    undefined_value: float = -1.0,
) -> jax.Array:
  """Accuracy of each expert restricted to the labels of a prediction set.

  ``seg_j(G) = trace(C_j[G, G]) / sum(C_j[G, G])``: among the assessment pairs
  whose true label and answer both lie in ``G``, the share answered correctly.
  An empty set uses the whole matrix (the most accurate expert wins).

  Args:
    confusion: ``[J, K, K]`` counts, rows = true label, columns = answer.
    set_mask: ``[K]`` or ``[..., K]`` bool prediction set(s).
    undefined_value: returned for experts with no assessment pair inside the
      set (their sub-matrix sums to 0). The default -1 ranks them below every
      defined value, which lies in [0, 1].

  Returns:
    ``[J]`` for a ``[K]`` set, ``[..., J]`` for ``[..., K]`` sets; NaN for an
    expert whose matrix holds a NaN or a negative count (possible only under
    jit: concrete input raises).

  Raises:
    ValueError: mismatched K, a non-square / non-3-D ``confusion``, or
      (concrete input) NaN or negative counts.

  Example:
    >>> import jax.numpy as jnp
    >>> c = jnp.array([[[5, 5, 0], [5, 5, 0], [0, 0, 10]]])
    >>> segregativity(c, jnp.array([True, True, False]))
    Array([0.5], dtype=float32)
  """
  _validation.check_ndim(confusion, 3, "confusion", "[J, K, K]")
  if _validation.is_concrete(confusion):
    c = np.asarray(confusion)
    if np.isnan(c).any() or (c < 0).any():
      raise ValueError("`confusion` must hold counts >= 0, got "
                       f"{'NaN' if np.isnan(c).any() else 'negative'} values.")
  confusion = jnp.asarray(confusion)
  num_k = confusion.shape[-1]
  if confusion.shape[-2] != num_k:
    raise ValueError(f"`confusion` must be [J, K, K], got {confusion.shape}.")
  set_mask = jnp.asarray(set_mask)
  if set_mask.ndim < 1 or set_mask.shape[-1] != num_k:
    raise ValueError(f"`set_mask` must have shape [..., K] with K={num_k}, got "
                     f"{set_mask.shape}.")
  if set_mask.dtype != jnp.bool_:
    raise TypeError(f"`set_mask` must be bool, got {set_mask.dtype}.")
  per_expert = jax.vmap(_one_expert, in_axes=(0, None, None))
  fn = lambda m: per_expert(confusion, m, undefined_value)
  for _ in range(set_mask.ndim - 1):
    fn = jax.vmap(fn)
  return fn(set_mask)
