"""The EA-L2D rejector: an MLP on six class-free numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from flax import nnx

NUM_FEATURES = 6  # [p_ŷ, μ_ŷ, σ²_ŷ, μ_k*, σ²_k*, p_k*]


class EARejector(nnx.Module):
  """Expert-agnostic rejector ``r_θ``: one deferral logit from six numbers.

  Reads the features of ``experts.ea_rejector_features``
  (``[p_ŷ, μ_ŷ, σ²_ŷ, μ_k*, σ²_k*, p_k*]``), which hold no class index, and
  returns the deferral logit ``g_⊥`` for the (classifier, expert profile)
  pair. Hidden layers are ``Linear -> activation``, then a linear layer to
  one output. The default, five hidden layers of width 256 plus the output
  layer, reads the paper's "6-layer MLP with hidden dimensionality 256" as
  six linear layers.

  Args:
    hidden_sizes: widths of the hidden layers (may be empty: a linear
      rejector).
    activation: elementwise non-linearity after each hidden layer.
    rngs: random streams for initialisation.

  Raises:
    ValueError: a non-positive hidden size.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> rejector = EARejector(hidden_sizes=(8, 8), rngs=nnx.Rngs(0))
    >>> rejector(jnp.zeros((3, 5, 6))).shape
    (3, 5)
  """

  def __init__(
      self,
      *,
      hidden_sizes: Sequence[int] = (256,) * 5,
      activation: Callable[[jax.Array], jax.Array] = nnx.relu,
      rngs: nnx.Rngs,
  ):
    hidden_sizes = tuple(int(h) for h in hidden_sizes)
    if any(h < 1 for h in hidden_sizes):
      raise ValueError(f"`hidden_sizes` must be positive, got "
                       f"{hidden_sizes}.")
    self.activation = activation
    sizes = (NUM_FEATURES,) + hidden_sizes
    self.hidden = nnx.List([
        nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.head = nnx.Linear(sizes[-1], 1, rngs=rngs)

  def __call__(self, features: jax.Array) -> jax.Array:
    """Computes deferral logits.

    Args:
      features: ``[..., 6]`` rejector features (any leading shape).

    Returns:
      ``[...]`` deferral logits ``g_⊥``.

    Raises:
      ValueError: a last axis other than 6.
    """
    if features.ndim < 1 or features.shape[-1] != NUM_FEATURES:
      raise ValueError(
          f"EARejector expects features of shape [..., {NUM_FEATURES}], got "
          f"shape {tuple(features.shape)}.")
    x = features
    for layer in self.hidden:
      x = self.activation(layer(x))
    return self.head(x)[..., 0]
