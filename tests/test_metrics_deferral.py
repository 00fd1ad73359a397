"""Tests for deferral metrics: system answers, model coverage, workload."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from l2d_jax import metrics

# --- numpy references, decisions in the one encoding (0 = model, j = expert j).


def np_system(decisions, model, experts, labels):
  out = []
  for i in range(len(decisions)):
    d = decisions[i]
    answer = model[i] if d == 0 else experts[i, d - 1]
    out.append(answer == labels[i])
  return np.mean(out)


def np_workload(decisions, num_experts):
  """(queries, max per expert, mean per queried expert) by counting."""
  counts = [0] * num_experts
  for d in decisions:
    if 1 <= d <= num_experts:
      counts[d - 1] += 1
  queries = sum(counts)
  queried = sum(c > 0 for c in counts)
  return queries, max(counts), (queries / queried if queried else 0.0)


class DeferralMetricsTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(4)
    n, k, j = 300, 5, 3
    self.labels = rng.integers(0, k, n).astype(np.int32)
    self.model = np.where(rng.random(n) < 0.6, self.labels,
                          rng.integers(0, k, n)).astype(np.int32)
    self.experts = np.where(rng.random((n, j)) < 0.7, self.labels[:, None],
                            rng.integers(0, k, (n, j))).astype(np.int32)
    self.decisions = rng.integers(0, j + 1, n).astype(np.int32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_system_accuracy(self):
    out = self.variant(metrics.system_accuracy)(
        self.decisions, self.model, self.experts, self.labels)
    chex.assert_shape(out, ())
    np.testing.assert_allclose(
        out, np_system(self.decisions, self.model, self.experts, self.labels),
        rtol=1e-6)

  def test_system_accuracy_where(self):
    where = self.decisions != 2
    padded = np.where(where, self.decisions, -1).astype(np.int32)
    expected = np_system(self.decisions[where], self.model[where],
                         self.experts[where], self.labels[where])
    for fn in (metrics.system_accuracy, jax.jit(metrics.system_accuracy)):
      out = fn(padded, self.model, self.experts, self.labels, where=where)
      np.testing.assert_allclose(out, expected, rtol=1e-6)

  def test_system_predictions(self):
    out = metrics.system_predictions(self.decisions, self.model, self.experts)
    table = np.concatenate([self.model[:, None], self.experts], axis=1)
    np.testing.assert_array_equal(
        out, table[np.arange(len(self.decisions)), self.decisions])

  @chex.variants(with_jit=True, without_jit=True)
  def test_model_coverage_and_rates(self):
    cov = self.variant(metrics.model_coverage)(self.decisions)
    rates = self.variant(functools.partial(metrics.deferral_rates,
                                           num_experts=3))(self.decisions)
    chex.assert_shape(rates, (3,))
    np.testing.assert_allclose(cov, np.mean(self.decisions == 0), rtol=1e-6)
    np.testing.assert_allclose(
        rates, [np.mean(self.decisions == e) for e in (1, 2, 3)], rtol=1e-6)
    np.testing.assert_allclose(cov + rates.sum(), 1.0, rtol=1e-6)

  def test_where_and_fully_masked(self):
    where = np.zeros_like(self.decisions, bool)
    where[:10] = True
    np.testing.assert_allclose(
        metrics.model_coverage(self.decisions, where=where),
        np.mean(self.decisions[:10] == 0), rtol=1e-6)
    none = np.zeros_like(where)
    self.assertEqual(float(metrics.model_coverage(self.decisions, where=none)),
                     0.0)
    np.testing.assert_array_equal(
        metrics.deferral_rates(self.decisions, num_experts=3, where=none), 0.0)
    self.assertEqual(float(metrics.system_accuracy(
        self.decisions, self.model, self.experts, self.labels, where=none)),
                     0.0)

  @parameterized.parameters(False, True)
  def test_empty_input_is_zero_as_documented(self, jit):
    # N = 0 used to give NaN (mean of nothing) while the docstrings said 0.
    def maybe_jit(fn):
      return jax.jit(fn) if jit else fn
    empty = np.zeros(0, np.int32)
    self.assertEqual(float(maybe_jit(metrics.model_coverage)(empty)), 0.0)
    self.assertEqual(float(maybe_jit(metrics.system_accuracy)(
        empty, empty, np.zeros((0, 2), np.int32), empty)), 0.0)
    rates = maybe_jit(functools.partial(metrics.deferral_rates,
                                        num_experts=2))(empty)
    np.testing.assert_array_equal(rates, [0.0, 0.0])

  def test_out_of_range_decisions_under_jit(self):
    # -1 is what argmax_deferral gives a NaN row under jit; 3 > J = 2.
    decisions = np.array([0, 1, 2, -1, 3], np.int32)
    model = np.array([7, 7, 7, 7, 7], np.int32)
    experts = np.tile(np.array([[8, 9]], np.int32), (5, 1))
    labels = np.array([7, 8, 9, 8, 9], np.int32)
    answers = jax.jit(metrics.system_predictions)(decisions, model, experts)
    np.testing.assert_array_equal(answers, [7, 8, 9, -1, -1])
    acc = jax.jit(metrics.system_accuracy)(decisions, model, experts, labels)
    self.assertTrue(np.isnan(acc))
    # Masked out, the invalid decisions no longer matter.
    where = np.array([True, True, True, False, False])
    acc = jax.jit(metrics.system_accuracy)(decisions, model, experts, labels,
                                           where=where)
    self.assertEqual(float(acc), 1.0)
    rates = jax.jit(functools.partial(metrics.deferral_rates,
                                      num_experts=2))(decisions)
    np.testing.assert_allclose(rates, [0.2, 0.2], rtol=1e-6)
    cov = jax.jit(metrics.model_coverage)(decisions)
    np.testing.assert_allclose(cov, 0.2, rtol=1e-6)

  def test_bad_inputs(self):
    d, m, e, y = self.decisions, self.model, self.experts, self.labels
    with self.assertRaisesRegex(ValueError, "decisions.*\\[0, 4\\)"):
      metrics.system_accuracy(d + 1, m, e, y)
    with self.assertRaisesRegex(ValueError, "decisions.*\\[0, 4\\)"):
      metrics.system_predictions(d - 1, m, e)
    with self.assertRaisesRegex(ValueError, "decisions.*\\[0, 3\\)"):
      metrics.deferral_rates(d, num_experts=2)
    with self.assertRaisesRegex(ValueError, "decisions.*>= 0.*\\[-1, 2\\]"):
      metrics.model_coverage(d - 1)
    with self.assertRaisesRegex(ValueError, "labels.*length N=300"):
      metrics.system_accuracy(d, m, e, y[:5])
    with self.assertRaisesRegex(ValueError, "class_predictions.*length"):
      metrics.system_accuracy(d, m[:5], e, y)
    with self.assertRaisesRegex(ValueError, "expert_predictions.*N, J"):
      metrics.system_accuracy(d, m, e[:, 0], y)
    with self.assertRaisesRegex(ValueError, "decisions.*\\[N\\]"):
      metrics.model_coverage(d[None])
    with self.assertRaisesRegex(ValueError, "where.*shape"):
      metrics.model_coverage(d, where=np.ones(3, bool))
    with self.assertRaisesRegex(TypeError, "decisions.*integer"):
      metrics.model_coverage(d.astype(np.float32))
    with self.assertRaisesRegex(TypeError, "where.*boolean"):
      metrics.deferral_rates(d, num_experts=3, where=np.ones(300, np.int32))
    with self.assertRaisesRegex(ValueError, "num_experts"):
      metrics.deferral_rates(d, num_experts=0)
    with self.assertRaisesRegex(TypeError, "num_experts"):
      metrics.deferral_rates(d, num_experts=3.0)

  def test_numpy_integer_num_experts(self):
    expected = [np.mean(self.decisions == e) for e in (1, 2, 3)]
    for value in (np.int64(3), np.int32(3)):
      np.testing.assert_allclose(
          metrics.deferral_rates(self.decisions, num_experts=value), expected,
          rtol=1e-6)
      np.testing.assert_allclose(
          jax.jit(metrics.deferral_rates, static_argnames="num_experts")(
              self.decisions, num_experts=value), expected, rtol=1e-6)


class WorkloadTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_counting_reference(self):
    rng = np.random.default_rng(5)
    for n, j in ((50, 4), (7, 1), (30, 10)):
      decisions = rng.integers(0, j + 1, n).astype(np.int32)
      out = self.variant(functools.partial(metrics.workload, num_experts=j))(
          decisions)
      chex.assert_shape(out, ((), (), ()))
      self.assertEqual(out[0].dtype, jnp.int32)
      self.assertEqual(out[1].dtype, jnp.int32)
      queries, most, avg = np_workload(decisions, j)
      self.assertEqual(int(out[0]), queries)
      self.assertEqual(int(out[1]), most)
      np.testing.assert_allclose(out[2], avg, rtol=1e-6)

  def test_known_values(self):
    # Experts 3, 3, 1, 3: 4 queries, expert 3 gets 3, two experts queried.
    queries, most, avg = metrics.workload(
        np.array([0, 3, 3, 1, 0, 3], np.int32), num_experts=3)
    self.assertEqual((int(queries), int(most), float(avg)), (4, 3, 2.0))
    # The model keeps everything: nobody is queried, the mean is 0.
    out = metrics.workload(np.zeros(5, np.int32), num_experts=2)
    self.assertEqual([float(v) for v in out], [0.0, 0.0, 0.0])
    out = metrics.workload(np.zeros(0, np.int32), num_experts=2)
    self.assertEqual([float(v) for v in out], [0.0, 0.0, 0.0])

  def test_leading_batch_dims(self):
    rng = np.random.default_rng(6)
    decisions = rng.integers(0, 4, (2, 3, 40)).astype(np.int32)
    where = rng.random((2, 3, 40)) < 0.7
    out = jax.jit(functools.partial(metrics.workload, num_experts=3))(
        decisions, where=where)
    chex.assert_shape(out, ((2, 3), (2, 3), (2, 3)))
    out = jax.device_get(out)  # Indexed below: numpy, not one dispatch each.
    for a in range(2):
      for b in range(3):
        queries, most, avg = np_workload(decisions[a, b][where[a, b]], 3)
        self.assertEqual(int(out[0][a, b]), queries)
        self.assertEqual(int(out[1][a, b]), most)
        np.testing.assert_allclose(out[2][a, b], avg, rtol=1e-6)
    # Jitted: eager vmap compiles every batched op on its own.
    vmapped = jax.jit(jax.vmap(jax.vmap(functools.partial(
        metrics.workload, num_experts=3))))(decisions)
    flat = metrics.workload(decisions, num_experts=3)
    for got, want in zip(vmapped, flat):
      np.testing.assert_array_equal(got, want)

  def test_out_of_range_ids_dropped_under_jit(self):
    # J = 2: ids 3 and -1 must not be counted for expert 2 or expert 1.
    decisions = np.array([1, 3, 3, 3, -1, 2, 0], np.int32)
    queries, most, avg = jax.jit(functools.partial(
        metrics.workload, num_experts=2))(decisions)
    self.assertEqual((int(queries), int(most), float(avg)), (2, 1, 1.0))

  def test_model_is_zero_not_minus_one(self):
    # The old conformal encoding (-1 = model, experts from 0) is refused.
    with self.assertRaisesRegex(ValueError, "decisions.*\\[0, 3\\)"):
      metrics.workload(np.array([-1, 0, 1], np.int32), num_experts=2)

  def test_bad_inputs(self):
    d = np.array([0, 1, 2], np.int32)
    with self.assertRaisesRegex(ValueError, "decisions.*\\[0, 3\\)"):
      metrics.workload(np.array([0, 3], np.int32), num_experts=2)
    with self.assertRaisesRegex(ValueError, "decisions.*scalar"):
      metrics.workload(np.int32(1), num_experts=2)
    with self.assertRaisesRegex(TypeError, "decisions.*integer"):
      metrics.workload(d.astype(np.float32), num_experts=2)
    with self.assertRaisesRegex(ValueError, "where.*shape \\(3,\\)"):
      metrics.workload(d, num_experts=2, where=np.ones(2, bool))
    with self.assertRaisesRegex(TypeError, "where.*boolean"):
      metrics.workload(d, num_experts=2, where=np.ones(3, np.int32))
    with self.assertRaisesRegex(ValueError, "num_experts.*>= 1"):
      metrics.workload(d, num_experts=0)
    with self.assertRaisesRegex(TypeError, "num_experts"):
      metrics.workload(d, num_experts=2.0)
    out = metrics.workload(d, num_experts=np.int64(2))
    self.assertEqual(int(out[0]), 2)


class PublicNamesTest(parameterized.TestCase):

  def test_one_name_one_meaning(self):
    self.assertIn("model_coverage", metrics.__all__)
    self.assertIn("workload", metrics.__all__)
    self.assertNotIn("coverage", metrics.__all__)
    # workload is metrics' own, in the 0 = model encoding (not conformal's).
    self.assertEqual(metrics.workload.__module__, "l2d_jax.metrics._deferral")
    for name in metrics.__all__:
      self.assertTrue(hasattr(metrics, name), name)

  def test_old_coverage_name_is_gone(self):
    # metrics.coverage was renamed model_coverage: no name shared with
    # conformal.set_coverage, and no alias left behind.
    with self.assertRaises(AttributeError):
      _ = metrics.coverage
