"""Multi-layer perceptron with class logits and deferral logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from flax import nnx

from l2d_jax.models._checks import check_num_heads


class MLP(nnx.Module):
  """MLP classifier with ``num_experts`` extra deferral logits.

  Hidden layers are ``Linear -> activation (-> Dropout)``; one final linear
  layer produces ``num_classes + num_experts`` outputs: the K class logits
  ``g_1..g_K`` first, then one deferral logit ``g_⊥j`` per expert.

  Args:
    in_features: size of the input feature vector.
    hidden_sizes: widths of the hidden layers, e.g. ``(64, 64)``; may be empty
      (a linear model).
    num_classes: number of classes K.
    num_experts: number of deferral outputs J (0: plain classifier).
    activation: elementwise non-linearity after each hidden layer.
    dropout: dropout rate after each hidden activation (0 disables it).
    rngs: random streams for initialisation (and dropout).

  Raises:
    ValueError: non-positive sizes or a negative ``num_experts``.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = MLP(2, (16, 16), 4, num_experts=3, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((5, 2))).shape
    (5, 7)
  """

  def __init__(
      self,
      in_features: int,
      hidden_sizes: Sequence[int],
      num_classes: int,
      *,
      num_experts: int = 0,
      activation: Callable[[jax.Array], jax.Array] = nnx.relu,
      dropout: float = 0.0,
      rngs: nnx.Rngs,
  ):
    check_num_heads(num_classes, num_experts)
    hidden_sizes = tuple(int(h) for h in hidden_sizes)
    if in_features < 1 or any(h < 1 for h in hidden_sizes):
      raise ValueError(
          f"`in_features` and `hidden_sizes` must be positive, got "
          f"{in_features} and {hidden_sizes}.")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}.")
    self.in_features = in_features
    self.num_classes = num_classes
    self.num_experts = num_experts
    self.activation = activation
    sizes = (in_features,) + hidden_sizes
    self.hidden = nnx.List([
        nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
    self.head = nnx.Linear(sizes[-1], num_classes + num_experts, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Computes logits.

    Args:
      x: features, ``[batch, in_features]``.

    Returns:
      ``[batch, num_classes + num_experts]`` logits: classes, then deferral.

    Raises:
      ValueError: ``x`` is not ``[batch, in_features]``.
    """
    if x.ndim != 2 or x.shape[-1] != self.in_features:
      raise ValueError(
          f"MLP expects inputs of shape [batch, {self.in_features}], got "
          f"shape {tuple(x.shape)}.")
    for layer in self.hidden:
      x = self.activation(layer(x))
      if self.dropout is not None:
        x = self.dropout(x)
    return self.head(x)
