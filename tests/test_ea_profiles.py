"""EA-L2D expert profiles: Beta posteriors, priors, counts, rejector features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from l2d_jax import experts
from l2d_jax import models


def test_beta_moments_match_scipy():
  rng = np.random.default_rng(0)
  correct = rng.integers(0, 20, size=(3, 5))
  total = correct + rng.integers(0, 20, size=(3, 5))
  prior_a = rng.uniform(0.1, 5.0, size=5)
  prior_b = rng.uniform(0.1, 5.0, size=5)
  post = jax.jit(experts.beta_posterior)(correct, total, prior_a=prior_a,
                                         prior_b=prior_b)
  a = prior_a + correct
  b = prior_b + total - correct
  np.testing.assert_allclose(post.a, a, rtol=1e-6)
  np.testing.assert_allclose(post.b, b, rtol=1e-6)
  np.testing.assert_allclose(post.mean, stats.beta.mean(a, b), rtol=1e-5)
  np.testing.assert_allclose(post.var, stats.beta.var(a, b), rtol=1e-5)


def test_beta_moments_float64_near_one():
  with jax.enable_x64(True):
    post = experts.beta_posterior(np.array([1e6]), np.array([1e6]),
                                  prior_b=np.float64(0.5))
    a, b = 1e6 + 1.0, 0.5
    np.testing.assert_allclose(post.var, stats.beta.var(a, b), rtol=1e-12)
    np.testing.assert_allclose(1 - post.mean, b / (a + b), rtol=1e-9)


def test_posterior_mean_converges_like_one_over_sqrt_n():
  # Prop. 1: the posterior mean is consistent; its RMS error over many
  # simulated experts shrinks like sqrt(p (1 - p) / n).
  rng = np.random.default_rng(1)
  p = rng.uniform(0.05, 0.95, size=2000)
  errors = []
  for n in (10, 100, 1000, 10000):
    correct = rng.binomial(n, p)
    mean = experts.beta_posterior(correct, np.full_like(correct, n)).mean
    rms = float(np.sqrt(np.mean((np.asarray(mean, np.float64) - p) ** 2)))
    expected = float(np.sqrt(np.mean(p * (1 - p)) / n))
    assert 0.7 * expected < rms < 1.3 * expected, (n, rms, expected)
    errors.append(rms)
  assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:]))


def test_prior_from_self_assessment():
  a0, b0 = experts.prior_from_self_assessment(
      np.array([0.9, 0.25, 0.5]), np.array([1.0, 0.5, 0.0]), strength=8.0)
  np.testing.assert_allclose(a0, [1 + 7.2, 1 + 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(b0, [1 + 0.8, 1 + 3.0, 1.0], rtol=1e-6)
  post = experts.beta_posterior(np.zeros(3, int), np.zeros(3, int),
                                prior_a=a0, prior_b=b0)
  np.testing.assert_allclose(post.mean, [8.2 / 10, 2 / 6, 0.5], rtol=1e-6)


def _context(labels, answers, mask):
  labels = jnp.asarray(labels)
  return experts.Context(jnp.zeros(labels.shape + (1,)), labels,
                         jnp.asarray(answers), jnp.asarray(mask))


def test_class_counts_by_hand_and_vmap_over_experts():
  # Two experts, one set each of C = 5 points, K = 3.
  ctx = _context([[0, 0, 1, 2, 2], [1, 1, 1, 0, 2]],
                 [[0, 1, 1, 2, 0], [1, 0, 1, 0, 0]],
                 [[True, True, True, True, False],
                  [True, True, True, False, False]])
  correct, total = experts.class_counts(ctx, num_classes=3)
  np.testing.assert_array_equal(correct, [[1, 1, 1], [0, 2, 0]])
  np.testing.assert_array_equal(total, [[2, 1, 1], [0, 3, 0]])
  fn = jax.jit(jax.vmap(lambda c: experts.class_counts(c, num_classes=3)))
  vc, vt = fn(ctx)
  np.testing.assert_array_equal(vc, correct)
  np.testing.assert_array_equal(vt, total)
  assert vc.dtype == jnp.int32


def test_class_counts_under_jit_ignores_out_of_range_labels():
  ctx = _context([0, 5, 1], [0, 5, 7], [True, True, True])
  correct, total = jax.jit(
      lambda c: experts.class_counts(c, num_classes=2))(ctx)
  np.testing.assert_array_equal(correct, [1, 0])
  np.testing.assert_array_equal(total, [1, 1])


def test_class_counts_with_sample_context():
  key = jax.random.key(0)
  x = jnp.zeros((20, 1))
  y = jnp.arange(20) % 4
  answers = jnp.where(y == 2, y, (y + 1) % 4)  # right on class 2 only
  ctx = experts.sample_context(key, x, y, answers, size=8, capacity=12,
                               num_classes=4, balanced=True)
  correct, total = experts.class_counts(ctx, num_classes=4)
  np.testing.assert_array_equal(total, [2, 2, 2, 2])
  np.testing.assert_array_equal(correct, [0, 0, 2, 0])


def test_rejector_features_by_hand():
  p = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
  mu = np.array([[0.2, 0.4, 0.9], [0.7, 0.6, 0.5]], np.float32)
  var = np.array([[0.01, 0.02, 0.03], [0.04, 0.05, 0.06]], np.float32)
  z = jax.jit(experts.ea_rejector_features)(p, mu, var)
  np.testing.assert_allclose(
      z, [[0.6, 0.4, 0.02, 0.9, 0.03, 0.3],
          [0.5, 0.7, 0.04, 0.7, 0.04, 0.5]], rtol=1e-6)
  assert z.shape == (2, 6)


def test_expertise_class_random_tie_break():
  mu = jnp.full((4000, 3), 0.5).at[:, 2].set(0.25)
  assert int(jnp.max(experts.expertise_class(mu))) == 0
  k = experts.expertise_class(mu, key=jax.random.key(0))
  counts = np.bincount(np.asarray(k), minlength=3)
  assert counts[2] == 0
  assert 1850 < counts[0] < 2150  # binomial(4000, 1/2): sd about 32
  # Same key, same draw (the loss and the features agree on k*).
  k2 = jax.jit(lambda m: experts.expertise_class(
      m, key=jax.random.key(0)))(mu)
  np.testing.assert_array_equal(k, k2)


_rejector = models.EARejector(hidden_sizes=(8, 8), rngs=nnx.Rngs(0))


@settings(max_examples=25, deadline=None)
@given(num_classes=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_expert_agnostic_invariance_prop3(num_classes, seed):
  # Permuting classes consistently in the classifier output and the expert
  # profile leaves the features, hence the deferral logit, unchanged.
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(3, num_classes))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  correct = rng.integers(0, 6, size=(3, num_classes))
  total = correct + rng.integers(0, 6, size=(3, num_classes))
  post = experts.beta_posterior(correct, total,
                                prior_a=rng.uniform(0.5, 2, num_classes),
                                prior_b=rng.uniform(0.5, 2, num_classes))
  mu, var = np.asarray(post.mean), np.asarray(post.var)
  perm = rng.permutation(num_classes)
  key = jax.random.key(seed % 1000)
  z = experts.ea_rejector_features(p.astype(np.float32), mu, var, key=key)
  zp = experts.ea_rejector_features(p[:, perm].astype(np.float32),
                                    mu[:, perm], var[:, perm], key=key)
  # With random tie-breaks the drawn k* may differ among tied classes; the
  # features only agree when k* is unique, or on mu_k* always.
  unique = (mu == mu.max(-1, keepdims=True)).sum(-1) == 1
  np.testing.assert_allclose(zp[unique], z[unique], rtol=1e-6)
  np.testing.assert_allclose(zp[:, :4], z[:, :4], rtol=1e-6)
  np.testing.assert_allclose(_rejector(zp[unique]), _rejector(z[unique]),
                             rtol=1e-6, atol=1e-7)


def test_rejector_features_nan_rows_and_leading_dims():
  p = jnp.full((2, 3, 4), 0.25)
  mu = jnp.full((2, 3, 4), 0.5).at[0, 1, 2].set(jnp.nan)
  var = jnp.full((2, 3, 4), 0.01)
  z = jax.jit(experts.ea_rejector_features)(p, mu, var)
  assert z.shape == (2, 3, 6)
  assert np.isnan(z[0, 1]).all()
  assert np.isfinite(np.delete(np.asarray(z).reshape(6, 6), 1, axis=0)).all()


def test_ea_rejector_shapes_and_bad_input():
  model = models.EARejector(hidden_sizes=(), rngs=nnx.Rngs(0))
  assert model(jnp.ones((6,))).shape == ()
  assert model(jnp.ones((2, 5, 6))).shape == (2, 5)
  with pytest.raises(ValueError, match=r"\[\.\.\., 6\]"):
    model(jnp.ones((3, 5)))
  with pytest.raises(ValueError, match="hidden_sizes"):
    models.EARejector(hidden_sizes=(0,), rngs=nnx.Rngs(0))
  default = models.EARejector(rngs=nnx.Rngs(0))
  assert len(default.hidden) == 5 and default.head.in_features == 256


def test_posterior_nan_under_jit_for_bad_counts():
  post = jax.jit(experts.beta_posterior)(jnp.array([3, -1, 2]),
                                         jnp.array([2, 4, 4]))
  assert np.isnan(post.mean[:2]).all() and np.isnan(post.var[:2]).all()
  np.testing.assert_allclose(post.mean[2], 0.5)
  a0, _ = jax.jit(lambda a: experts.prior_from_self_assessment(
      a, 1.0, strength=2.0))(jnp.array([1.5, 0.5]))
  assert np.isnan(a0[0]) and a0[1] == 2.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(correct=np.array([-1]), total=np.array([2])), "`correct`.*non-neg"),
    (dict(correct=np.array([1]), total=np.array([-2])), "`total`.*non-neg"),
    (dict(correct=np.array([3]), total=np.array([2])), "`correct` must not"),
    (dict(correct=np.array([1]), total=np.array([2]), prior_a=0.0),
     "`prior_a`.*positive"),
    (dict(correct=np.array([1]), total=np.array([2]), prior_b=-1.0),
     "`prior_b`.*positive"),
    (dict(correct=np.array([1, 2]), total=np.array([2, 2, 2])), "broadcast"),
])
def test_beta_posterior_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    experts.beta_posterior(**kwargs)


@pytest.mark.parametrize("acc, conf, s, match", [
    (1.5, 0.5, 1.0, "`accuracy`"),
    (0.5, -0.1, 1.0, "`confidence`"),
    (0.5, 0.5, 0.0, "`strength`.*positive"),
    (0.5, 0.5, -2.0, "`strength`.*positive"),
    (np.nan, 0.5, 1.0, "`accuracy`.*NaN"),
])
def test_prior_bad_input(acc, conf, s, match):
  with pytest.raises(ValueError, match=match):
    experts.prior_from_self_assessment(acc, conf, strength=s)


def test_counts_and_features_bad_input():
  ctx = _context([0, 3], [0, 0], [True, True])
  with pytest.raises(ValueError, match="context.labels"):
    experts.class_counts(ctx, num_classes=2)
  # A masked placeholder label is fine.
  experts.class_counts(_context([0, -1], [0, -1], [True, False]),
                       num_classes=2)
  with pytest.raises(TypeError, match="num_classes"):
    experts.class_counts(ctx, num_classes=2.0)
  p = jnp.full((2, 3), 1 / 3)
  with pytest.raises(ValueError, match="`mean` must have shape"):
    experts.ea_rejector_features(p, jnp.zeros((2, 4)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="broadcast"):
    experts.ea_rejector_features(p, jnp.zeros((3, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="`var`"):
    experts.ea_rejector_features(p, jnp.zeros((2, 3)),
                                 jnp.full((2, 3), 2.0))
  with pytest.raises(ValueError, match="class_probs"):
    experts.ea_rejector_features(jnp.ones((2, 3)), jnp.zeros((2, 3)),
                                 jnp.zeros((2, 3)))
  with pytest.raises(TypeError, match="key"):
    experts.expertise_class(jnp.zeros(3), key=0)


def test_rejector_features_broadcast_experts_against_queries():
  rng = np.random.default_rng(2)
  p = rng.dirichlet(np.ones(4), size=5).astype(np.float32)  # [B, K]
  mu = rng.uniform(size=(3, 1, 4)).astype(np.float32)  # [J, 1, K]
  var = rng.uniform(0, 0.1, size=(3, 1, 4)).astype(np.float32)
  z = experts.ea_rejector_features(p, mu, var)
  assert z.shape == (3, 5, 6)
  for j in range(3):
    np.testing.assert_allclose(
        z[j], experts.ea_rejector_features(p, np.repeat(mu[j], 5, 0),
                                           np.repeat(var[j], 5, 0)))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 10**7), frac=st.floats(0.0, 1.0),
       prior_a=st.floats(0.01, 100.0), prior_b=st.floats(0.01, 100.0))
def test_posterior_within_prior_bound_of_empirical_accuracy(n, frac, prior_a,
                                                            prior_b):
  # Prop. 1, deterministic part: for any fixed prior the posterior mean is
  # within max(a0, b0) / (a0 + b0 + n) of the empirical accuracy c / n and
  # the variance at most 1 / (4 (a0 + b0 + n + 1)); both vanish as the
  # context grows, so the mean converges wherever c / n does.
  c = round(frac * n)
  with jax.enable_x64(True):
    post = experts.beta_posterior(np.float64(c), np.float64(n),
                                  prior_a=np.float64(prior_a),
                                  prior_b=np.float64(prior_b))
    mean, var = float(post.mean), float(post.var)
  s = prior_a + prior_b + n
  if n:
    assert abs(mean - c / n) <= max(prior_a, prior_b) / s * (1 + 1e-12)
  assert 0 < var <= 1 / (4 * (s + 1)) * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(num_classes=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_prop3_relabelled_context_sets_and_classifier(num_classes, seed):
  # Prop. 3 end to end: rename class k as perm[k] in the experts' context
  # sets (labels and answers) and in the classifier's output; the counts,
  # posteriors, features and the rejector's deferral logit follow the
  # renaming and the deferral logit is unchanged.
  rng = np.random.default_rng(seed)
  shape = (4, 15)  # 4 experts, contexts of 15 slots
  labels = rng.integers(0, num_classes, shape)
  answers = np.where(rng.random(shape) < 0.6, labels,
                     rng.integers(0, num_classes, shape))
  mask = rng.random(shape) < 0.8
  logits = rng.normal(size=(5, num_classes)).astype(np.float32)
  perm = rng.permutation(num_classes)

  def deferral_logit(lab, ans, class_logits):
    ctx = _context(lab.astype(np.int32), ans.astype(np.int32), mask)
    correct, total = jax.vmap(
        lambda c: experts.class_counts(c, num_classes=num_classes))(ctx)
    post = jax.vmap(experts.beta_posterior)(correct, total)  # [J, K]
    z = experts.ea_rejector_features(jax.nn.softmax(class_logits),
                                     post.mean[:, None], post.var[:, None])
    return post.mean, z, _rejector(z)  # [J, K], [J, B, 6], [J, B]

  moved_logits = np.empty_like(logits)
  moved_logits[:, perm] = logits
  mean, z, g = deferral_logit(labels, answers, logits)
  mean_p, z_p, g_p = deferral_logit(perm[labels], perm[answers],
                                    moved_logits)
  np.testing.assert_allclose(np.asarray(mean_p)[:, perm], mean, rtol=1e-6)
  mean = np.asarray(mean)
  unique = (mean == mean.max(-1, keepdims=True)).sum(-1) == 1  # [J]
  np.testing.assert_allclose(z_p[unique], z[unique], rtol=1e-6)
  np.testing.assert_allclose(g_p[unique], g[unique], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(correct=np.array([2, 3]), total=2), ValueError,
     "`correct` must not exceed `total`"),
    (dict(correct=np.array([1]), total=np.array([np.inf])), ValueError,
     "`total` contains NaN or inf"),
    (dict(correct=np.array([np.nan]), total=np.array([2.0])), ValueError,
     "`correct` contains NaN"),
    (dict(correct=np.array([1]), total=np.array([2]), prior_a=np.nan),
     ValueError, "`prior_a` contains NaN"),
    (dict(correct=np.array([True]), total=np.array([2])), TypeError,
     "`correct`"),
])
def test_beta_posterior_more_bad_input(kwargs, error, match):
  with pytest.raises(error, match=match):
    experts.beta_posterior(**kwargs)


@pytest.mark.parametrize("acc, conf, s, match", [
    (-0.1, 0.5, 1.0, "`accuracy` must lie in"),
    (0.5, 1.2, 1.0, "`confidence` must lie in"),
    (0.5, np.nan, 1.0, "`confidence` contains NaN"),
    (0.5, 0.5, np.inf, "`strength` contains NaN or inf"),
    (0.5, 0.5, np.nan, "`strength` contains NaN"),
    (np.array([0.5, 0.6]), np.array([0.5, 0.5, 0.5]), 1.0, "broadcast"),
])
def test_prior_more_bad_input(acc, conf, s, match):
  with pytest.raises(ValueError, match=match):
    experts.prior_from_self_assessment(acc, conf, strength=s)
