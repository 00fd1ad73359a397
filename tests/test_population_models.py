"""ContextEncoder and PopulationL2D: invariances, masking, shapes, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import models
from l2d_jax.models import _attention_core

B, C, D, K = 3, 6, 5, 4
KINDS = ["np", "attention"]


def _context(seed=0, b=B, c=C, d=D, k=K):
  rng = np.random.default_rng(seed)
  return experts.Context(
      features=jnp.asarray(rng.normal(size=(b, c, d)), jnp.float32),
      labels=jnp.asarray(rng.integers(0, k, (b, c)), jnp.int32),
      answers=jnp.asarray(rng.integers(0, k, (b, c)), jnp.int32),
      mask=jnp.ones((b, c), bool))


def _query(seed=1, b=B, d=D):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, d)),
                     jnp.float32)


def _encoder(kind, **kw):
  kw = dict(embed_dim=8, num_heads=2, hidden_dim=16, label_dim=4) | kw
  return models.ContextEncoder(D, K, kind=kind, rngs=nnx.Rngs(0), **kw)


def _with_no_context_param(enc, value):
  enc.no_context[...] = value
  return enc


def test_masked_attention_matches_numpy():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 1, 3, 4)).astype(np.float32)
  k = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  v = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  mask = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
  out = np.asarray(_attention_core._masked_attention(
      jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
  for b in range(2):
    for h in range(3):
      if not mask[b].any():
        np.testing.assert_array_equal(out[b, 0, h], 0.0)
        continue
      s = (k[b, mask[b], h] @ q[b, 0, h]) / 2.0
      w = np.exp(s - s.max())
      w /= w.sum()
      np.testing.assert_allclose(out[b, 0, h], w @ v[b, mask[b], h],
                                 rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_permutation_invariant(kind):
  enc = _encoder(kind)
  ctx = _context()
  q = _query()
  perm = np.random.default_rng(5).permutation(C)
  shuffled = experts.Context(ctx.features[:, perm], ctx.labels[:, perm],
                             ctx.answers[:, perm], ctx.mask[:, perm])
  np.testing.assert_allclose(enc(q, ctx), enc(q, shuffled), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_padding_invariant(kind):
  enc = _encoder(kind)
  ctx = _context()
  q = _query()
  base = enc(q, ctx)
  # Interleave 4 padding slots holding garbage (NaN features, -1 labels).
  pad = experts.Context(
      features=jnp.full((B, 4, D), jnp.nan),
      labels=jnp.full((B, 4), -1, jnp.int32),
      answers=jnp.full((B, 4), 99, jnp.int32),
      mask=jnp.zeros((B, 4), bool))
  padded = experts.Context(*(jnp.concatenate([a, p], axis=1)
                             for a, p in zip(ctx, pad)))
  order = np.random.default_rng(1).permutation(C + 4)
  padded = experts.Context(*(a[:, order] for a in padded))
  np.testing.assert_allclose(enc(q, padded), base, rtol=1e-5, atol=1e-5)
  # Masking out points equals dropping them.
  part = ctx._replace(mask=ctx.mask.at[:, :2].set(False))
  dropped = experts.Context(*(a[:, 2:] for a in ctx))
  np.testing.assert_allclose(enc(q, part), enc(q, dropped), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_empty_context_is_no_context_vector(kind):
  enc = _with_no_context_param(_encoder(kind), jnp.arange(8.0))
  ctx = _context()
  ctx = ctx._replace(mask=ctx.mask.at[1].set(False),
                     features=ctx.features.at[1].set(jnp.nan))
  out = enc(_query(), ctx)
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_array_equal(out[1], np.arange(8.0))
  assert not np.allclose(out[0], np.arange(8.0))

  # Gradients are finite too (masked NaN padding, an empty row).
  def loss(enc):
    return jnp.sum(enc(_query(), ctx) ** 2)

  grads = nnx.grad(loss)(enc)
  leaves = jax.tree.leaves(nnx.state(grads))
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)


def test_np_encoder_ignores_query_attention_uses_it():
  ctx = _context()
  np_enc, attn = _encoder("np"), _encoder("attention")
  q1, q2 = _query(1), _query(2)
  np.testing.assert_array_equal(np_enc(q1, ctx), np_enc(q2, ctx))
  assert not np.allclose(attn(q1, ctx), attn(q2, ctx))


def test_np_encoder_is_masked_mean_of_point_embeddings():
  enc = _encoder("np")
  ctx = _context()
  ctx = ctx._replace(mask=ctx.mask.at[0, 3:].set(False))
  points = jnp.concatenate([ctx.features, enc.label_embed(ctx.labels),
                            enc.answer_embed(ctx.answers)], -1)
  h = np.asarray(enc.point2(nnx.relu(enc.point1(points))))
  m = np.asarray(ctx.mask)
  expected = np.stack([h[b][m[b]].mean(0) for b in range(B)])
  np.testing.assert_allclose(enc(_query(), ctx), expected, rtol=1e-5,
                             atol=1e-6)


def test_encoder_jit_and_vmap_over_experts():
  enc = _encoder("attention")
  q = _query()
  ctxs = jax.tree.map(lambda *a: jnp.stack(a), _context(0), _context(1))
  graphdef, state = nnx.split(enc)

  @jax.jit
  def run(state, ctxs):
    model = nnx.merge(graphdef, state)
    return jax.vmap(lambda c: model(q, c))(ctxs)

  out = run(state, ctxs)
  assert out.shape == (2, B, 8)
  np.testing.assert_allclose(out[1], enc(q, _context(1)), rtol=1e-5,
                             atol=1e-5)


def test_encoder_bad_input():
  enc = _encoder("attention")
  ctx, q = _context(), _query()
  with pytest.raises(ValueError, match="query_features"):
    enc(jnp.ones((B, D + 1)), ctx)
  with pytest.raises(ValueError, match="context.features"):
    enc(q, ctx._replace(features=jnp.ones((B, C, D + 1))))
  with pytest.raises(ValueError, match="context.labels"):
    enc(q, ctx._replace(labels=ctx.labels.at[0, 0].set(K)))
  with pytest.raises(ValueError, match="context.answers"):
    enc(q, ctx._replace(answers=ctx.answers.at[0, 0].set(-1)))
  with pytest.raises(ValueError, match="context.mask"):
    enc(q, ctx._replace(mask=jnp.ones((B, C + 1), bool)))
  with pytest.raises(TypeError, match="context.mask"):
    enc(q, ctx._replace(mask=jnp.ones((B, C), int)))
  with pytest.raises(TypeError, match="context"):
    enc(q, tuple(ctx))
  with pytest.raises(ValueError, match="kind"):
    models.ContextEncoder(D, K, kind="transformer", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_heads"):
    models.ContextEncoder(D, K, kind="attention", embed_dim=6, num_heads=4,
                          rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="embed_dim"):
    models.ContextEncoder(D, K, embed_dim=0, rngs=nnx.Rngs(0))


def test_encoder_masked_out_of_range_points_ignored_under_jit():
  enc = _encoder("np")
  ctx, q = _context(), _query()
  bad = ctx._replace(labels=ctx.labels.at[:, 0].set(K))
  dropped = experts.Context(*(a[:, 1:] for a in ctx))
  graphdef, state = nnx.split(enc)
  out = jax.jit(lambda s, c: nnx.merge(graphdef, s)(q, c))(state, bad)
  np.testing.assert_allclose(out, enc(q, dropped), rtol=1e-5, atol=1e-6)


# --- The attention encoder: one function, hand-written backward --------------


def _encode_inputs(ctx):
  """What ``ContextEncoder.__call__`` hands to the encoding function."""
  mask = ctx.mask
  return (jnp.where(mask[..., None], ctx.features, 0.0),
          jnp.where(mask, ctx.labels, 0), jnp.where(mask, ctx.answers, 0),
          mask)


@pytest.mark.parametrize("num_layers", [0, 1, 2])
@pytest.mark.parametrize("shared", [False, True])
def test_attention_encode_equals_reference_formula(num_layers, shared,
                                                   monkeypatch):
  # Small blocks: the 6 per-query sets run as 3 blocks of the loop.
  monkeypatch.setattr(_attention_core, "_ROWS_PER_BLOCK", 2 * C)
  enc = _encoder("attention", num_layers=num_layers)
  b = 6
  ctx = _context(3, b=1 if shared else b)
  mask = np.random.default_rng(4).random(ctx.mask.shape) < 0.6
  mask[:, 0] = True
  if not shared:
    mask[1] = False  # An empty set.
  ctx = ctx._replace(mask=jnp.asarray(mask),
                     features=jnp.where(mask[..., None], ctx.features,
                                        jnp.nan))
  features, labels, answers, mask = _encode_inputs(ctx)
  q = _query(b=b)
  query = q[None] if shared else q[:, None]
  blocks = _attention_core._num_blocks(*mask.shape)
  assert blocks == (1 if shared else 3)

  def new(params, query, features):
    return _attention_core._attention_encode(
        params, query, features, labels, answers, mask, 2, K, 1e-6, blocks)

  def ref(params, query, features):
    return _attention_core._reference_attention_encode(
        params, query, features, labels, answers, mask, num_heads=2,
        epsilon=1e-6)

  params = enc._attention_params()
  np.testing.assert_allclose(jax.jit(new)(params, query, features),
                             ref(params, query, features), rtol=1e-5,
                             atol=1e-6)
  weights = jnp.asarray(np.random.default_rng(5).normal(
      size=query.shape[:2] + (8,)), jnp.float32)

  def grads(fn):
    return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * weights),
                            argnums=(0, 1, 2)))(params, query, features)

  got, want = grads(new), grads(ref)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b_ in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-6)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(got))


def test_attention_encoder_gradient_equals_reference_module_formula():
  # Through the module: nnx.grad of ψ equals that of the formula (the
  # layers called one by one, as before the hand-written backward).
  enc = _with_no_context_param(_encoder("attention"), jnp.arange(8.0))
  ctx = _context(6)
  ctx = ctx._replace(mask=ctx.mask.at[0].set(False).at[1, 2:].set(False))
  q = _query()
  weights = jnp.arange(B * 8.0).reshape(B, 8) / 10

  def old_formula(enc):
    features, labels, answers, mask = _encode_inputs(ctx)
    points = jnp.concatenate([features, enc.label_embed(labels),
                              enc.answer_embed(answers)], -1)
    h = enc.point2(nnx.relu(enc.point1(points)))
    for block in enc.blocks:
      h = block(h, mask)
    psi = enc.cross(q[:, None], features, h, mask)[:, 0]
    empty = ~jnp.any(mask, axis=-1, keepdims=True)
    return jnp.where(empty, enc.no_context[...], psi)

  np.testing.assert_allclose(enc(q, ctx), old_formula(enc), rtol=1e-5,
                             atol=1e-6)
  got = nnx.grad(lambda m: jnp.sum(m(q, ctx) * weights))(enc)
  want = nnx.grad(lambda m: jnp.sum(old_formula(m) * weights))(enc)
  for (path, a), (_, b_) in zip(nnx.to_flat_state(nnx.state(got)),
                                nnx.to_flat_state(nnx.state(want))):
    np.testing.assert_allclose(a[...], b_[...], rtol=1e-4, atol=1e-6,
                               err_msg=str(path))


def test_attention_num_blocks_divides_the_batch():
  rows = _attention_core._ROWS_PER_BLOCK
  assert _attention_core._num_blocks(128, 50) == 8  # 16 queries x 50.
  assert _attention_core._num_blocks(3, 6) == 1
  assert _attention_core._num_blocks(1, 10 * rows) == 1
  assert _attention_core._num_blocks(127, 50) == 1  # Prime: one block.
  for groups, points in ((128, 200), (96, 25), (10, rows), (64, 1)):
    num = _attention_core._num_blocks(groups, points)
    assert groups % num == 0
    assert groups // num * points <= rows or num == groups


# --- PopulationL2D ----------------------------------------------------------


def _model(kind, raw_dim=7):
  backbone = nnx.Linear(raw_dim, D, rngs=nnx.Rngs(3))
  return models.PopulationL2D(backbone, D, K, encoder_kind=kind,
                              embed_dim=8, num_heads=2, hidden_dim=16,
                              rngs=nnx.Rngs(4))


def _raw_context(seed, raw_dim=7):
  ctx = _context(seed)
  feats = np.random.default_rng(seed + 10).normal(size=(B, C, raw_dim))
  return ctx._replace(features=jnp.asarray(feats, jnp.float32))


@pytest.mark.parametrize("kind", KINDS + [None])
def test_population_class_logits_independent_of_context(kind):
  model = _model(kind)
  x = _query(d=7)
  a = model(x, _raw_context(0))
  b = model(x, _raw_context(1))
  assert a.shape == (B, K + 1)
  np.testing.assert_array_equal(a[:, :K], b[:, :K])
  if kind is None:
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, model(x))
  else:
    assert not np.allclose(a[:, K], b[:, K])


@pytest.mark.parametrize("kind", KINDS)
def test_population_raw_context_equals_feature_context(kind):
  model = _model(kind)
  x, ctx = _query(d=7), _raw_context(0)
  feats = model.backbone(ctx.features.reshape(B * C, 7)).reshape(B, C, D)
  np.testing.assert_allclose(model(x, ctx),
                             model(x, ctx._replace(features=feats)),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS + [None])
def test_population_trains_with_j1_loss_under_jit(kind):
  model = _model(kind)
  x, ctx = _query(d=7), _raw_context(0)
  labels = jnp.array([0, 1, 2])
  answers = jnp.array([0, 3, 2])

  @nnx.jit
  def loss_fn(model):
    logits = model(x, ctx)
    return losses.multi_expert_softmax_loss(logits, labels,
                                            answers[:, None]).mean()

  value, grads = nnx.value_and_grad(loss_fn)(model)
  assert np.isfinite(float(value))
  leaves = jax.tree.leaves(nnx.state(grads))
  assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)


def test_population_bad_input():
  model = _model("np")
  x = _query(d=7)
  with pytest.raises(ValueError, match="context"):
    model(x)
  with pytest.raises(ValueError, match="context.features"):
    model(x, _context()._replace(features=jnp.ones((B, C, 3))))
  with pytest.raises(ValueError, match="encoder_kind"):
    models.PopulationL2D(nnx.Linear(7, D, rngs=nnx.Rngs(0)), D, K,
                         encoder_kind="np+attention", rngs=nnx.Rngs(0))
  bad = models.PopulationL2D(nnx.Linear(7, D + 1, rngs=nnx.Rngs(0)), D, K,
                             encoder_kind=None, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="feature_dim"):
    bad(x)


# --- ExpertCorrectnessPredictor ------------------------------------------------


def test_correctness_predictor_learns_unseen_experts():
  """Meta-learned from context: correct on experts never trained on."""
  import optax  # pylint: disable=g-import-not-at-top
  k, d, c, n, num_experts = 6, 6, 12, 600, 20
  sets = experts.population_oracle_sets(num_experts, k, size_h=3,
                                        order="lexicographic")
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  feats = jax.nn.one_hot(labels, d) + 0.1 * jnp.asarray(
      rng.normal(size=(n, d)), jnp.float32)
  answers = experts.population_answers(
      jax.random.key(1), labels, jnp.arange(n),
      jnp.broadcast_to(jnp.arange(num_experts), (n, num_experts)), sets).T
  net = models.ExpertCorrectnessPredictor(d, k, embed_dim=16, num_heads=2,
                                          hidden_dim=32, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(net, optax.adam(3e-3), wrt=nnx.Param)

  def batch(key, expert):
    k_ctx, k_q = jax.random.split(key)
    ctx = experts.sample_context(k_ctx, feats, labels, answers[expert],
                                 size=c, capacity=c, num_classes=k,
                                 balanced=True)
    q = jax.random.choice(k_q, n, (32,))
    right = (answers[expert][q] == labels[q]).astype(jnp.int32)
    return feats[q], ctx.broadcast(32), right

  @nnx.jit
  def step(net, opt, key, expert):
    x, ctx, right = batch(key, expert)

    def loss_fn(net):
      return optax.softmax_cross_entropy_with_integer_labels(
          net(x, ctx), right).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(net)
    opt.update(net, grads)
    return loss

  for i in range(400):  # experts 0..15 only ("seen")
    step(net, opt, jax.random.key(i), jnp.int32(i % 16))
  accs = []
  for e in range(16, 20):  # unseen: only their context tells them apart
    x, ctx, right = batch(jax.random.key(1000 + e), e)
    accs.append(float(jnp.mean(jnp.argmax(net(x, ctx), -1) == right)))
  assert min(accs) > 0.8, accs


def test_encoder_can_be_shared_with_population_model():
  pred = models.ExpertCorrectnessPredictor(D, K, embed_dim=8, num_heads=2,
                                           rngs=nnx.Rngs(0))
  model = models.PopulationL2D(nnx.Linear(D, D, rngs=nnx.Rngs(1)), D, K,
                               encoder_kind="attention", embed_dim=8,
                               num_heads=2, rngs=nnx.Rngs(2))
  model.encoder = pred.encoder
  ctx, q = _context(), _query()
  assert model(q, ctx).shape == (B, K + 1)
  pred.encoder.no_context[...] = jnp.ones(8)
  np.testing.assert_array_equal(model.encoder.no_context[...], 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_shared_context_equals_per_query(kind):
  enc = _with_no_context_param(_encoder(kind), jnp.arange(8.0))
  q = _query()
  one = experts.Context(*(a[:1] for a in _context(5)))
  one = one._replace(mask=one.mask.at[0, 2].set(False))
  shared = enc(q, one)
  per_query = enc(q, experts.Context(*(a[0] for a in one)).broadcast(B))
  assert shared.shape == (B, 8)
  np.testing.assert_allclose(shared, per_query, rtol=1e-5, atol=1e-6)
  # Gradients agree too (the shared path is what training uses).
  graphdef, state = nnx.split(enc)

  def loss(s, ctx):
    return jnp.sum(nnx.merge(graphdef, s)(q, ctx) * jnp.arange(8.0))
  g_shared = jax.grad(loss)(state, one)
  g_per = jax.grad(loss)(state, experts.Context(*(a[0] for a in one))
                         .broadcast(B))
  for a, b in zip(jax.tree.leaves(g_shared), jax.tree.leaves(g_per)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # An empty shared set gives every query the no-context vector.
  empty = enc(q, one._replace(mask=jnp.zeros_like(one.mask)))
  np.testing.assert_array_equal(empty, np.tile(np.arange(8.0), (B, 1)))


@pytest.mark.parametrize("kind", KINDS)
def test_population_shared_raw_context_equals_per_query(kind):
  model = _model(kind)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, 7)), jnp.float32)
  one = _raw_context(3)
  one = experts.Context(*(a[:1] for a in one))
  np.testing.assert_allclose(
      model(x, one),
      model(x, experts.Context(*(a[0] for a in one)).broadcast(B)),
      rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="context.features"):
    model(x, experts.Context(*(jnp.concatenate([a[:1], a[:1]]) for a in one)))
