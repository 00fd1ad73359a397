"""Tests for the multi-expert L2D surrogates and their estimators."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import jax.test_util as jtu
import numpy as np
import optax
from absl.testing import parameterized

from l2d_jax import deferral
from l2d_jax import losses

# --- numpy references (float64), written straight from the paper's formulas.


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_phi(z):
  """Logistic loss log(1 + exp(-z)), stable in float64."""
  z = np.asarray(z, np.float64)
  return np.logaddexp(0.0, -z)


def np_softmax_loss(logits, labels, experts):
  k = logits.shape[1] - experts.shape[1]
  log_q = _np_log_softmax(logits)
  out = []
  for i in range(logits.shape[0]):
    value = -log_q[i, labels[i]]
    for j in range(experts.shape[1]):
      if experts[i, j] == labels[i]:
        value -= log_q[i, k + j]
    out.append(value)
  return np.array(out)


def np_ova_loss(logits, labels, experts):
  """Literal paper form, including the phi(g) - phi(-g) correction."""
  k = logits.shape[1] - experts.shape[1]
  out = []
  for i in range(logits.shape[0]):
    g = np.asarray(logits[i], np.float64)
    value = _np_phi(g[labels[i]])
    value += sum(_np_phi(-g[c]) for c in range(k) if c != labels[i])
    for j in range(experts.shape[1]):
      value += _np_phi(-g[k + j])
      if experts[i, j] == labels[i]:
        value += _np_phi(g[k + j]) - _np_phi(-g[k + j])
    out.append(value)
  return np.array(out)


def _random_inputs(seed, batch, num_classes, num_experts, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal(
      (batch, num_classes + num_experts))).astype(np.float32)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  # Half of the expert answers are right, so both loss branches are exercised.
  right = rng.random((batch, num_experts)) < 0.5
  guess = rng.integers(0, num_classes, (batch, num_experts))
  experts = np.where(right, labels[:, None], guess).astype(np.int32)
  return logits, labels, experts


LOSSES = (
    ("softmax", losses.multi_expert_softmax_loss, np_softmax_loss),
    ("ova", losses.multi_expert_ova_loss, np_ova_loss),
)


class LossValuesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  # Parameters are names and tuples (not functions) so the test ids are the
  # same in every process (pytest-xdist workers compare them).
  @parameterized.product(
      loss=tuple(name for name, _, _ in LOSSES), sizes=((6, 4, 3), (5, 1, 2)))
  def test_matches_numpy_reference(self, loss, sizes):
    _, fn, ref = next(entry for entry in LOSSES if entry[0] == loss)
    logits, labels, experts = _random_inputs(0, *sizes)
    out = self.variant(fn)(logits, labels, experts)
    chex.assert_shape(out, (sizes[0],))
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, ref(logits, labels, experts),
                               rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_float64_dtype_preserved(self, which):
    _, fn, ref = LOSSES[which]
    logits, labels, experts = _random_inputs(1, 4, 3, 2)
    with jax.enable_x64(True):
      out = fn(logits.astype(np.float64), labels, experts)
      self.assertEqual(out.dtype, jnp.float64)
      np.testing.assert_allclose(out, ref(logits, labels, experts),
                                 rtol=1e-12, atol=1e-12)


class SingleExpertTest(parameterized.TestCase):

  def test_softmax_equals_mozannar_sontag_cross_entropy(self):
    # L_CE(g, y, m) = -log q_y - 1[m = y] log q_⊥ on K + 1 outputs (optax CE).
    logits, labels, experts = _random_inputs(2, 16, 5, 1)
    num_classes = 5
    ce = optax.losses.softmax_cross_entropy_with_integer_labels
    defer_label = np.full_like(labels, num_classes)
    expected = ce(logits, labels) + (experts[:, 0] == labels) * ce(
        logits, defer_label)
    out = losses.multi_expert_softmax_loss(logits, labels, experts)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)

  def test_ova_equals_verma_nalisnick_loss(self):
    # K + 1 independent logistic losses; the deferrer's target is 1[m = y].
    logits, labels, experts = _random_inputs(3, 16, 5, 1)
    targets = np.concatenate(
        [np.eye(5)[labels], (experts == labels[:, None])], axis=1)
    expected = optax.losses.sigmoid_binary_cross_entropy(
        logits, targets).sum(-1)
    out = losses.multi_expert_ova_loss(logits, labels, experts)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


class GradientTest(parameterized.TestCase):

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_check_grads_float64(self, which):
    _, fn, _ = LOSSES[which]
    logits, labels, experts = _random_inputs(4, 4, 3, 2)
    where = np.array([True, False, True, True])
    with jax.enable_x64(True):
      f = functools.partial(fn, labels=labels, expert_predictions=experts,
                            where=where)
      # Jitted: one compilation per derivative instead of eager dispatch.
      jtu.check_grads(jax.jit(f), (logits.astype(np.float64),), order=2,
                      modes=("fwd", "rev"))

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_extreme_logits_finite(self, which):
    _, fn, ref = LOSSES[which]
    logits = np.array([[1e4, -1e4, -1e4, 1e4, -1e4],
                       [-1e4, 1e4, -1e4, -1e4, 1e4],
                       [-1e4, -1e4, -1e4, -1e4, -1e4],
                       [1e4, 1e4, 1e4, 1e4, 1e4]], np.float32)
    labels = np.array([1, 0, 2, 1], np.int32)
    experts = np.array([[1, 0], [0, 0], [2, 2], [1, 0]], np.int32)

    def total(x):
      return jnp.sum(fn(x, labels, experts))

    value, grad = jax.jit(jax.value_and_grad(total))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_allclose(fn(logits, labels, experts),
                               ref(logits, labels, experts), rtol=1e-6)


  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_minus_inf_logit_of_non_target(self, which):
    # Expert 2 cannot answer row 0 (logit -inf) and is wrong there.
    _, fn, _ = LOSSES[which]
    logits = np.array([[1.0, -np.inf, 0.5, -np.inf],
                       [0.2, 0.1, 0.3, 0.4]], np.float32)
    labels = np.array([0, 1], np.int32)
    experts = np.array([[0, 1], [1, 1]], np.int32)

    def total(x):
      return jnp.sum(fn(x, labels, experts))

    value, grad = jax.jit(jax.value_and_grad(total))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))


class MaskTest(parameterized.TestCase):

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_masked_rows_zero_loss_and_gradient(self, which):
    _, fn, _ = LOSSES[which]
    logits, labels, experts = _random_inputs(6, 5, 3, 2)
    where = np.array([True, False, True, False, True])
    # Padding in masked rows: NaN/inf logits, -1 labels and predictions.
    logits[1] = np.nan
    logits[3] = np.inf
    labels[1] = labels[3] = -1
    experts[1] = -1

    def total(x):
      return jnp.sum(fn(x, labels, experts, where=where))

    out = np.asarray(
        jax.jit(functools.partial(fn, where=where))(logits, labels, experts))
    np.testing.assert_array_equal(out[~where], 0.0)
    kept = fn(logits[where], labels[where], experts[where])
    np.testing.assert_allclose(out[where], kept, rtol=1e-6)
    grad = np.asarray(jax.jit(jax.grad(total))(logits))
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[~where], 0.0)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_fully_masked(self, which):
    _, fn, _ = LOSSES[which]
    logits, labels, experts = _random_inputs(7, 3, 2, 2)
    where = np.zeros(3, bool)
    out = fn(logits, labels, experts, where=where)
    np.testing.assert_array_equal(out, 0.0)
    grad = jax.jit(jax.grad(
        lambda x: fn(x, labels, experts, where=where).sum()))(logits)
    np.testing.assert_array_equal(grad, 0.0)


class BadInputTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.logits, self.labels, self.experts = _random_inputs(8, 4, 3, 2)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_errors(self, which):
    _, fn, _ = LOSSES[which]
    x, y, m = self.logits, self.labels, self.experts
    with self.assertRaisesRegex(ValueError, "logits.*K >= 1"):
      fn(x[:, :2], y, m)  # J = 2 leaves no class column
    with self.assertRaisesRegex(ValueError, "labels.*batch shape \\(4,\\)"):
      fn(x, y[:3], m)
    with self.assertRaisesRegex(ValueError,
                                "expert_predictions.*batch shape \\(4,\\)"):
      fn(x, y, m[:3])
    with self.assertRaisesRegex(ValueError,
                                "expert_predictions.*\\[\\.\\.\\., J\\]"):
      fn(x, y, m[:, 0])
    with self.assertRaisesRegex(ValueError, "labels.*batch shape \\(\\)"):
      fn(x[0], y, m)  # one example: labels must be a scalar
    with self.assertRaisesRegex(ValueError, "logits.*scalar"):
      fn(x[0, 0], y[0], m[0])
    with self.assertRaisesRegex(ValueError, "J >= 1"):
      fn(x, y, m[:, :0])
    with self.assertRaisesRegex(TypeError, "labels.*integer"):
      fn(x, y.astype(np.float32), m)
    with self.assertRaisesRegex(TypeError, "expert_predictions.*integer"):
      fn(x, y, m.astype(np.float32))
    with self.assertRaisesRegex(TypeError, "logits.*floating"):
      fn(x.astype(np.int32), y, m)
    with self.assertRaisesRegex(ValueError, "labels.*\\[0, 3\\)"):
      fn(x, np.array([0, 1, 3, 0], np.int32), m)
    with self.assertRaisesRegex(ValueError, "expert_predictions.*\\[0, 3\\)"):
      fn(x, y, np.where(m == 0, -1, m).astype(np.int32))
    with self.assertRaisesRegex(ValueError, "where.*batch shape \\(4,\\)"):
      fn(x, y, m, where=np.ones(3, bool))
    with self.assertRaisesRegex(TypeError, "where.*boolean"):
      fn(x, y, m, where=np.ones(4, np.int32))

  def test_value_checks_skipped_under_jit(self):
    # Traced labels cannot be inspected; shape checks still run.
    fn = jax.jit(losses.multi_expert_softmax_loss)
    out = fn(self.logits, self.labels, self.experts)
    chex.assert_shape(out, (4,))
    with self.assertRaisesRegex(ValueError, "K >= 1"):
      fn(self.logits[:, :2], self.labels, self.experts)


class DecisionAndEstimatorTest(parameterized.TestCase):

  def test_defer_decision_matches_numpy(self):
    logits, _, _ = _random_inputs(9, 50, 4, 3)
    out = jax.jit(deferral.argmax_deferral, static_argnames="num_experts")(
        logits, num_experts=3)
    self.assertEqual(out.dtype, jnp.int32)
    best_class = logits[:, :4].max(-1)
    best_defer = logits[:, 4:].max(-1)
    expected = np.where(best_defer > best_class,
                        logits[:, 4:].argmax(-1) + 1, 0)
    np.testing.assert_array_equal(out, expected)

  def test_defer_decision_ties_go_to_model(self):
    logits = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.5]], np.float32)
    np.testing.assert_array_equal(
        deferral.argmax_deferral(logits, num_experts=1), [0, 1])

  def test_softmax_correctness_matches_ratio(self):
    logits, _, _ = _random_inputs(10, 20, 3, 2, scale=1.0)
    q = np.exp(_np_log_softmax(logits))
    expected = q[:, 3:] / (1.0 - q[:, 3:].sum(-1, keepdims=True))
    out = losses.softmax_correctness(logits, num_experts=2, cap=False)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    capped = losses.softmax_correctness(logits, num_experts=2)
    np.testing.assert_allclose(capped, np.minimum(expected, 1.0), rtol=1e-5)
    self.assertTrue(np.any(expected > 1.0))  # the degenerate case occurs

  def test_softmax_correctness_extreme_logits(self):
    # 1 - sum(q_⊥) underflows to 0 here; the log-space form stays exact.
    logits = np.array([[-1e4, -1e4, 1e4, 5.0], [1e4, 0.0, -1e4, 1e4 - 1.0]],
                      np.float32)
    capped = losses.softmax_correctness(logits, num_experts=2)
    np.testing.assert_allclose(capped, [[1.0, 1.0], [0.0, np.exp(-1.0)]],
                               rtol=1e-6, atol=0)
    grad = jax.jit(jax.grad(lambda x: losses.softmax_correctness(
        x, num_experts=2).sum()))(logits)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_softmax_correctness_gradient(self):
    # P_j = exp(g_⊥j - logsumexp(g_1..g_K)): dP_j/dg_⊥j = P_j and
    # dP_j/dg_k = -P_j softmax(g_1..g_K)_k.
    logits, _, _ = _random_inputs(11, 3, 3, 2, scale=1.0)
    jac = np.asarray(jax.jit(jax.jacobian(functools.partial(
        losses.softmax_correctness, num_experts=2, cap=False)))(logits))
    p = np.asarray(losses.softmax_correctness(logits, num_experts=2,
                                              cap=False))
    soft = np.exp(_np_log_softmax(logits[:, :3]))
    for i in range(3):
      for j in range(2):
        expected = np.zeros(5)
        expected[:3] = -p[i, j] * soft[i]
        expected[3 + j] = p[i, j]
        np.testing.assert_allclose(jac[i, j, i], expected, rtol=1e-5,
                                   atol=1e-6)

  def test_ova_estimators(self):
    logits = np.array([[1e4, -1e4, 0.0, 2.0, -1e4]], np.float32)
    np.testing.assert_allclose(
        losses.ova_correctness(logits, num_experts=2),
        [[1.0 / (1.0 + np.exp(-2.0)), 0.0]], rtol=1e-6)
    np.testing.assert_allclose(
        losses.ova_class_probabilities(logits, num_experts=2),
        [[1.0, 0.0, 0.5]], atol=1e-7)
    normalized = losses.ova_class_probabilities(logits, num_experts=2,
                                                normalize=True)
    np.testing.assert_allclose(normalized.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        losses.softmax_class_probabilities(logits, num_experts=2),
        [[1.0, 0.0, 0.0]], atol=1e-7)

  def test_estimator_argument_errors(self):
    logits = np.zeros((2, 3), np.float32)
    for fn in (deferral.argmax_deferral, losses.softmax_correctness,
               losses.ova_correctness, losses.softmax_class_probabilities,
               losses.ova_class_probabilities):
      with self.assertRaisesRegex(ValueError, "K >= 1"):
        fn(logits, num_experts=3)
      with self.assertRaisesRegex(ValueError, "num_experts"):
        fn(logits, num_experts=0)
      with self.assertRaisesRegex(TypeError, "num_experts"):
        fn(logits, num_experts=1.0)
      with self.assertRaisesRegex(TypeError, "num_experts"):
        fn(logits, num_experts=True)
      with self.assertRaisesRegex(TypeError, "num_experts"):
        fn(logits, num_experts=np.array([1]))


class BatchDimensionsTest(parameterized.TestCase):
  """Leading batch shapes [...] and jax.vmap over single examples."""

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_vmap_over_examples_equals_batched_call(self, which):
    _, fn, ref = LOSSES[which]
    logits, labels, experts = _random_inputs(12, 6, 4, 3)
    where = np.array([True, False, True, True, False, True])
    batched = fn(logits, labels, experts)
    per_example = jax.jit(jax.vmap(fn))(logits, labels, experts)
    chex.assert_shape(per_example, (6,))
    np.testing.assert_allclose(per_example, batched, rtol=1e-6)
    np.testing.assert_allclose(per_example, ref(logits, labels, experts),
                               rtol=1e-5, atol=1e-5)
    masked = jax.jit(jax.vmap(lambda x, y, m, w: fn(x, y, m, where=w)))(
        logits, labels, experts, where)
    np.testing.assert_allclose(
        masked, fn(logits, labels, experts, where=where), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_single_example_is_a_scalar(self, which):
    _, fn, ref = LOSSES[which]
    logits, labels, experts = _random_inputs(13, 1, 3, 2)
    out = fn(logits[0], labels[0], experts[0])
    chex.assert_shape(out, ())
    np.testing.assert_allclose(out, ref(logits, labels, experts)[0],
                               rtol=1e-5)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_two_leading_dims(self, which):
    _, fn, ref = LOSSES[which]
    logits, labels, experts = _random_inputs(14, 6, 4, 3)
    where = np.array([True, True, False, True, False, True])
    out = jax.jit(fn)(logits.reshape(2, 3, 7), labels.reshape(2, 3),
                      experts.reshape(2, 3, 3), where=where.reshape(2, 3))
    chex.assert_shape(out, (2, 3))
    expected = np.where(where, ref(logits, labels, experts), 0.0)
    np.testing.assert_allclose(out, expected.reshape(2, 3), rtol=1e-5,
                               atol=1e-5)

  @parameterized.named_parameters(("softmax", 0), ("ova", 1))
  def test_per_example_gradients(self, which):
    _, fn, _ = LOSSES[which]
    logits, labels, experts = _random_inputs(15, 5, 3, 2)
    per_example = jax.jit(jax.vmap(jax.grad(fn)))(logits, labels, experts)
    chex.assert_shape(per_example, (5, 5))
    # Example i's loss depends on row i only: the gradient of the summed loss
    # is the stack of per-example gradients, and the Jacobian is diagonal.
    # Jitted: eager jacrev compiles every op of the backward pass alone.
    summed = jax.jit(jax.jacrev(lambda x: fn(x, labels, experts).sum()))(
        logits)
    np.testing.assert_allclose(per_example, summed, rtol=1e-6, atol=1e-7)
    jac = np.array(jax.jit(jax.jacrev(lambda x: fn(x, labels, experts)))(
        logits))
    np.testing.assert_allclose(jac[np.arange(5), np.arange(5)], per_example,
                               rtol=1e-6, atol=1e-7)
    jac[np.arange(5), np.arange(5)] = 0.0
    np.testing.assert_array_equal(jac, 0.0)
    # The softmax-loss gradient has a closed form: q - targets * (row sum).
    if which == 0:
      q = np.exp(_np_log_softmax(logits))
      targets = np.concatenate(
          [np.eye(3)[labels], experts == labels[:, None]], axis=1)
      expected = q * targets.sum(1, keepdims=True) - targets
      np.testing.assert_allclose(per_example, expected, rtol=1e-5,
                                 atol=1e-6)

  @parameterized.parameters(
      (losses.softmax_correctness, 2), (losses.ova_correctness, 2),
      (losses.softmax_class_probabilities, 3),
      (losses.ova_class_probabilities, 3))
  def test_estimators_batch_and_vmap(self, fn, width):
    logits, _, _ = _random_inputs(16, 6, 3, 2)
    f = functools.partial(fn, num_experts=2)
    flat = f(logits)
    chex.assert_shape(flat, (6, width))
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(logits), flat, rtol=1e-6)
    np.testing.assert_allclose(f(logits.reshape(2, 3, 5)),
                               np.asarray(flat).reshape(2, 3, width),
                               rtol=1e-6)
    # NumPy integers are accepted for the static option, also under jit.
    np.testing.assert_allclose(
        jax.jit(fn, static_argnames="num_experts")(
            logits, num_experts=np.int64(2)), flat, rtol=1e-6)

  def test_argmax_deferral_batch_and_vmap(self):
    logits, _, _ = _random_inputs(18, 12, 4, 3)
    flat = deferral.argmax_deferral(logits, num_experts=3)
    f = functools.partial(deferral.argmax_deferral, num_experts=np.int64(3))
    np.testing.assert_array_equal(jax.jit(jax.vmap(f))(logits), flat)
    np.testing.assert_array_equal(f(logits.reshape(3, 4, 7)),
                                  np.asarray(flat).reshape(3, 4))
    self.assertEqual(set(np.asarray(flat).tolist()), {0, 1, 2, 3})


class NanDecisionTest(parameterized.TestCase):

  def test_nan_rows_get_minus_one_under_jit(self):
    # Row 0 would go to the model if NaN compared false; row 2 to expert 2.
    logits = np.array([[np.nan, 0.0, 5.0, 1.0],
                       [0.0, 1.0, 3.0, 2.0],
                       [0.0, 0.0, 1.0, np.nan],
                       [2.0, 0.0, 1.0, -1.0]], np.float32)
    out = jax.jit(deferral.argmax_deferral, static_argnames="num_experts")(
        logits, num_experts=2)
    np.testing.assert_array_equal(out, [-1, 1, -1, 0])
    out = jax.vmap(functools.partial(deferral.argmax_deferral,
                                     num_experts=2))(logits)
    np.testing.assert_array_equal(out, [-1, 1, -1, 0])

  def test_concrete_nan_raises(self):
    logits = np.array([[0.0, 1.0, 3.0], [np.nan, 1.0, 0.0]], np.float32)
    with self.assertRaisesRegex(ValueError, "logits.*NaN.*index \\(1,\\)"):
      deferral.argmax_deferral(logits, num_experts=1)
    with self.assertRaisesRegex(ValueError, "logits.*NaN"):
      deferral.argmax_deferral(jnp.asarray(logits), num_experts=1)

  def test_infinite_logits_still_decide(self):
    logits = np.array([[np.inf, 0.0, 1.0], [0.0, -np.inf, np.inf]],
                      np.float32)
    np.testing.assert_array_equal(
        deferral.argmax_deferral(logits, num_experts=1), [0, 1])


# --- Bayes optimality on a small discrete distribution.

# Three inputs x, K = 3 classes, J = 2 experts. Expert j is right on x with
# probability ACC[x, j], independently of the label and of the other expert.
ETA = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.15, 0.15, 0.7]])
ACC = np.array([[0.3, 0.8], [0.65, 0.2], [0.5, 0.6]])


def _population_batch():
  """All (x, y, correctness pattern) cells with their probabilities."""
  num_x, num_classes = ETA.shape
  num_experts = ACC.shape[1]
  rows, labels, experts, weights = [], [], [], []
  for x in range(num_x):
    for y in range(num_classes):
      for pattern in itertools.product((0, 1), repeat=num_experts):
        prob = ETA[x, y]
        for j, right in enumerate(pattern):
          prob *= ACC[x, j] if right else 1.0 - ACC[x, j]
        rows.append(x)
        labels.append(y)
        experts.append([y if right else (y + 1) % num_classes
                        for right in pattern])
        weights.append(prob)
  return (np.array(rows), np.array(labels, np.int32),
          np.array(experts, np.int32), np.array(weights))


def _minimise_expected_loss(loss_fn):
  rows, labels, experts, weights = _population_batch()
  num_x = ETA.shape[0]

  def risk(params):
    return jnp.sum(weights * loss_fn(params[rows], labels, experts)) / num_x

  # Adam with a decaying step: compiles much faster than L-BFGS and reaches
  # machine-precision gradients on this smooth convex problem.
  steps = 1500
  opt = optax.adam(optax.cosine_decay_schedule(0.1, steps))

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(risk)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  params = jnp.zeros((num_x, ETA.shape[1] + ACC.shape[1]), jnp.float64)
  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None,
                                length=steps)
  return params, jax.grad(risk)(params)


class BayesOptimalityTest(parameterized.TestCase):

  def test_softmax_surrogate_recovers_probabilities(self):
    with jax.enable_x64(True):
      params, grad = jax.jit(
          lambda: _minimise_expected_loss(losses.multi_expert_softmax_loss))()
      np.testing.assert_allclose(grad, 0.0, atol=1e-8)
      np.testing.assert_allclose(
          losses.softmax_class_probabilities(params, num_experts=2), ETA,
          atol=1e-4)
      np.testing.assert_allclose(
          losses.softmax_correctness(params, num_experts=2, cap=False), ACC,
          atol=1e-4)
      # Closed form: q = [eta, acc] / (1 + sum(acc)), i.e. logits log[eta, acc].
      closed = np.log(np.concatenate([ETA, ACC], axis=1))
      np.testing.assert_allclose(
          jax.nn.softmax(params), jax.nn.softmax(closed), atol=1e-5)
      self._check_bayes_rule(params)

  def test_ova_surrogate_recovers_probabilities(self):
    with jax.enable_x64(True):
      params, grad = jax.jit(
          lambda: _minimise_expected_loss(losses.multi_expert_ova_loss))()
      np.testing.assert_allclose(grad, 0.0, atol=1e-8)
      np.testing.assert_allclose(
          losses.ova_class_probabilities(params, num_experts=2), ETA,
          atol=1e-4)
      np.testing.assert_allclose(
          losses.ova_correctness(params, num_experts=2), ACC, atol=1e-4)
      self._check_bayes_rule(params)

  def _check_bayes_rule(self, params):
    # r*(x) = 0 if max_y eta > max_j acc_j, else 1 + argmax_j acc_j.
    expected = np.where(ACC.max(1) > ETA.max(1), ACC.argmax(1) + 1, 0)
    np.testing.assert_array_equal(
        deferral.argmax_deferral(params, num_experts=2), expected)
    self.assertEqual(set(expected.tolist()), {0, 1, 2})
