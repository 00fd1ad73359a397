"""L2D-Pop: a classifier with one context-conditioned deferral logit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from l2d_jax import _validation
from l2d_jax.experts._context import Context
from l2d_jax.models._context_encoder import ENCODER_KINDS
from l2d_jax.models._context_encoder import ContextEncoder


class PopulationL2D(nnx.Module):
  """Learning to defer to a population of experts, one expert per query.

  ``φ = backbone(x)`` gives ``[B, D]`` features; a linear head gives the
  ``K`` class logits ``g_1..g_K`` from ``φ`` alone, so they never depend on
  the context. The deferral logit is ``g_⊥ = MLP([φ(x), ψ])`` with ``ψ`` the
  :class:`ContextEncoder` embedding of the expert's context set; with
  ``encoder_kind=None`` it is ``MLP(φ(x))`` (Single-L2D: one deferral logit
  for the pooled experts, no context; a passed context is ignored, so the
  same training loop serves every variant).

  The output ``[B, K + 1]`` is the multi-expert layout with ``J = 1``, so
  ``losses.population_l2d_loss`` (= ``losses.multi_expert_softmax_loss`` with
  one expert) and ``deferral.argmax_deferral(logits, num_experts=1)`` apply.

  Context points are embedded with the backbone when ``context.features``
  has the trailing shape of ``x`` (raw inputs ``[B, C, ...]``, e.g. images);
  otherwise they must already be features ``[B, C, D]`` (e.g. from a frozen
  embedding model, cached once). When both readings fit (``x`` is itself a
  ``D``-vector) the backbone is applied.

  Args:
    backbone: any NNX module (or callable) mapping ``[B, ...]`` inputs to
      ``[B, feature_dim]`` features.
    feature_dim: ``D``, the size of ``φ(x)``.
    num_classes: number of classes ``K``.
    encoder_kind: ``'np'``, ``'attention'`` or ``None`` (Single-L2D).
    rngs: random streams for initialisation.
    embed_dim: size of ``ψ`` (see :class:`ContextEncoder`).
    hidden_dim: width of the hidden layer of the deferral MLP and of the
      point MLP of the encoder.
    num_heads: attention heads of the encoder.
    num_layers: self-attention blocks of the encoder.

  Raises:
    ValueError: an unknown ``encoder_kind`` or non-positive sizes.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from l2d_jax import experts, models
    >>> backbone = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
    >>> model = models.PopulationL2D(backbone, 4, 3, encoder_kind='np',
    ...                              embed_dim=8, rngs=nnx.Rngs(1))
    >>> ctx = experts.Context(jnp.ones((2, 5, 6)), jnp.zeros((2, 5), int),
    ...                       jnp.zeros((2, 5), int), jnp.ones((2, 5), bool))
    >>> model(jnp.ones((2, 6)), ctx).shape
    (2, 4)

  References:
    Tailor, Patra, Verma, Manggala & Nalisnick, Learning to Defer to a
    Population: A Meta-Learning Approach, AISTATS 2024.
  """

  def __init__(
      self,
      backbone: nnx.Module,
      feature_dim: int,
      num_classes: int,
      *,
      encoder_kind: str | None = "np",
      rngs: nnx.Rngs,
      embed_dim: int = 64,
      hidden_dim: int = 64,
      num_heads: int = 4,
      num_layers: int = 1,
  ):
    if encoder_kind is not None and encoder_kind not in ENCODER_KINDS:
      raise ValueError(f"`encoder_kind` must be one of {ENCODER_KINDS} or "
                       f"None, got {encoder_kind!r}.")
    feature_dim = _validation.check_static_int(feature_dim, "feature_dim",
                                               minimum=1)
    num_classes = _validation.check_static_int(num_classes, "num_classes",
                                               minimum=1)
    hidden_dim = _validation.check_static_int(hidden_dim, "hidden_dim",
                                              minimum=1)
    self.backbone = backbone
    self.feature_dim = feature_dim
    self.num_classes = num_classes
    self.encoder_kind = encoder_kind
    self.classifier = nnx.Linear(feature_dim, num_classes, rngs=rngs)
    if encoder_kind is None:
      self.encoder = None
      defer_in = feature_dim
    else:
      self.encoder = ContextEncoder(
          feature_dim, num_classes, kind=encoder_kind, rngs=rngs,
          embed_dim=embed_dim, hidden_dim=hidden_dim, num_heads=num_heads,
          num_layers=num_layers)
      defer_in = feature_dim + embed_dim
    self.defer1 = nnx.Linear(defer_in, hidden_dim, rngs=rngs)
    self.defer2 = nnx.Linear(hidden_dim, 1, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """``φ(x)``: ``[B, ...]`` inputs to ``[B, feature_dim]`` features."""
    phi = self.backbone(x)
    if jnp.ndim(phi) != 2 or jnp.shape(phi)[1] != self.feature_dim:
      raise ValueError(
          f"`backbone` must return features of shape [B, {self.feature_dim}] "
          f"(feature_dim), got {tuple(jnp.shape(phi))}.")
    return phi

  def context_features(self, x: jax.Array, context: Context) -> Context:
    """The context with ``features [B, C, D]`` (backbone applied if raw)."""
    f = jnp.shape(context.features)
    if len(f) < 2:
      raise ValueError(f"`context.features` must have shape [B, C, ...], got "
                       f"{tuple(f)}.")
    if tuple(f[2:]) == tuple(jnp.shape(x)[1:]):
      flat = jnp.reshape(context.features, (f[0] * f[1],) + tuple(f[2:]))
      phi = self.features(flat).reshape(f[0], f[1], self.feature_dim)
      return context._replace(features=phi)
    if tuple(f[2:]) == (self.feature_dim,):
      return context
    raise ValueError(
        f"`context.features` must have shape [B, C, ...] with the trailing "
        f"shape {tuple(jnp.shape(x)[1:])} of `x` (raw inputs) or "
        f"({self.feature_dim},) (features), got {tuple(f)}.")

  def __call__(self, x: jax.Array, context: Context | None = None
               ) -> jax.Array:
    """Class logits and the deferral logit.

    Args:
      x: ``[B, ...]`` inputs of the backbone.
      context: the expert's context set per query (``Context`` with
        ``[B, C, ...]`` raw inputs or ``[B, C, D]`` features), or one set
        shared by every query (leading axis 1: embedded and self-attended
        once); required unless ``encoder_kind`` is None, where it is ignored.

    Returns:
      ``[B, K + 1]`` logits: ``K`` class logits, then ``g_⊥``.

    Raises:
      ValueError: a missing context, bad shapes (see :class:`ContextEncoder`).
    """
    phi = self.features(x)
    class_logits = self.classifier(phi)
    if self.encoder is None:
      defer_in = phi
    else:
      if context is None:
        raise ValueError(f"`context` is required with encoder_kind="
                         f"{self.encoder_kind!r}.")
      if not isinstance(context, Context):
        raise TypeError(f"`context` must be an experts.Context, got "
                        f"{type(context).__name__}.")
      psi = self.encoder(phi, self.context_features(x, context))
      defer_in = jnp.concatenate([phi, psi], axis=-1)
    defer = self.defer2(nnx.relu(self.defer1(defer_in)))
    return jnp.concatenate([class_logits, defer], axis=-1)


class ExpertCorrectnessPredictor(nnx.Module):
  """Will the context's expert answer this query correctly? (Φ_enc + Φ_ex).

  The label generator of learning to defer from limited demonstrations: a
  :class:`ContextEncoder` (``'attention'`` by default: self-attention over the
  context, cross-attention from the query) gives ``ψ``, and
  ``MLP([φ(x), ψ])`` gives two logits ``(wrong, right)``. Their argmax is the
  predicted correctness (eq. 4 of the paper), ``softmax(...)[..., 1]`` the
  probability that the expert is right; the two logits suit both the
  supervised cross-entropy and ``losses.fixmatch_consistency``. Inputs are
  features of a frozen embedding model: ``φ(x) [B, D]`` and a context with
  ``features [B, C, D]``.

  To reuse the trained encoder in the downstream L2D-Pop, share the module:
  ``population_model.encoder = predictor.encoder`` (same ``kind`` and sizes).

  Args:
    feature_dim: ``D``, the size of ``φ(x)``.
    num_classes: number of classes ``K`` (of the context labels/answers).
    encoder_kind: ``'attention'`` or ``'np'``.
    rngs: random streams for initialisation.
    embed_dim, hidden_dim, num_heads, num_layers: as :class:`PopulationL2D`.

  Raises:
    ValueError: an unknown ``encoder_kind`` or non-positive sizes.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from l2d_jax import experts, models
    >>> net = models.ExpertCorrectnessPredictor(4, 3, embed_dim=8,
    ...                                         rngs=nnx.Rngs(0))
    >>> ctx = experts.Context(jnp.ones((2, 5, 4)), jnp.zeros((2, 5), int),
    ...                       jnp.zeros((2, 5), int), jnp.ones((2, 5), bool))
    >>> net(jnp.ones((2, 4)), ctx).shape
    (2, 2)

  References:
    Ramgolam, Carneiro & Chen, Learning To Defer To A Population With Limited
    Demonstrations, 2025.
  """

  def __init__(
      self,
      feature_dim: int,
      num_classes: int,
      *,
      encoder_kind: str = "attention",
      rngs: nnx.Rngs,
      embed_dim: int = 64,
      hidden_dim: int = 64,
      num_heads: int = 4,
      num_layers: int = 1,
  ):
    if encoder_kind not in ENCODER_KINDS:
      raise ValueError(f"`encoder_kind` must be one of {ENCODER_KINDS}, got "
                       f"{encoder_kind!r}.")
    hidden_dim = _validation.check_static_int(hidden_dim, "hidden_dim",
                                              minimum=1)
    self.encoder = ContextEncoder(
        feature_dim, num_classes, kind=encoder_kind, rngs=rngs,
        embed_dim=embed_dim, hidden_dim=hidden_dim, num_heads=num_heads,
        num_layers=num_layers)
    self.head1 = nnx.Linear(feature_dim + embed_dim, hidden_dim, rngs=rngs)
    self.head2 = nnx.Linear(hidden_dim, 2, rngs=rngs)

  def __call__(self, features: jax.Array, context: Context) -> jax.Array:
    """``[B, 2]`` logits (expert wrong, expert right) per query.

    Args:
      features: ``[B, D]`` query features ``φ(x)``.
      context: the expert's context set per query, ``features [B, C, D]``,
        or ``[1, C, D]``: one set shared by every query, encoded once.

    Returns:
      ``[B, 2]`` logits.

    Raises:
      TypeError, ValueError: as :class:`ContextEncoder`.
    """
    psi = self.encoder(features, context)
    h = nnx.relu(self.head1(jnp.concatenate([features, psi], axis=-1)))
    return self.head2(h)
