"""Context-set encoders of L2D-Pop: neural process and attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from l2d_jax import _validation
from l2d_jax.experts._context import Context
from l2d_jax.models._attention_core import _attention_encode
from l2d_jax.models._attention_core import _masked_attention
from l2d_jax.models._attention_core import _num_blocks

ENCODER_KINDS = ("np", "attention")


class _Attention(nnx.Module):
  """Multi-head attention with separate query / key / value inputs."""

  def __init__(self, q_dim, k_dim, v_dim, out_dim, *, num_heads, rngs):
    if out_dim % num_heads:
      raise ValueError(f"`embed_dim`={out_dim} must be divisible by "
                       f"`num_heads`={num_heads}.")
    self.num_heads = num_heads
    self.query = nnx.Linear(q_dim, out_dim, rngs=rngs)
    self.key = nnx.Linear(k_dim, out_dim, rngs=rngs)
    self.value = nnx.Linear(v_dim, out_dim, rngs=rngs)
    self.out = nnx.Linear(out_dim, out_dim, rngs=rngs)

  def _heads(self, x):
    return x.reshape(x.shape[:-1] + (self.num_heads, -1))

  def __call__(self, q, k, v, mask):
    out = _masked_attention(self._heads(self.query(q)),
                            self._heads(self.key(k)),
                            self._heads(self.value(v)), mask)
    return self.out(out.reshape(out.shape[:-2] + (-1,)))


class _SelfAttentionBlock(nnx.Module):
  """Post-LayerNorm residual block: attention then a two-layer MLP."""

  def __init__(self, dim, *, num_heads, rngs):
    self.attention = _Attention(dim, dim, dim, dim, num_heads=num_heads,
                                rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp1 = nnx.Linear(dim, dim, rngs=rngs)
    self.mlp2 = nnx.Linear(dim, dim, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)

  def __call__(self, h, mask):
    h = self.norm1(h + self.attention(h, h, h, mask))
    return self.norm2(h + self.mlp2(nnx.relu(self.mlp1(h))))


class ContextEncoder(nnx.Module):
  """Encodes an expert's context set into an embedding ``ψ`` (L2D-Pop).

  Each context point ``(φ(x_c), y_c, m_c)`` is embedded as
  ``MLP([φ(x_c), Emb_y(y_c), Emb_m(m_c)])`` (two layers, ReLU). Then

  * ``kind='np'`` (neural process): the masked mean of the point embeddings;
    ``ψ`` does not depend on the query.
  * ``kind='attention'``: ``num_layers`` post-LayerNorm residual blocks of
    masked multi-head self-attention over the context points, then masked
    multi-head cross-attention whose query is ``φ(x)``, keys ``φ(x_c)`` and
    values the self-attended point embeddings: a query-specific ``ψ``.

  *Shared context.* A context with a leading axis of 1 (``features
  [1, C, D]``) is one set shared by all ``B`` queries: the point embeddings
  and the self-attention run once, only the cross-attention (or nothing, for
  ``'np'``) per query. The result equals the per-query call with the set
  repeated ``B`` times (``Context.broadcast``), at a fraction of the cost.

  No positional information is used, so ``ψ`` is invariant to the order of
  the context points. Padding (``mask`` False) never changes the output: its
  features, labels and answers are zeroed before use (they may be NaN or
  -1) and it gets zero attention weight. Context points whose label or answer
  is outside ``[0, K)`` raise when concrete and are treated as padding under
  jit. A query whose context is empty (all masked) gets the *no-context
  embedding*, a learned vector ``no_context`` (initialised at zero) --
  finite, never NaN.

  *Implementation of* ``'attention'``. The layers above hold the parameters;
  the computation runs as one function with a hand-written backward pass
  (``jax.custom_vjp``), on CPU in a sequential loop over blocks of queries of
  about 1024 context points each. This keeps the scratch memory of a training
  step small (on CPU, XLA allocates it afresh at every call: at B = 128,
  C = 50 it was ~58 MB, above glibc's 32 MB mmap threshold, so every page of
  it was a page fault). Values and gradients equal those of the layers
  applied one by one, to float32 rounding. Reverse-mode differentiation
  (``jax.grad``, ``nnx.grad``, ``jax.vjp``) is supported; forward-mode
  (``jax.jvp``, ``jax.jacfwd``) is not.

  Args:
    feature_dim: dimension ``D`` of the features ``φ(x)``.
    num_classes: number of classes ``K``.
    kind: ``'np'`` or ``'attention'``.
    rngs: random streams for initialisation.
    embed_dim: size ``E`` of the point embeddings and of ``ψ``.
    label_dim: size of each label / answer embedding.
    hidden_dim: width of the hidden layer of the point MLP.
    num_heads: attention heads (``embed_dim`` must be divisible by it).
    num_layers: self-attention blocks (``kind='attention'``; may be 0).

  Raises:
    ValueError: an unknown ``kind``, non-positive sizes, ``embed_dim`` not
      divisible by ``num_heads``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from l2d_jax import experts, models
    >>> enc = models.ContextEncoder(3, 4, kind='attention', embed_dim=8,
    ...                             num_heads=2, rngs=nnx.Rngs(0))
    >>> ctx = experts.Context(jnp.ones((2, 5, 3)), jnp.zeros((2, 5), int),
    ...                       jnp.zeros((2, 5), int), jnp.ones((2, 5), bool))
    >>> enc(jnp.ones((2, 3)), ctx).shape
    (2, 8)

  References:
    Tailor, Patra, Verma, Manggala & Nalisnick, Learning to Defer to a
    Population: A Meta-Learning Approach, AISTATS 2024.
  """

  def __init__(
      self,
      feature_dim: int,
      num_classes: int,
      *,
      kind: str = "np",
      rngs: nnx.Rngs,
      embed_dim: int = 64,
      label_dim: int = 16,
      hidden_dim: int = 64,
      num_heads: int = 4,
      num_layers: int = 1,
  ):
    if kind not in ENCODER_KINDS:
      raise ValueError(f"`kind` must be one of {ENCODER_KINDS}, got {kind!r}.")
    for value, name in ((feature_dim, "feature_dim"),
                        (num_classes, "num_classes"),
                        (embed_dim, "embed_dim"), (label_dim, "label_dim"),
                        (hidden_dim, "hidden_dim"), (num_heads, "num_heads")):
      _validation.check_static_int(value, name, minimum=1)
    _validation.check_static_int(num_layers, "num_layers", minimum=0)
    if embed_dim % num_heads:
      raise ValueError(f"`embed_dim`={embed_dim} must be divisible by "
                       f"`num_heads`={num_heads}.")
    self.feature_dim = feature_dim
    self.num_classes = num_classes
    self.kind = kind
    self.out_features = embed_dim
    self.label_embed = nnx.Embed(num_classes, label_dim, rngs=rngs)
    self.answer_embed = nnx.Embed(num_classes, label_dim, rngs=rngs)
    self.point1 = nnx.Linear(feature_dim + 2 * label_dim, hidden_dim,
                             rngs=rngs)
    self.point2 = nnx.Linear(hidden_dim, embed_dim, rngs=rngs)
    self.no_context = nnx.Param(jnp.zeros((embed_dim,)))
    if kind == "attention":
      self.blocks = nnx.List([
          _SelfAttentionBlock(embed_dim, num_heads=num_heads, rngs=rngs)
          for _ in range(num_layers)])
      self.cross = _Attention(feature_dim, feature_dim, embed_dim, embed_dim,
                              num_heads=num_heads, rngs=rngs)
    else:
      self.blocks = nnx.List([])
      self.cross = None

  def _epsilon(self):
    """The blocks' LayerNorm epsilon (all built alike; Flax's default)."""
    return float(self.blocks[0].norm1.epsilon) if self.blocks else 1e-6

  def _attention_params(self):
    """The attention encoder's parameters as a pytree of arrays."""
    def dense(layer):
      return {"kernel": layer.kernel[...], "bias": layer.bias[...]}

    def attention(att):
      return {n: dense(getattr(att, n)) for n in ("query", "key", "value",
                                                  "out")}

    def norm(layer):
      return {"scale": layer.scale[...], "bias": layer.bias[...]}

    return {
        "point1": dense(self.point1), "point2": dense(self.point2),
        "label_embed": {"embedding": self.label_embed.embedding[...]},
        "answer_embed": {"embedding": self.answer_embed.embedding[...]},
        "blocks": [{"attention": attention(b.attention),
                    "norm1": norm(b.norm1), "norm2": norm(b.norm2),
                    "mlp1": dense(b.mlp1), "mlp2": dense(b.mlp2)}
                   for b in self.blocks],
        "cross": attention(self.cross)}

  def _check(self, query_features, context):
    if not isinstance(context, Context):
      raise TypeError(f"`context` must be an experts.Context, got "
                      f"{type(context).__name__}.")
    q = jnp.shape(query_features)
    if len(q) != 2 or q[1] != self.feature_dim:
      raise ValueError(f"`query_features` must have shape [B, "
                       f"{self.feature_dim}], got {tuple(q)}.")
    f = jnp.shape(context.features)
    if len(f) != 3 or f[0] not in (q[0], 1) or f[2] != self.feature_dim:
      raise ValueError(
          f"`context.features` must have shape [B, C, {self.feature_dim}] "
          f"with B={q[0]} (or 1: one set shared by every query) and the "
          f"feature dimension of `query_features`, got {tuple(f)}.")
    for arr, name in ((context.labels, "labels"), (context.answers, "answers"),
                      (context.mask, "mask")):
      if tuple(jnp.shape(arr)) != f[:2]:
        raise ValueError(f"`context.{name}` must have shape [B, C]="
                         f"{tuple(f[:2])}, got {tuple(jnp.shape(arr))}.")
    if jnp.result_type(context.mask) != jnp.bool_:
      raise TypeError(f"`context.mask` must be boolean, got "
                      f"{jnp.result_type(context.mask)}.")
    for arr, name in ((context.labels, "labels"),
                      (context.answers, "answers")):
      _validation.check_index_range(arr, self.num_classes, f"context.{name}",
                                    where=context.mask)

  def __call__(self, query_features: jax.Array, context: Context) -> jax.Array:
    """Embeds each query's context set.

    Args:
      query_features: ``[B, D]`` features ``φ(x)`` of the queries.
      context: a :class:`~l2d_jax.experts.Context` with ``features
        [B, C, D]``, or ``[1, C, D]``: one set shared by every query, encoded
        once.

    Returns:
      ``[B, embed_dim]`` embeddings ``ψ``; the ``no_context`` vector for a
      query whose context is empty.

    Raises:
      TypeError: ``context`` is not a ``Context``; non-bool mask; non-integer
        labels or answers.
      ValueError: mismatched shapes or feature dimensions; (when concrete)
        unmasked context labels or answers outside ``[0, K)``.
    """
    self._check(query_features, context)
    k = self.num_classes
    labels, answers = context.labels, context.answers
    mask = (context.mask & (labels >= 0) & (labels < k)
            & (answers >= 0) & (answers < k))
    features = jnp.where(mask[..., None], context.features, 0.0)
    labels = jnp.where(mask, labels, 0)
    answers = jnp.where(mask, answers, 0)
    batch = jnp.shape(query_features)[0]
    shared = jnp.shape(mask)[0] != batch  # One set [1, C] for every query.
    if self.kind == "np":
      points = jnp.concatenate([
          features, self.label_embed(labels), self.answer_embed(answers)], -1)
      h = self.point2(nnx.relu(self.point1(points)))
      count = jnp.sum(mask, axis=-1, keepdims=True)
      total = jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=-2)
      psi = total / jnp.maximum(count, 1).astype(h.dtype)
    else:
      # The B queries are the query axis of the single set when shared.
      query = query_features[None] if shared else query_features[:, None]
      groups, points = jnp.shape(mask)
      psi = _attention_encode(
          self._attention_params(), query, features, labels, answers, mask,
          self.cross.num_heads, k, self._epsilon(),
          _num_blocks(groups, points))
      psi = psi[0] if shared else psi[:, 0]
    empty = ~jnp.any(mask, axis=-1, keepdims=True)
    psi = jnp.where(empty, self.no_context[...].astype(psi.dtype), psi)
    return jnp.broadcast_to(psi, (batch, psi.shape[-1]))
