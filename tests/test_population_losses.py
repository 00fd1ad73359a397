"""L2D-Pop loss (J = 1), FixMatch consistency, deferral priority, EMA recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from l2d_jax import deferral
from l2d_jax import losses


def _numpy_l2d_pop(logits, labels, answers):
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  log_q = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  n = np.arange(len(labels))
  return -log_q[n, labels] - (answers == labels) * log_q[:, -1]


def test_population_loss_equals_j1_loss_and_numpy():
  rng = np.random.default_rng(0)
  k, n = 5, 64
  logits = rng.normal(scale=3.0, size=(n, k + 1)).astype(np.float32)
  logits[0] = [40.0, -40.0, 0.0, 3.0, 1.0, -30.0]  # extreme logits
  labels = rng.integers(0, k, n)
  answers = np.where(rng.random(n) < 0.5, labels, rng.integers(0, k, n))
  got = jax.jit(losses.population_l2d_loss)(logits, labels, answers)
  np.testing.assert_allclose(got, _numpy_l2d_pop(logits, labels, answers),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(
      got, losses.multi_expert_softmax_loss(logits, labels,
                                            answers[:, None]))
  # Per-example gradients by vmap over single examples.
  grads = jax.vmap(jax.grad(losses.population_l2d_loss))(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(answers))
  assert grads.shape == logits.shape and np.isfinite(grads).all()


def test_population_loss_where_and_bad_input():
  logits = jnp.array([[1.0, 0.0, 2.0], [jnp.nan, 0.0, 0.0]])
  labels = jnp.array([0, -1])
  answers = jnp.array([0, 7])
  where = jnp.array([True, False])
  loss = losses.population_l2d_loss(logits, labels, answers, where=where)
  assert loss[1] == 0 and np.isfinite(loss[0])
  g = jax.grad(lambda z: losses.population_l2d_loss(
      z, labels, answers, where=where).sum())(logits)
  assert np.isfinite(g).all() and (g[1] == 0).all()
  with pytest.raises(ValueError, match="answers"):
    losses.population_l2d_loss(logits, jnp.array([0, 1]), jnp.array([0, 2]))
  with pytest.raises(ValueError, match="answers"):
    losses.population_l2d_loss(logits, jnp.array([0, 1]), jnp.array([[0, 1]]))
  with pytest.raises(TypeError, match="answers"):
    losses.population_l2d_loss(logits, jnp.array([0, 1]),
                               jnp.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="labels"):
    losses.population_l2d_loss(logits, jnp.array([0, 2]), jnp.array([0, 1]))


def test_fixmatch_hand_made_batch():
  # Confidences: 0.99991 (>= .95), 0.5 (< .95), 0.9526 (>= .95), 0.9.
  weak = jnp.array([
      [10.0, 0.0, 0.0],
      [0.0, 0.0, -jnp.inf],
      [0.0, 3.0, -jnp.inf],
      [0.0, 0.0, np.log(0.9 / 0.1) + np.log(2.0)],
  ])
  strong = jnp.array([
      [0.0, 1.0, 2.0],
      [5.0, 0.0, 0.0],
      [1.0, 2.0, 1.0],
      [0.0, 0.0, 0.0],
  ])
  loss, mask = losses.fixmatch_consistency(weak, strong, threshold=0.95)
  np.testing.assert_array_equal(mask, [True, False, True, False])
  s = np.asarray(strong, np.float64)
  log_q = s - np.log(np.exp(s).sum(-1, keepdims=True))
  expected = np.array([-log_q[0, 0], 0.0, -log_q[2, 1], 0.0])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # A lower threshold keeps the 0.9 row, pseudo label = argmax = class 2.
  loss, mask = losses.fixmatch_consistency(weak, strong, threshold=0.89)
  np.testing.assert_array_equal(mask, [True, False, True, True])
  np.testing.assert_allclose(loss[3], np.log(3.0), rtol=1e-6)
  # Confidence exactly at the threshold is kept (>=); ties pick class 0.
  loss, mask = losses.fixmatch_consistency(weak[1:2], strong[1:2],
                                           threshold=0.5)
  assert bool(mask[0])
  np.testing.assert_allclose(loss[0], -log_q[1, 0], rtol=1e-6)


def test_fixmatch_gradient_only_through_strong_view():
  weak = jnp.array([[6.0, 0.0], [0.1, 0.0]])
  strong = jnp.array([[0.0, 1.0], [0.0, 1.0]])

  def total(w, s):
    return losses.fixmatch_consistency(w, s, threshold=0.95)[0].sum()

  g_weak, g_strong = jax.grad(total, argnums=(0, 1))(weak, strong)
  np.testing.assert_array_equal(g_weak, 0.0)  # pseudo label is a target
  np.testing.assert_array_equal(g_strong[1], 0.0)  # not confident
  p = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
  np.testing.assert_allclose(g_strong[0], p - np.array([1.0, 0.0]),
                             rtol=1e-6)


def test_fixmatch_jit_vmap_and_bad_input():
  weak = jnp.zeros((2, 4, 3))
  fn = jax.jit(jax.vmap(lambda w, s: losses.fixmatch_consistency(
      w, s, threshold=0.3)))
  loss, mask = fn(weak, weak)
  assert loss.shape == (2, 4) and mask.all()
  np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)
  with pytest.raises(ValueError, match="strong_logits"):
    losses.fixmatch_consistency(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="threshold"):
    losses.fixmatch_consistency(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                                threshold=1.5)
  with pytest.raises(TypeError, match="weak_logits"):
    losses.fixmatch_consistency(jnp.zeros((2, 3), int), jnp.zeros((2, 3)))


def test_deferral_priority_matches_argmax_rule():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(100, 5)), jnp.float32)
  prio = deferral.deferral_priority(logits)
  expected = np.asarray(logits[:, 4] - logits[:, :4].max(-1))
  np.testing.assert_allclose(prio, expected, rtol=1e-6)
  decision = deferral.argmax_deferral(logits, num_experts=1)
  np.testing.assert_array_equal(decision == 1, prio > 0)
  # Ties go to the model; NaN rows stay NaN; J = 2 uses the best expert.
  tie = jnp.array([[1.0, 0.0, 1.0], [jnp.nan, 0.0, 1.0]])
  p = deferral.deferral_priority(tie)
  assert p[0] == 0 and np.isnan(p[1])
  two = deferral.deferral_priority(jnp.array([[1.0, 0.0, 3.0, 2.0]]),
                                   num_experts=2)
  np.testing.assert_allclose(two, [2.0])
  assert jax.jit(deferral.deferral_priority)(logits).shape == (100,)
  with pytest.raises(ValueError, match="logits"):
    deferral.deferral_priority(jnp.zeros((3, 1)))
  with pytest.raises(TypeError, match="num_experts"):
    deferral.deferral_priority(logits, num_experts=1.0)


def test_weight_ema_with_optax_incremental_update():
  # FixMatch keeps an EMA of the weights; optax.incremental_update serves:
  # ema <- (1 - step) * ema + step * params with step = 1 - decay.
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  ema = jax.tree.map(jnp.zeros_like, params)
  decay = 0.999
  new = optax.incremental_update(params, ema, step_size=1 - decay)
  for got, p in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
    np.testing.assert_allclose(got, (1 - decay) * np.asarray(p), rtol=1e-6)
