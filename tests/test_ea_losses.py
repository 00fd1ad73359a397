"""EA-LCE loss against a float64 numpy reference; gradients; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from l2d_jax import experts
from l2d_jax import losses


def _reference(g, g_def, y, mu, sd, lam, weighting):
  """Plain float64 loop."""
  out = np.zeros(len(y))
  for i in range(len(y)):
    z = np.append(g[i], g_def[i]).astype(np.float64)
    log_q = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
    k_star = int(np.argmax(mu[i]))
    hit = float(y[i] == k_star)
    w = {"lcb": hit * max(0.0, mu[i, y[i]] - lam * sd[i, y[i]]),
         "mean": hit * mu[i, y[i]],
         "binary": hit,
         "none": 0.0}[weighting]
    out[i] = -log_q[y[i]] - w * log_q[-1]
  return out


def _inputs(seed, n=6, k=4):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(n, k)) * 3
  g_def = rng.normal(size=n) * 3
  mu = rng.uniform(0.05, 0.95, size=(n, k))
  sd = rng.uniform(0.0, 0.3, size=(n, k))
  # Half of the labels on the expertise class, so every weighting is active.
  y = np.where(np.arange(n) % 2 == 0, mu.argmax(-1), rng.integers(0, k, n))
  return g, g_def, y.astype(np.int32), mu, sd


@pytest.mark.parametrize("weighting", losses.EA_WEIGHTINGS)
def test_loss_matches_numpy_float64(weighting):
  g, g_def, y, mu, sd = _inputs(0)
  with jax.enable_x64(True):
    got = jax.jit(lambda *a: losses.ea_lce_loss(
        *a, lcb_lambda=0.7, weighting=weighting))(g, g_def, y, mu, sd)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, _reference(g, g_def, y, mu, sd, 0.7,
                                               weighting), rtol=1e-12)


@pytest.mark.parametrize("weighting", losses.EA_WEIGHTINGS)
def test_gradients_finite_and_checked(weighting):
  g, g_def, y, mu, sd = _inputs(1, n=3, k=3)
  with jax.enable_x64(True):
    def f(g, g_def):
      return losses.ea_lce_loss(g, g_def, y, mu, sd,
                                weighting=weighting).sum()
    check_grads(f, (g, g_def), order=2, modes=["rev"], atol=1e-5, rtol=1e-5)
    # No gradient through the weight (constants of the loss).
    dmu = jax.grad(lambda m: losses.ea_lce_loss(
        g, g_def, y, m, sd, weighting=weighting).sum())(mu)
    np.testing.assert_array_equal(dmu, 0)


@pytest.mark.parametrize("weighting", losses.EA_WEIGHTINGS)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_finite_at_extreme_logits(weighting, scale):
  g, g_def, y, mu, sd = _inputs(2)
  g = np.sign(g) * scale
  g_def = np.full_like(g_def, -scale)
  g, g_def, mu, sd = (np.asarray(a, np.float32) for a in (g, g_def, mu, sd))
  loss, grads = jax.jit(jax.value_and_grad(
      lambda a, b: losses.ea_lce_loss(a, b, y, mu, sd,
                                      weighting=weighting).sum(),
      argnums=(0, 1)))(g, g_def)
  assert np.isfinite(loss)
  assert all(np.isfinite(x).all() for x in grads)
  # -inf deferral logit with weight 0 stays finite too.
  l = losses.ea_lce_loss(jnp.zeros((1, 2)), jnp.array([-jnp.inf]),
                         jnp.array([0]), jnp.array([[0.5, 0.9]]),
                         jnp.array([[0.1, 0.1]]), weighting=weighting)
  assert np.isfinite(l).all()


def test_weights_by_hand_and_leading_dims():
  mu = jnp.array([[0.5, 0.9, 0.2], [0.5, 0.9, 0.2]])
  sd = jnp.array([[0.1, 0.3, 0.1], [0.1, 0.3, 0.1]])
  y = jnp.array([1, 0])
  expect = {"lcb": [0.6, 0.0], "mean": [0.9, 0.0], "binary": [1.0, 0.0],
            "none": [0.0, 0.0]}
  for weighting, want in expect.items():
    w = losses.ea_deferral_weight(y, mu, sd, weighting=weighting)
    np.testing.assert_allclose(w, want, rtol=1e-6)
  # LCB clipped at zero.
  w = losses.ea_deferral_weight(y, mu, sd, lcb_lambda=4.0)
  np.testing.assert_allclose(w, [0.0, 0.0])
  # [2, 3] leading dims = vmap over the flat batch.
  g, g_def, yy, m, s = _inputs(3, n=6, k=4)
  flat = losses.ea_lce_loss(g, g_def, yy, m, s)
  batched = jax.vmap(losses.ea_lce_loss)(
      g.reshape(2, 3, 4), g_def.reshape(2, 3), yy.reshape(2, 3),
      m.reshape(2, 3, 4), s.reshape(2, 3, 4))
  np.testing.assert_allclose(batched.reshape(-1), flat, rtol=1e-6)
  single = losses.ea_lce_loss(g[0], g_def[0], yy[0], m[0], s[0])
  assert single.shape == ()
  np.testing.assert_allclose(single, flat[0], rtol=1e-6)


def test_where_masks_padding():
  g, g_def, y, mu, sd = _inputs(4, n=4)
  g = g.astype(np.float32)
  g[3] = np.nan
  y[3] = -1
  where = np.array([True, True, True, False])
  loss, grad = jax.value_and_grad(lambda a: losses.ea_lce_loss(
      a, g_def, y, mu, sd, where=where).sum())(g)
  assert np.isfinite(loss) and np.isfinite(grad).all()
  np.testing.assert_array_equal(grad[3], 0)


def test_key_tie_break_matches_features():
  mu = jnp.full((200, 3), 0.5)
  key = jax.random.key(3)
  y = jnp.zeros(200, jnp.int32)
  w = losses.ea_deferral_weight(y, mu, jnp.zeros((200, 3)),
                                weighting="binary", key=key)
  k = experts.expertise_class(mu, key=key)
  np.testing.assert_array_equal(w, (k == 0).astype(np.float32))
  assert 0 < float(w.sum()) < 200


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weighting="lcbx"), ValueError, "weighting"),
    (dict(lcb_lambda=-1.0), ValueError, "lcb_lambda"),
    (dict(lcb_lambda=np.nan), ValueError, "lcb_lambda"),
    (dict(labels=np.array([0, 5])), ValueError, r"`labels` must lie in \[0, 3\)"),
    (dict(labels=np.array([0.0, 1.0])), TypeError, "labels"),
    (dict(expert_mean=np.full((2, 3), 1.5)), ValueError, "expert_mean"),
    (dict(expert_std=np.full((2, 3), -0.1)), ValueError, "expert_std"),
    (dict(expert_std=np.zeros((2, 4))), ValueError, "expert_std"),
    (dict(defer_logit=np.zeros(3)), ValueError, "defer_logit"),
])
def test_bad_input(kwargs, error, match):
  args = dict(class_logits=np.zeros((2, 3), np.float32),
              defer_logit=np.zeros(2, np.float32),
              labels=np.array([0, 1]),
              expert_mean=np.full((2, 3), 0.5),
              expert_std=np.full((2, 3), 0.1))
  opts = {k: kwargs.pop(k) for k in ("weighting", "lcb_lambda")
          if k in kwargs}
  args.update(kwargs)
  with pytest.raises(error, match=match):
    losses.ea_lce_loss(**args, **opts)


def test_traced_lambda_sweep_compiles_once():
  g, g_def, y, mu, sd = _inputs(5)
  fn = jax.jit(jax.vmap(lambda lam: losses.ea_lce_loss(
      g, g_def, y, mu, sd, lcb_lambda=lam)))
  lams = jnp.array([0.0, 0.5, 1.0])
  out = fn(lams)
  for i, lam in enumerate([0.0, 0.5, 1.0]):
    np.testing.assert_allclose(
        out[i], _reference(g, g_def, y, mu, sd, lam, "lcb"), rtol=1e-5)


@pytest.mark.parametrize("weighting", losses.EA_WEIGHTINGS)
def test_nan_profile_gives_nan_loss_under_jit(weighting):
  # beta_posterior of invalid counts is NaN under jit; the loss must not
  # turn that into a silent "never defer" weight of 0.
  post = jax.jit(experts.beta_posterior)(jnp.array([[3, 1], [1, 1]]),
                                         jnp.array([[2, 4], [2, 4]]))
  fn = jax.jit(lambda m, s, where: losses.ea_lce_loss(
      jnp.zeros((2, 2)), jnp.zeros(2), jnp.array([1, 0]), m, s,
      weighting=weighting, where=where))
  loss = fn(post.mean, jnp.sqrt(post.var), None)
  assert np.isnan(loss[0]) == (weighting != "none")
  assert np.isfinite(loss[1])
  w = losses.ea_deferral_weight(jnp.array([1, 0]), post.mean,
                                jnp.sqrt(post.var), weighting=weighting)
  assert np.isnan(w[0]) == (weighting != "none")
  # A masked (padding) row may hold NaN.
  masked = fn(post.mean, jnp.sqrt(post.var), jnp.array([False, True]))
  np.testing.assert_array_equal(masked[0], 0)
  np.testing.assert_allclose(masked[1], loss[1])


@settings(max_examples=25, deadline=None)
@given(num_classes=st.integers(2, 6), seed=st.integers(0, 2**31 - 1),
       weighting=st.sampled_from(losses.EA_WEIGHTINGS))
def test_loss_invariant_to_consistent_class_relabelling(num_classes, seed,
                                                        weighting):
  # Prop. 3 for the loss: renaming class k as perm[k] in the logits, the
  # labels and the profile leaves every example's loss unchanged.
  g, g_def, y, mu, sd = _inputs(seed, n=8, k=num_classes)
  perm = np.random.default_rng(seed).permutation(num_classes)
  moved = [np.empty_like(a) for a in (g, mu, sd)]
  for new, old in zip(moved, (g, mu, sd)):
    new[:, perm] = old
  with jax.enable_x64(True):
    base = losses.ea_lce_loss(g, g_def, y, mu, sd, weighting=weighting)
    got = losses.ea_lce_loss(moved[0], g_def, perm[y].astype(np.int32),
                             moved[1], moved[2], weighting=weighting)
  np.testing.assert_allclose(got, base, rtol=1e-12)
