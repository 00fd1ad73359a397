"""Tests for calibration metrics (ECE, reliability diagrams)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from l2d_jax import metrics


def np_ece(conf, correct, num_bins):
  """Reference ECE: right-closed equal-width bins, first bin includes 0."""
  conf = np.asarray(conf, np.float64)
  correct = np.asarray(correct, np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  ece = 0.0
  for b in range(num_bins):
    lo, hi = edges[b], edges[b + 1]
    in_bin = (conf > lo) & (conf <= hi)
    if b == 0:
      in_bin |= conf == 0.0
    if in_bin.any():
      share = in_bin.mean()
      ece += share * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return ece


def _calibration_data(seed, n):
  rng = np.random.default_rng(seed)
  conf = rng.random(n).astype(np.float32)
  # Over-confident forecaster: true accuracy is conf ** 2.
  correct = rng.random(n) < conf.astype(np.float64) ** 2
  return conf, correct


class ExpectedCalibrationErrorTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 15)
  def test_matches_numpy_reference(self, num_bins):
    conf, correct = _calibration_data(0, 500)
    fn = self.variant(functools.partial(metrics.expected_calibration_error,
                                        num_bins=num_bins))
    out = fn(conf, correct)
    chex.assert_shape(out, ())
    np.testing.assert_allclose(out, np_ece(conf, correct, num_bins),
                               rtol=1e-5, atol=1e-6)

  def test_known_value_and_bin_edges(self):
    # Right-closed bins: 0 and 0.5 fall in the first of two bins, 1 in the last.
    conf = np.array([0.0, 0.5, 1.0, 1.0], np.float32)
    correct = np.array([0, 1, 1, 0])
    # Bin 1: conf mean 0.25, acc 0.5; bin 2: conf 1, acc 0.5.
    np.testing.assert_allclose(
        metrics.expected_calibration_error(conf, correct, num_bins=2),
        0.5 * 0.25 + 0.5 * 0.5, rtol=1e-6)
    diagram = metrics.reliability_diagram(conf, correct, num_bins=2)
    np.testing.assert_array_equal(diagram.counts, [2, 2])
    np.testing.assert_allclose(diagram.edges, [0.0, 0.5, 1.0])

  def test_perfectly_calibrated_is_zero(self):
    conf = np.repeat(np.array([0.25, 0.75], np.float32), 4)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    np.testing.assert_allclose(
        metrics.expected_calibration_error(conf, correct, num_bins=4), 0.0,
        atol=1e-7)

  def test_where_equals_subset_and_ignores_padding(self):
    conf, correct = _calibration_data(1, 300)
    where = np.random.default_rng(1).random(300) < 0.6
    padded = conf.copy()
    padded[~where] = np.nan  # masked padding must not leak NaN
    out = jax.jit(functools.partial(metrics.expected_calibration_error,
                                    num_bins=15))(padded, correct, where=where)
    np.testing.assert_allclose(
        out, np_ece(conf[where], correct[where], 15), rtol=1e-5, atol=1e-6)

  def test_empty_and_fully_masked_are_zero(self):
    self.assertEqual(float(metrics.expected_calibration_error(
        np.zeros(0, np.float32), np.zeros(0, bool))), 0.0)
    out = metrics.expected_calibration_error(
        np.array([0.3, 0.9], np.float32), np.array([1, 1]),
        where=np.zeros(2, bool))
    self.assertEqual(float(out), 0.0)

  def test_reliability_diagram_consistent_with_ece(self):
    conf, correct = _calibration_data(2, 400)
    d = jax.jit(functools.partial(metrics.reliability_diagram, num_bins=10))(
        conf, correct)
    chex.assert_shape((d.edges, d.confidence, d.accuracy, d.counts),
                      ((11,), (10,), (10,), (10,)))
    self.assertEqual(d.counts.dtype, jnp.int32)
    self.assertEqual(int(d.counts.sum()), 400)
    ece = np.sum(d.counts * np.abs(d.accuracy - d.confidence)) / 400
    np.testing.assert_allclose(
        ece, metrics.expected_calibration_error(conf, correct, num_bins=10),
        rtol=1e-5)
    bins = np.clip(np.ceil(conf.astype(np.float64) * 10) - 1, 0, 9)
    for b in range(10):
      np.testing.assert_allclose(d.accuracy[b], correct[bins == b].mean(),
                                 rtol=1e-5)

  def test_empty_bins_hold_zero(self):
    d = metrics.reliability_diagram(np.array([0.95], np.float32),
                                    np.array([True]), num_bins=4)
    np.testing.assert_array_equal(d.counts, [0, 0, 0, 1])
    np.testing.assert_array_equal(d.confidence[:3], 0.0)
    self.assertTrue(np.all(np.isfinite(d.accuracy)))

  def test_expert_calibration_errors(self):
    rng = np.random.default_rng(3)
    est = rng.random((200, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 200).astype(np.int32)
    experts = np.where(rng.random((200, 3)) < est, labels[:, None],
                       (labels[:, None] + 1) % 4).astype(np.int32)
    out = metrics.expert_calibration_errors(est, experts, labels, num_bins=5)
    chex.assert_shape(out, (3,))
    expected = [np_ece(est[:, j], experts[:, j] == labels, 5)
                for j in range(3)]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

  def test_bad_inputs(self):
    conf = np.array([0.2, 0.7], np.float32)
    correct = np.array([1, 0])
    ece = metrics.expected_calibration_error
    with self.assertRaisesRegex(ValueError, "confidences.*\\[0, 1\\]"):
      ece(np.array([0.2, 1.3], np.float32), correct)
    with self.assertRaisesRegex(ValueError, "confidences.*NaN"):
      ece(np.array([0.2, np.nan], np.float32), correct)
    with self.assertRaisesRegex(ValueError, "correct.*shape"):
      ece(conf, np.array([1, 0, 1]))
    with self.assertRaisesRegex(ValueError, "confidences.*\\[N\\]"):
      ece(conf[None], correct)
    with self.assertRaisesRegex(TypeError, "confidences.*floating"):
      ece(np.array([0, 1]), correct)
    with self.assertRaisesRegex(ValueError, "num_bins"):
      ece(conf, correct, num_bins=0)
    with self.assertRaisesRegex(TypeError, "num_bins"):
      ece(conf, correct, num_bins=2.0)
    with self.assertRaisesRegex(TypeError, "num_bins"):
      ece(conf, correct, num_bins=True)
    with self.assertRaisesRegex(TypeError, "where.*boolean"):
      ece(conf, correct, where=np.array([1, 0]))
    with self.assertRaisesRegex(ValueError, "correctness.*\\[0, 1\\]"):
      metrics.expert_calibration_errors(
          np.array([[1.5]], np.float32), np.array([[0]]), np.array([0]))


class NumpyIntegerBinsTest(parameterized.TestCase):
  """`num_bins` may be a NumPy integer (e.g. read from a config array)."""

  @parameterized.parameters(np.int64, np.int32, np.uint8)
  def test_numpy_integer_num_bins(self, int_type):
    conf, correct = _calibration_data(5, 100)
    expected = np_ece(conf, correct, 7)
    np.testing.assert_allclose(
        metrics.expected_calibration_error(conf, correct,
                                           num_bins=int_type(7)),
        expected, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(metrics.expected_calibration_error,
                     static_argnames="num_bins")
    np.testing.assert_allclose(jitted(conf, correct, num_bins=int_type(7)),
                               expected, rtol=1e-5, atol=1e-6)
    d = metrics.reliability_diagram(conf, correct, num_bins=int_type(7))
    chex.assert_shape(d.counts, (7,))
    est = np.stack([conf, conf], axis=1)
    labels = np.zeros(100, np.int32)
    experts = np.where(np.stack([correct, correct], 1), 0, 1).astype(np.int32)
    np.testing.assert_allclose(
        metrics.expert_calibration_errors(est, experts, labels,
                                          num_bins=int_type(7)),
        [expected, expected], rtol=1e-5, atol=1e-6)
