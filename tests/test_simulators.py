"""Tests for the keyed expert simulators."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from l2d_jax import experts

N = 20_000


def _assert_rate(testcase, hits, p, z=5.0):
  """Empirical rate within z binomial standard deviations of p."""
  hits = np.asarray(hits)
  n = hits.size
  sd = np.sqrt(max(p * (1 - p), 1e-12) / n)
  testcase.assertLessEqual(abs(hits.mean() - p), z * sd + 1e-12,
                           f"rate {hits.mean():.4f} vs {p:.4f} (n={n})")


def _labels(seed=0, num_classes=4):
  return np.random.default_rng(seed).integers(0, num_classes, N).astype(
      np.int32)


class SingleExpertTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_oracle_on_groups_random_elsewhere(self):
    k = 4
    labels = _labels(0, k)
    clusters = np.random.default_rng(1).integers(0, 4, N).astype(np.int32)
    mask = np.array([False, False, True, True])
    fn = self.variant(functools.partial(
        experts.oracle_expert, num_classes=k, oracle_groups=mask))
    preds = np.asarray(fn(jax.random.key(0), labels, groups=clusters))
    chex.assert_shape(preds, (N,))
    self.assertEqual(preds.dtype, jnp.int32)
    known = mask[clusters]
    np.testing.assert_array_equal(preds[known], labels[known])
    _assert_rate(self, preds[~known] == labels[~known], 1 / k)
    # Guesses are uniform over all K labels.
    for c in range(k):
      _assert_rate(self, preds[~known] == c, 1 / k)

  def test_groups_default_to_labels(self):
    labels = _labels(2, 5)
    mask = np.array([True, False, True, False, False])
    preds = np.asarray(experts.oracle_expert(
        jax.random.key(1), labels, num_classes=5, oracle_groups=mask))
    known = mask[labels]
    np.testing.assert_array_equal(preds[known], labels[known])
    _assert_rate(self, preds[~known] == labels[~known], 1 / 5)

  @parameterized.parameters(0.2, 0.5, 0.95)
  def test_noisy_expert_rates(self, p):
    k = 10
    labels = _labels(3, k)
    preds = experts.noisy_expert(jax.random.key(2), labels, num_classes=k,
                                 p_correct=p)
    # The random guess may hit the true label (as in the paper's code).
    _assert_rate(self, preds == labels, p + (1 - p) / k)
    exact = experts.noisy_expert(jax.random.key(2), labels, num_classes=k,
                                 p_correct=p, exclude_true_label=True)
    _assert_rate(self, exact == labels, p)

  def test_per_group_probabilities(self):
    k = 3
    labels = _labels(4, k)
    clusters = np.random.default_rng(5).integers(0, 4, N).astype(np.int32)
    p = np.array([0.0, 0.3, 0.8, 1.0])
    preds = np.asarray(experts.noisy_expert(
        jax.random.key(3), labels, num_classes=k, p_correct=p, groups=clusters,
        exclude_true_label=True))
    for g in range(4):
      hits = preds[clusters == g] == labels[clusters == g]
      _assert_rate(self, hits, p[g])

  def test_random_expert(self):
    labels = _labels(6, 4)
    preds = experts.random_expert(jax.random.key(4), labels, num_classes=4)
    _assert_rate(self, preds == labels, 0.25)
    self.assertEqual(set(np.unique(preds).tolist()), {0, 1, 2, 3})

  def test_keys_determine_output(self):
    labels = _labels(7, 4)
    f = functools.partial(experts.noisy_expert, labels=labels, num_classes=4,
                          p_correct=0.5)
    np.testing.assert_array_equal(f(jax.random.key(5)), f(jax.random.key(5)))
    self.assertFalse(np.array_equal(f(jax.random.key(5)),
                                    f(jax.random.key(6))))
    # Legacy uint32 keys work too.
    chex.assert_shape(f(jax.random.PRNGKey(0)), (N,))


class MultiExpertTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_noisy_experts_is_vmap_of_single(self):
    labels = _labels(8, 4)
    p = np.array([[0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.0, 0.0],
                  [0.95, 0.95, 0.0, 0.0]])
    clusters = np.random.default_rng(9).integers(0, 4, N).astype(np.int32)
    fn = self.variant(functools.partial(experts.noisy_experts, num_classes=4))
    key = jax.random.key(7)
    preds = np.asarray(fn(key, labels, p_correct=p, groups=clusters))
    chex.assert_shape(preds, (N, 3))
    for j in range(3):
      # Expert j is keyed by fold_in(key, j) (issue 6, randomness).
      single = experts.noisy_expert(jax.random.fold_in(key, j), labels,
                                    num_classes=4, p_correct=p[j],
                                    groups=clusters)
      np.testing.assert_array_equal(preds[:, j], single)
      for g in range(4):
        in_g = clusters == g
        _assert_rate(self, preds[in_g, j] == labels[in_g],
                     p[j, g] + (1 - p[j, g]) / 4)

  def test_experts_are_independent(self):
    labels = _labels(10, 10)
    preds = experts.noisy_experts(jax.random.key(8), labels, num_classes=10,
                                  p_correct=np.array([0.5, 0.5]))
    c0 = preds[:, 0] == labels
    c1 = preds[:, 1] == labels
    rate = 0.5 + 0.5 / 10
    _assert_rate(self, c0 & c1, rate * rate)

  def test_oracle_experts(self):
    labels = _labels(11, 10)
    mask = np.broadcast_to(np.arange(10) < 5, (4, 10))
    preds = np.asarray(experts.oracle_experts(
        jax.random.key(9), labels, num_classes=10, oracle_groups=mask))
    chex.assert_shape(preds, (N, 4))
    known = labels < 5
    np.testing.assert_array_equal(preds[known],
                                  np.broadcast_to(labels[known, None],
                                                  (known.sum(), 4)))
    _assert_rate(self, preds[~known] == labels[~known, None], 0.1)

  def test_specialised_experts(self):
    labels = _labels(12, 10)
    fn = jax.jit(experts.specialised_experts,
                 static_argnames=("num_classes", "num_experts"))
    preds = np.asarray(
        fn(jax.random.key(10), labels, num_classes=10, num_experts=5))
    chex.assert_shape(preds, (N, 5))
    for e in range(5):
      known = labels // 2 == e
      np.testing.assert_array_equal(preds[known, e], labels[known])
      _assert_rate(self, preds[~known, e] == labels[~known], 0.1)

  def test_specialised_masks(self):
    np.testing.assert_array_equal(
        experts.specialised_oracle_groups(3, 4, groups_per_expert=2),
        [[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]])
    with self.assertRaisesRegex(ValueError, "groups_per_expert"):
      experts.specialised_oracle_groups(2, 3, groups_per_expert=4)


class BadInputTest(parameterized.TestCase):

  def test_errors(self):
    key = jax.random.key(0)
    labels = np.array([0, 1, 2], np.int32)
    with self.assertRaisesRegex(ValueError, "p_correct.*\\[0, 1\\]"):
      experts.noisy_expert(key, labels, num_classes=3, p_correct=1.5)
    with self.assertRaisesRegex(ValueError, "labels.*\\[0, 3\\)"):
      experts.noisy_expert(key, np.array([0, 3], np.int32), num_classes=3,
                           p_correct=0.5)
    with self.assertRaisesRegex(TypeError, "labels.*integer"):
      experts.random_expert(key, labels.astype(np.float32), num_classes=3)
    with self.assertRaisesRegex(ValueError, "groups.*shape"):
      experts.noisy_expert(key, labels, num_classes=3, p_correct=[0.5, 0.5],
                           groups=np.array([0, 1], np.int32))
    with self.assertRaisesRegex(ValueError, "groups.*\\[0, 2\\)"):
      experts.noisy_expert(key, labels, num_classes=3, p_correct=[0.5, 0.5],
                           groups=np.array([0, 1, 2], np.int32))
    with self.assertRaisesRegex(ValueError, "num_classes=3 entries"):
      experts.noisy_expert(key, labels, num_classes=3, p_correct=[0.5, 0.5])
    with self.assertRaisesRegex(TypeError, "oracle_groups.*boolean"):
      experts.oracle_expert(key, labels, num_classes=3,
                            oracle_groups=np.array([1, 0, 1]))
    with self.assertRaisesRegex(ValueError, "oracle_groups.*J, G"):
      experts.oracle_experts(key, labels, num_classes=3,
                             oracle_groups=np.array([True, False, True]))
    with self.assertRaisesRegex(ValueError, "p_correct.*\\[J\\] or \\[J, G\\]"):
      experts.noisy_experts(key, labels, num_classes=3, p_correct=0.5)
    with self.assertRaisesRegex(TypeError, "num_classes"):
      experts.random_expert(key, labels, num_classes=3.0)


class ExpertKeysTest(parameterized.TestCase):
  """Expert j draws from fold_in(key, j): adding experts changes no answer."""

  def _labels_groups(self):
    labels = _labels(13, 6)[:500]
    clusters = np.random.default_rng(14).integers(0, 3, 500).astype(np.int32)
    return labels, clusters

  @parameterized.parameters(1, 2, 5)
  def test_noisy_experts_first_columns_do_not_depend_on_num_experts(self, j):
    labels, clusters = self._labels_groups()
    p = np.random.default_rng(15).uniform(size=(j + 3, 3)).astype(np.float32)
    key = jax.random.key(11)
    fn = jax.jit(experts.noisy_experts,
                 static_argnames=("num_classes", "exclude_true_label"))
    few = fn(key, labels, num_classes=6, p_correct=p[:j], groups=clusters)
    many = fn(key, labels, num_classes=6, p_correct=p, groups=clusters)
    chex.assert_shape(many, (500, j + 3))
    np.testing.assert_array_equal(few, many[:, :j])
    # The extra experts are not copies of the first ones.
    self.assertFalse(np.array_equal(many[:, j], many[:, 0]))

  @parameterized.parameters(True, False)
  def test_independent_of_num_experts_under_both_threefry_modes(
      self, partitionable):
    # With jax_threefry_partitionable=False, split(key, J)[j] depends on J;
    # fold_in(key, j) never does.
    labels, _ = self._labels_groups()
    key = jax.random.key(21)
    p = np.linspace(0.1, 0.9, 6)
    with jax.threefry_partitionable(partitionable):
      few = experts.noisy_experts(key, labels, num_classes=6, p_correct=p[:2])
      many = experts.noisy_experts(key, labels, num_classes=6, p_correct=p)
      single = experts.noisy_expert(jax.random.fold_in(key, 1), labels,
                                    num_classes=6, p_correct=p[1])
    np.testing.assert_array_equal(few, np.asarray(many)[:, :2])
    np.testing.assert_array_equal(single, np.asarray(many)[:, 1])

  def test_oracle_experts_columns_are_the_single_expert(self):
    labels, _ = self._labels_groups()
    mask = np.random.default_rng(16).random((5, 6)) < 0.5
    key = jax.random.key(12)
    many = np.asarray(experts.oracle_experts(key, labels, num_classes=6,
                                             oracle_groups=mask))
    few = experts.oracle_experts(key, labels, num_classes=6,
                                 oracle_groups=mask[:2])
    np.testing.assert_array_equal(few, many[:, :2])
    for j in range(5):
      np.testing.assert_array_equal(
          many[:, j],
          experts.oracle_expert(jax.random.fold_in(key, j), labels,
                                num_classes=6, oracle_groups=mask[j]))

  def test_specialised_experts_first_columns_do_not_depend_on_num_experts(
      self):
    labels, _ = self._labels_groups()
    key = jax.random.key(13)
    few = experts.specialised_experts(key, labels, num_classes=6,
                                      num_experts=2)
    many = experts.specialised_experts(key, labels, num_classes=6,
                                       num_experts=5)
    np.testing.assert_array_equal(few, np.asarray(many)[:, :2])

  def test_legacy_uint32_keys_follow_the_same_rule(self):
    labels, _ = self._labels_groups()
    key = jax.random.PRNGKey(3)
    many = experts.noisy_experts(key, labels, num_classes=6,
                                 p_correct=np.array([0.3, 0.6, 0.9]))
    np.testing.assert_array_equal(
        many[:, 2], experts.noisy_expert(jax.random.fold_in(key, 2), labels,
                                         num_classes=6, p_correct=0.9))

  def test_numpy_integer_sizes_are_accepted(self):
    labels, clusters = self._labels_groups()
    key = jax.random.key(14)
    np.testing.assert_array_equal(
        experts.specialised_experts(key, labels, num_classes=np.int64(6),
                                    num_experts=np.int64(3),
                                    classes_per_expert=np.int64(2)),
        experts.specialised_experts(key, labels, num_classes=6,
                                    num_experts=3))
    np.testing.assert_array_equal(
        experts.specialised_experts(key, labels, num_classes=6, num_experts=2,
                                    groups=clusters,
                                    num_groups=np.int32(3)),
        experts.specialised_experts(key, labels, num_classes=6, num_experts=2,
                                    groups=clusters, num_groups=3))
    np.testing.assert_array_equal(
        experts.specialised_oracle_groups(np.int64(3), np.int64(4),
                                          groups_per_expert=np.int64(1)),
        np.eye(3, 4, dtype=bool))
    np.testing.assert_array_equal(
        experts.random_expert(key, labels, num_classes=np.int64(6)),
        experts.random_expert(key, labels, num_classes=6))


class OutOfRangeUnderJitTest(parameterized.TestCase):
  """Under jit values are not checked: bad labels/groups answer -1."""

  def test_labels_out_of_range_answer_minus_one(self):
    fn = jax.jit(experts.noisy_experts, static_argnames=("num_classes",))
    labels = np.array([0, 3, -1, 2, 1], np.int32)
    preds = np.asarray(fn(jax.random.key(0), labels, num_classes=3,
                          p_correct=np.array([1.0, 0.0])))
    np.testing.assert_array_equal(preds[:, 0], [0, -1, -1, 2, 1])
    np.testing.assert_array_equal(preds[[1, 2], 1], [-1, -1])
    self.assertTrue(np.all((preds[[0, 3, 4], 1] >= 0) &
                           (preds[[0, 3, 4], 1] < 3)))

  def test_groups_out_of_range_answer_minus_one(self):
    fn = jax.jit(experts.noisy_expert, static_argnames=("num_classes",))
    labels = np.array([1, 1, 1, 1], np.int32)
    groups = np.array([0, 2, -1, 1], np.int32)
    # Group 1 is always right; an out-of-range group must not borrow it.
    preds = fn(jax.random.key(0), labels, num_classes=3,
               p_correct=np.array([1.0, 1.0]), groups=groups)
    np.testing.assert_array_equal(preds, [1, -1, -1, 1])


class BadKeysAndOptionsTest(parameterized.TestCase):

  @parameterized.parameters(
      (experts.noisy_expert, dict(p_correct=0.5)),
      (experts.noisy_experts, dict(p_correct=[0.5])),
      (experts.oracle_expert, dict(oracle_groups=np.ones(3, bool))),
      (experts.oracle_experts, dict(oracle_groups=np.ones((2, 3), bool))),
      (experts.random_expert, {}),
      (experts.specialised_experts, dict(num_experts=2)),
  )
  def test_int_seed_is_not_a_key(self, fn, kwargs):
    labels = np.array([0, 1, 2], np.int32)
    with self.assertRaisesRegex(TypeError, "`key` must be a jax.random key"):
      fn(0, labels, num_classes=3, **kwargs)
    with self.assertRaisesRegex(TypeError, "`key` must be a jax.random key"):
      fn(np.zeros(3, np.uint32), labels, num_classes=3, **kwargs)
    with self.assertRaisesRegex(ValueError, "`key` must be a single"):
      fn(jax.random.split(jax.random.key(0), 2), labels, num_classes=3,
         **kwargs)

  def test_values_and_options(self):
    key = jax.random.key(0)
    labels = np.array([0, 1, 2], np.int32)
    with self.assertRaisesRegex(ValueError, "p_correct.*\\[0, 1\\]"):
      experts.noisy_experts(key, labels, num_classes=3,
                            p_correct=np.array([0.5, -0.1]))
    with self.assertRaisesRegex(ValueError, "p_correct.*NaN"):
      experts.noisy_experts(key, labels, num_classes=3,
                            p_correct=np.array([0.5, np.nan]))
    with self.assertRaisesRegex(ValueError, "groups.*\\[0, 2\\)"):
      experts.noisy_experts(key, labels, num_classes=3,
                            p_correct=np.full((4, 2), 0.5),
                            groups=np.array([0, 1, 2], np.int32))
    with self.assertRaisesRegex(TypeError, "groups.*integer"):
      experts.noisy_experts(key, labels, num_classes=3,
                            p_correct=np.full((4, 2), 0.5),
                            groups=np.array([0.0, 1.0, 1.0]))
    with self.assertRaisesRegex(ValueError, "labels.*\\[N\\]"):
      experts.noisy_experts(key, labels[None], num_classes=3,
                            p_correct=[0.5])
    with self.assertRaisesRegex(TypeError, "exclude_true_label.*bool"):
      experts.noisy_expert(key, labels, num_classes=3, p_correct=0.5,
                           exclude_true_label="yes")
    with self.assertRaisesRegex(ValueError, "classes_per_expert.*exceeds"):
      experts.specialised_experts(key, labels, num_classes=3, num_experts=2,
                                  classes_per_expert=4)
    with self.assertRaisesRegex(ValueError, "`num_groups` needs `groups`"):
      experts.specialised_experts(key, labels, num_classes=3, num_experts=2,
                                  num_groups=5)
    with self.assertRaisesRegex(ValueError, "num_experts.*>= 1"):
      experts.specialised_experts(key, labels, num_classes=3, num_experts=0)
    with self.assertRaisesRegex(TypeError, "num_experts.*int"):
      experts.specialised_experts(key, labels, num_classes=3, num_experts=2.0)
