"""EA-L2D pieces composed in one jitted training step (tiny shapes)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax import losses
from l2d_jax import models


def test_jitted_step_resamples_contexts_per_expert():
  num_classes, num_experts, pool, capacity = 3, 2, 12, 6
  rng = np.random.default_rng(0)
  pool_x = jnp.zeros((pool, 1))
  pool_y = jnp.asarray(np.arange(pool) % num_classes, jnp.int32)
  # Expert j is right on class j only.
  answers = jnp.stack([jnp.where(pool_y == j, pool_y, (pool_y + 1) % 3)
                       for j in range(num_experts)])
  x = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  y = jnp.asarray(rng.integers(0, num_classes, 8), jnp.int32)
  classifier = nnx.Linear(4, num_classes, rngs=nnx.Rngs(0))
  rejector = models.EARejector(hidden_sizes=(8,), rngs=nnx.Rngs(1))
  opt = nnx.Optimizer((classifier, rejector), optax.adam(1e-2),
                      wrt=nnx.Param)

  @nnx.jit
  @chex.assert_max_traces(n=1)
  def step(classifier, rejector, opt, key, size):
    keys = jax.random.split(key, num_experts + 1)
    ctx = jax.vmap(lambda k, a: experts.sample_context(
        k, pool_x, pool_y, a, size=size, capacity=capacity,
        num_classes=num_classes, balanced=True))(keys[1:], answers)
    correct, total = experts.class_counts(ctx, num_classes=num_classes)
    post = experts.beta_posterior(correct, total)  # [J, K]

    def loss_fn(models_):
      clf, rej = models_
      logits = clf(x)  # [B, K]
      probs = jax.nn.softmax(logits)
      mean = jnp.broadcast_to(post.mean[:, None],
                              (num_experts,) + probs.shape)
      var = jnp.broadcast_to(post.var[:, None], mean.shape)
      z = experts.ea_rejector_features(probs, mean, var, key=keys[0])
      g_def = rej(z)  # [J, B]
      # One loss term per (expert, query): the classifier's logits repeat.
      loss = losses.ea_lce_loss(jnp.broadcast_to(logits, mean.shape), g_def,
                                jnp.broadcast_to(y, g_def.shape), mean,
                                jnp.sqrt(var), key=keys[0])
      return loss.mean(), (logits, g_def)

    (loss, (logits, g_def)), grads = nnx.value_and_grad(
        loss_fn, has_aux=True)((classifier, rejector))
    opt.update((classifier, rejector), grads)
    decisions = deferral.defer_by_priority(
        deferral.expert_priorities(logits, g_def.T))
    return loss, decisions, total

  for i, size in enumerate([3, 6, 0]):
    loss, decisions, total = step(classifier, rejector, opt,
                                  jax.random.key(i), jnp.int32(size))
    assert np.isfinite(loss)
    assert decisions.shape == (8,)
    assert set(np.asarray(decisions).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(np.asarray(total).sum(-1),
                                  [size] * num_experts)
