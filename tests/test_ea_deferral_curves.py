"""EA-L2D multi-expert inference, deferral curves and AURSAC/AURDAC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import deferral
from l2d_jax import metrics


def test_priorities_and_decisions_by_hand():
  g = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  g_def = jnp.array([[1.0, 3.0], [0.5, -1.0], [1.0, 0.0]])
  prio = deferral.expert_priorities(g, g_def)
  np.testing.assert_allclose(prio, [[-1, 1], [-0.5, -2], [0, -1]])
  # Row 3: priority 0 ties with the model and goes to the model.
  np.testing.assert_array_equal(deferral.defer_by_priority(prio), [2, 0, 0])
  # Ties between experts go to the lowest index.
  np.testing.assert_array_equal(
      deferral.defer_by_priority(jnp.array([0.5, 0.5, 0.1])), 1)


def test_single_expert_agrees_with_deferral_priority_and_argmax():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 5)).astype(np.float32)  # K = 4, J = 1
  prio = deferral.expert_priorities(logits[:, :4], logits[:, 4:])
  np.testing.assert_allclose(prio[:, 0],
                             deferral.deferral_priority(logits), rtol=1e-6)
  np.testing.assert_array_equal(
      deferral.defer_by_priority(prio),
      deferral.argmax_deferral(logits, num_experts=1))


def test_decisions_jit_leading_dims_and_nan():
  prio = jnp.array([[[0.3, -1.0], [jnp.nan, 2.0]]])
  got = jax.jit(deferral.defer_by_priority)(prio)
  np.testing.assert_array_equal(got, [[1, -1]])
  with pytest.raises(ValueError, match="`priority` contains NaN"):
    deferral.defer_by_priority(prio)
  with pytest.raises(ValueError, match="defer_logits"):
    deferral.expert_priorities(jnp.zeros((2, 3)), jnp.zeros((3, 2)))
  with pytest.raises(TypeError, match="priority"):
    deferral.defer_by_priority(jnp.array([1, 2]))


def test_curves_by_hand_four_points():
  # Priorities rank the points 1, 0, 3, 2 (0 and 3 tie at 0.5: lower index first).
  prio = np.array([0.5, 0.9, 0.1, 0.5])
  model = np.array([True, False, True, True])
  expert = np.array([False, True, True, False])
  curves = jax.jit(metrics.deferral_curves)(prio, model, expert)
  # d=0: model on all, 3/4. d=1: expert right on 1, model 0,2,3: 4/4.
  # d=2: +point 0 (tie with 3, lower index first): expert wrong on 0, model
  # right on 2,3 -> 1 + 0 + 2 = 3/4. d=3: +3: expert wrong -> 1 + 1 = 2/4.
  # d=4: expert 1 + 0 + 0 + 1 = 2/4.
  np.testing.assert_allclose(curves.system_accuracy,
                             [0.75, 1.0, 0.75, 0.5, 0.5])
  np.testing.assert_allclose(curves.expert_accuracy,
                             [1.0, 1.0, 0.5, 1 / 3, 0.5], rtol=1e-6)
  # Whole range: trapezoids of width 1/4.
  np.testing.assert_allclose(metrics.aursac(prio, model, expert),
                             (1.75 + 1.75 + 1.25 + 1.0) / 8)
  np.testing.assert_allclose(metrics.aurdac(prio, model, expert),
                             (2 + 1.5 + 5 / 6 + 5 / 6) / 8, rtol=1e-6)
  # [0, 0.2]: SysAcc goes 0.75 -> 1 on [0, 0.25]; at 0.2 it is 0.95.
  np.testing.assert_allclose(
      metrics.aursac(prio, model, expert, interval=(0.0, 0.2)),
      (0.75 + 0.95) / 2, rtol=1e-6)


def _np_curves(prio, model, expert):
  n = len(prio)
  order = sorted(range(n), key=lambda i: (-prio[i], i))
  sys_acc, exp_acc = [], []
  for d in range(n + 1):
    deferred = set(order[:d])
    sys_acc.append(sum(expert[i] if i in deferred else model[i]
                       for i in range(n)) / n)
    exp_acc.append(sum(expert[i] for i in deferred) / d if d else np.nan)
  exp_acc[0] = exp_acc[1]
  return np.array(sys_acc), np.array(exp_acc)


def _np_area(values, a, b):
  n = len(values) - 1
  grid = np.arange(n + 1) / n
  inside = grid[(grid > a) & (grid < b)]
  xs = np.concatenate([[a], inside, [b]])
  ys = np.interp(xs, grid, values)
  total = 0.0
  for i in range(len(xs) - 1):
    total += (xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2
  return total / (b - a)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("interval", [(0.0, 1.0), (0.0, 0.2), (0.8, 1.0),
                                      (0.13, 0.61)])
def test_areas_match_numpy_loop(seed, interval):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 40))
  prio = rng.integers(-3, 4, n).astype(np.float64)  # many ties
  model = rng.random(n) < 0.6
  expert = rng.random(n) < 0.7
  sys_ref, exp_ref = _np_curves(prio, model, expert)
  curves = metrics.deferral_curves(prio, model, expert)
  np.testing.assert_allclose(curves.system_accuracy, sys_ref, rtol=1e-6)
  np.testing.assert_allclose(curves.expert_accuracy, exp_ref, rtol=1e-6)
  np.testing.assert_allclose(
      metrics.aursac(prio, model, expert, interval=interval),
      _np_area(sys_ref, *interval), rtol=1e-5)
  np.testing.assert_allclose(
      metrics.aurdac(prio, model, expert, interval=interval),
      _np_area(exp_ref, *interval), rtol=1e-5)


def test_routed_and_per_expert_readings_via_vmap():
  rng = np.random.default_rng(5)
  prio = rng.normal(size=(20, 3)).astype(np.float32)
  correct = rng.random((20, 3)) < 0.5
  model = rng.random(20) < 0.5
  per_expert = jax.jit(jax.vmap(metrics.aursac, in_axes=(1, None, 1)))(
      prio, model, correct)
  for j in range(3):
    np.testing.assert_allclose(per_expert[j],
                               metrics.aursac(prio[:, j], model,
                                              correct[:, j]), rtol=1e-6)
  route = prio.argmax(1)
  routed = metrics.aursac(prio.max(1), model, correct[np.arange(20), route])
  sys_ref, _ = _np_curves(prio.max(1), model, correct[np.arange(20), route])
  np.testing.assert_allclose(routed, _np_area(sys_ref, 0.0, 1.0), rtol=1e-5)


def test_nan_under_jit_and_bad_input():
  prio = jnp.array([0.1, jnp.nan, 0.3])
  ok = jnp.array([True, False, True])
  assert np.isnan(jax.jit(metrics.aursac)(prio, ok, ok))
  with pytest.raises(ValueError, match="`priority` contains NaN"):
    metrics.deferral_curves(prio, ok, ok)
  p = jnp.array([0.1, 0.2, 0.3])
  for bad in [(0.5, 0.5), (0.6, 0.2), (-0.1, 0.5), (0.0, 1.5)]:
    with pytest.raises(ValueError, match="`interval`"):
      metrics.aurdac(p, ok, ok, interval=bad)
  with pytest.raises(ValueError, match="`interval` must be a pair"):
    metrics.aursac(p, ok, ok, interval=0.5)
  with pytest.raises(ValueError, match="expert_correct"):
    metrics.aursac(p, ok, jnp.array([True, False]))
  with pytest.raises(ValueError, match="model_correct"):
    metrics.aursac(p, jnp.array([0.0, 2.0, 1.0]), ok)
  with pytest.raises(ValueError, match="priority"):
    metrics.aursac(jnp.zeros((0,)), jnp.zeros((0,)), jnp.zeros((0,)))
  # A traced invalid interval gives NaN.
  area = jax.jit(lambda a: metrics.aursac(p, ok, ok, interval=(a, 0.5)))(0.7)
  assert np.isnan(area)


@pytest.mark.parametrize("area", [metrics.aursac, metrics.aurdac])
def test_areas_name_nan_priorities_and_bad_intervals(area):
  ok = jnp.array([True, False, True])
  with pytest.raises(ValueError, match="`priority` contains NaN"):
    area(jnp.array([0.1, jnp.nan, 0.3]), ok, ok)
  p = jnp.array([0.1, 0.2, 0.3])
  for bad in [(np.nan, 0.5), (0.2, np.inf), (1.0, 1.0), (0.3, 0.1)]:
    with pytest.raises(ValueError, match="`interval` must satisfy"):
      area(p, ok, ok, interval=bad)
  # Under jit an invalid traced interval (a >= b) gives NaN, not a number.
  assert np.isnan(jax.jit(lambda b: area(p, ok, ok, interval=(0.5, b)))(0.5))
