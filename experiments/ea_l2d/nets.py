"""Networks of the EA-L2D experiment: EA-L2D, L2D-Pop, Pop-Avg, multi-L2D.

Every method shares the same two-layer MLP backbone on the input vectors of
``data.Data``; ``make_model`` builds the model of one method.
"""

from __future__ import annotations

import jax
from flax import nnx

from experiments.ea_l2d import config
from experiments.ea_l2d.data import Data
from l2d_jax import experts
from l2d_jax import models


class Backbone(nnx.Module):
  """Two ReLU layers: ``[B, D]`` -> ``[B, hidden]``."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.l2(nnx.relu(self.l1(x))))


class EAL2D(nnx.Module):
  """MLP classifier and the expert-agnostic rejector."""

  def __init__(self, in_dim, num_classes, *, hidden, rejector_hidden, rngs):
    self.backbone = Backbone(in_dim, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.rejector = models.EARejector(hidden_sizes=rejector_hidden,
                                      rngs=rngs)

  def __call__(self, x):
    return self.head(self.backbone(x))

  def defer_logits(self, logits, mean, var, key):
    """``[J, B]`` deferral logits from class logits and ``[J, K]`` profiles."""
    z = experts.ea_rejector_features(jax.nn.softmax(logits), mean[:, None],
                                     var[:, None], key=key)
    return self.rejector(z)


class MultiL2D(nnx.Module):
  """MLP with ``K + J`` outputs (multi-expert softmax L2D)."""

  def __init__(self, in_dim, num_classes, num_experts, *, hidden, rngs):
    self.backbone = Backbone(in_dim, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes + num_experts, rngs=rngs)

  def __call__(self, x):
    return self.head(self.backbone(x))


def make_model(method: str, data: Data, budget: config.Budget, key,
               num_experts: int):
  rngs = nnx.Rngs(params=key)
  d, k = data.x.shape[1], data.num_classes
  if method == "ea_l2d":
    return EAL2D(d, k, hidden=budget.hidden,
                 rejector_hidden=budget.rejector_hidden, rngs=rngs)
  if method == "multi_l2d":
    return MultiL2D(d, k, num_experts, hidden=budget.hidden, rngs=rngs)
  return models.PopulationL2D(
      Backbone(d, budget.hidden, rngs=rngs), budget.hidden, k,
      encoder_kind="attention" if method == "l2d_pop" else None, rngs=rngs,
      embed_dim=budget.embed_dim, hidden_dim=budget.hidden)


def pop_logits(m: models.PopulationL2D, xq: jax.Array, ctx: experts.Context
               ) -> jax.Array:
  """L2D-Pop logits ``[B, K + 1]`` of queries sharing one context set.

  The set ``ctx [C, D]`` (one expert, one draw) is passed with a leading axis
  of 1, the model's shared-context path: its points go through the backbone,
  the point MLP and the self-attention once for all ``B`` queries; only the
  cross-attention runs per query. This equals giving every query its own
  copy of the set (``Context.broadcast``) in outputs and gradients, up to
  float rounding.

  Args:
    m: the ``models.PopulationL2D`` (merged).
    xq: ``[B, D]`` query inputs.
    ctx: one context set with raw inputs ``features [C, D]``.

  Returns:
    ``[B, K + 1]``: ``K`` class logits, then the deferral logit.
  """
  return m(xq, jax.tree.map(lambda a: a[None], ctx))
