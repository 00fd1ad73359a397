"""Simulated experts, per-class context sets and priors of the EA-L2D experiments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import experts


def test_overlap_experts_are_oracles_on_expertise_and_match_the_accuracy():
  k, n = 5, 20000
  labels = jnp.asarray(np.arange(n) % k, jnp.int32)
  mask = experts.expertise_mask([[0, 3], [1, 1]], num_classes=k)
  np.testing.assert_array_equal(mask, [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
  answers = np.asarray(experts.overlap_experts(
      jax.random.key(0), labels, num_classes=k, expertise=mask,
      overlap=jnp.array([0.2, 0.8])))
  right = answers == np.asarray(labels)[:, None]
  want = experts.true_accuracy(mask, overlap=np.array([0.2, 0.8]))
  np.testing.assert_allclose(want[0], [1, .36, .36, 1, .36])
  for j in range(2):
    for c in range(k):
      acc = right[np.asarray(labels) == c, j].mean()
      if mask[j, c]:
        assert acc == 1.0
      else:
        assert abs(acc - want[j, c]) < 0.025, (j, c, acc)
  # Wrong answers are uniform over all K labels (the true one included).
  wrong = answers[~right[:, 0] & ~mask[0][np.asarray(labels)], 0]
  assert set(np.unique(wrong)) <= set(range(k))


def test_expert_j_uses_fold_in_and_does_not_depend_on_j_count():
  labels = jnp.asarray(np.arange(300) % 4, jnp.int32)
  key = jax.random.key(3)
  three = experts.expertise_mask([0, 1, 2], num_classes=4)
  a3 = experts.overlap_experts(key, labels, num_classes=4, expertise=three,
                               overlap=0.5)
  a1 = experts.overlap_experts(key, labels, num_classes=4,
                               expertise=three[:1], overlap=0.5)
  np.testing.assert_array_equal(a3[:, :1], a1)
  p3 = experts.per_class_accuracy_experts(
      key, labels, num_classes=4, expertise_class=[2, 0, 1],
      accuracy_expertise=0.9, accuracy_other=0.2)
  p1 = experts.per_class_accuracy_experts(
      key, labels, num_classes=4, expertise_class=[2],
      accuracy_expertise=0.9, accuracy_other=0.2)
  np.testing.assert_array_equal(p3[:, :1], p1)


def test_per_class_accuracy_is_exact_in_expectation():
  n, k = 30000, 4
  labels = jnp.asarray(np.arange(n) % k, jnp.int32)
  a = np.asarray(experts.per_class_accuracy_experts(
      jax.random.key(1), labels, num_classes=k, expertise_class=[1],
      accuracy_expertise=0.3, accuracy_other=0.1))[:, 0]
  y = np.asarray(labels)
  assert abs((a[y == 1] == 1).mean() - 0.3) < 0.02
  assert abs((a[y != 1] == y[y != 1]).mean() - 0.1) < 0.01


def test_split_and_sample_expertise():
  ids, oods = experts.split_classes(10, num_id=5)
  np.testing.assert_array_equal(ids, np.arange(5))
  np.testing.assert_array_equal(oods, np.arange(5, 10))
  ri, ro = experts.split_classes(10, num_id=4, key=jax.random.key(0))
  assert sorted(ri.tolist() + ro.tolist()) == list(range(10))
  assert ri.size == 4
  m = experts.sample_expertise(jax.random.key(0), oods, num_experts=6,
                               classes_per_expert=3, num_classes=10)
  assert m.shape == (6, 10)
  np.testing.assert_array_equal(m.sum(1), 3)
  assert not m[:, :5].any()
  one = experts.sample_expertise(jax.random.key(0), oods, num_experts=1,
                                 classes_per_expert=3, num_classes=10)
  np.testing.assert_array_equal(one[0], m[0])


def test_class_context_has_the_requested_counts_per_class():
  rng = np.random.default_rng(0)
  n, k = 200, 5
  labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  answers = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  feats = jnp.arange(n, dtype=jnp.float32)[:, None]
  counts = experts.type_counts([2], experts.LCB_EXPERT_TYPES["OL-LU"],
                               num_classes=k)[0]
  np.testing.assert_array_equal(counts, [5, 5, 20, 5, 5])

  @jax.jit
  def draw(key, c):
    return experts.sample_class_context(key, feats, labels, answers,
                                        counts=c, capacity=48,
                                        num_classes=k)
  for seed in range(3):
    ctx = draw(jax.random.key(seed), jnp.asarray(counts))
    got = np.bincount(np.asarray(ctx.labels)[np.asarray(ctx.mask)],
                      minlength=k)
    np.testing.assert_array_equal(got, counts)
    assert np.asarray(ctx.mask).sum() == 40
    assert np.all(np.asarray(ctx.mask)[:40])
    idx = np.asarray(ctx.features)[np.asarray(ctx.mask), 0].astype(int)
    assert np.unique(idx).size == 40  # without replacement
    np.testing.assert_array_equal(np.asarray(labels)[idx],
                                  np.asarray(ctx.labels)[:40])
    np.testing.assert_array_equal(np.asarray(answers)[idx],
                                  np.asarray(ctx.answers)[:40])
    correct, total = experts.class_counts(ctx, num_classes=k)
    np.testing.assert_array_equal(total, counts)
  # A class with fewer pool points than asked gives what it has.
  small = jnp.asarray([0] * 3 + [1] * 10, jnp.int32)
  ctx = experts.sample_class_context(jax.random.key(0), jnp.zeros((13, 1)),
                                     small, small, counts=jnp.array([5, 2]),
                                     capacity=8, num_classes=2)
  np.testing.assert_array_equal(
      np.bincount(np.asarray(ctx.labels)[np.asarray(ctx.mask)]), [3, 2])


def test_self_assessed_priors():
  acc = np.array([0.36, 0.36, 0.36, 1.0])
  a0, b0 = experts.self_assessed_prior("accurate", acc, strength=10.0)
  np.testing.assert_allclose(a0, 1 + 10 * acc, rtol=1e-6)
  np.testing.assert_allclose(b0, 1 + 10 * (1 - acc), rtol=1e-6)
  a0, b0 = experts.self_assessed_prior("uninformative", acc, strength=10.0)
  np.testing.assert_array_equal(a0, 1.0)
  np.testing.assert_array_equal(b0, 1.0)
  a0, b0 = experts.self_assessed_prior("misspecified", acc, strength=10.0,
                                       wrong_class=0)
  np.testing.assert_allclose(a0, [11, 4.6, 4.6, 4.6], rtol=1e-6)
  post = experts.beta_posterior(0, 0, prior_a=a0, prior_b=b0)
  assert int(experts.expertise_class(post.mean)) == 0


def test_bad_input_names_the_argument():
  with pytest.raises(ValueError, match="expertise_classes"):
    experts.expertise_mask([0, 7], num_classes=5)
  with pytest.raises(TypeError, match="expertise_classes"):
    experts.expertise_mask([0.0, 1.0], num_classes=5)
  with pytest.raises(ValueError, match="overlap"):
    experts.overlap_experts(jax.random.key(0), jnp.zeros(3, jnp.int32),
                            num_classes=3,
                            expertise=experts.expertise_mask([0],
                                                             num_classes=3),
                            overlap=1.5)
  with pytest.raises(ValueError, match=r"expertise. must have shape \[J, K=4\]"):
    experts.overlap_experts(jax.random.key(0), jnp.zeros(3, jnp.int32),
                            num_classes=4,
                            expertise=experts.expertise_mask([0],
                                                             num_classes=3),
                            overlap=0.5)
  with pytest.raises(ValueError, match="num_id"):
    experts.split_classes(4, num_id=4)
  with pytest.raises(ValueError, match="classes_per_expert"):
    experts.sample_expertise(jax.random.key(0), [1, 2], num_experts=1,
                             classes_per_expert=3, num_classes=4)
  with pytest.raises(ValueError, match="accuracy_other"):
    experts.per_class_accuracy_experts(
        jax.random.key(0), jnp.zeros(3, jnp.int32), num_classes=3,
        expertise_class=[0], accuracy_expertise=0.9, accuracy_other=-0.1)
  with pytest.raises(ValueError, match="counts"):
    experts.sample_class_context(jax.random.key(0), jnp.zeros((6, 1)),
                                 jnp.zeros(6, jnp.int32),
                                 jnp.zeros(6, jnp.int32),
                                 counts=jnp.array([-1, 2]), capacity=4,
                                 num_classes=2)
  with pytest.raises(ValueError, match="above `capacity`"):
    experts.sample_class_context(jax.random.key(0), jnp.zeros((6, 1)),
                                 jnp.zeros(6, jnp.int32),
                                 jnp.zeros(6, jnp.int32),
                                 counts=jnp.array([3, 2]), capacity=4,
                                 num_classes=2)
  with pytest.raises(ValueError, match="wrong_class"):
    experts.self_assessed_prior("misspecified", [0.5, 1.0], strength=2.0)
  with pytest.raises(ValueError, match="kind"):
    experts.self_assessed_prior("vague", [0.5, 1.0], strength=2.0)
  with pytest.raises(ValueError, match="strength"):
    experts.self_assessed_prior("accurate", [0.5, 1.0], strength=0.0)
  with pytest.raises(ValueError, match="accuracy"):
    experts.self_assessed_prior("accurate", [0.5, 1.5], strength=1.0)
