"""Tests for the Top-k deferral losses: comp-sum, agent costs, surrogates."""

import functools
import itertools

import jax
import jax.numpy as jnp
import jax.test_util as jtu
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from l2d_jax import deferral
from l2d_jax import losses
from l2d_jax.losses import _topk_comp_sum

NUS = (0.0, 0.5, 1.0, 1.5, 2.0)

# --- numpy references (float64), straight from the paper's definitions.


def np_comp_sum(scores, targets, nu):
  """Ψ^ν(Σ_{j'≠j} exp(s_j' − s_j)) per row, from the definition."""
  scores = np.asarray(scores, np.float64)
  out = []
  for s, j in zip(scores.reshape(-1, scores.shape[-1]), np.ravel(targets)):
    v = sum(np.exp(s[i] - s[j]) for i in range(len(s)) if i != j)
    if nu == 1.0:
      out.append(np.log1p(v))
    else:
      out.append(((1.0 + v) ** (1.0 - nu) - 1.0) / (1.0 - nu))
  return np.array(out).reshape(np.shape(targets))


def np_surrogate(scores, costs, nu):
  """Σ_j τ_j Φ^ν(r, j), τ_j = Σ_{i≠j} c_i, with explicit loops."""
  scores = np.asarray(scores, np.float64)
  costs = np.asarray(costs, np.float64)
  out = []
  for r, c in zip(scores, costs):
    total = 0.0
    for j in range(len(r)):
      tau = sum(c[i] for i in range(len(c)) if i != j)
      total += tau * np_comp_sum(r[None], np.array([j]), nu)[0]
    out.append(total)
  return np.array(out)


def np_topk_loss(scores, costs, k):
  out = []
  for r, c in zip(np.asarray(scores), np.asarray(costs)):
    order = sorted(range(len(r)), key=lambda j: (-r[j], j))
    out.append(sum(c[j] for j in order[:k]))
  return np.array(out)


def _rng(seed=0):
  return np.random.default_rng(seed)


# --- comp-sum loss.


@pytest.mark.parametrize("nu", NUS)
def test_comp_sum_matches_numpy(nu):
  rng = _rng(1)
  scores = rng.normal(size=(64, 5)).astype(np.float32) * 2.0
  targets = rng.integers(0, 5, size=64).astype(np.int32)
  got = jax.jit(lambda s, t: losses.comp_sum_loss(s, t, nu=nu))(scores, targets)
  np.testing.assert_allclose(got, np_comp_sum(scores, targets, nu),
                             rtol=2e-5, atol=1e-6)
  assert got.dtype == jnp.float32
  assert np.all(np.asarray(got) >= 0)


@pytest.mark.parametrize("nu", NUS)
def test_comp_sum_check_grads_float64(nu):
  rng = _rng(2)
  with jax.enable_x64(True):
    scores = jnp.asarray(rng.normal(size=(6, 4)))
    targets = jnp.asarray(rng.integers(0, 4, size=6))
    f = lambda s: jnp.sum(losses.comp_sum_loss(s, targets, nu=nu))
    jtu.check_grads(jax.jit(f), (scores,), order=2, modes=["rev"],
                    atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(
        f(scores), np_comp_sum(scores, targets, nu).sum(), rtol=1e-12)


@pytest.mark.parametrize("nu", NUS)
def test_comp_sum_gradient_with_tied_top_scores(nu):
  # Φ^ν = expm1((1 − ν)ℓ)/(1 − ν) with ℓ = −log_softmax: the chain rule on
  # optax's cross-entropy gives the reference gradient, also at ties.
  scores = jnp.array([[3.0, 3.0, 1.0], [2.0, 2.0, 2.0], [0.0, 5.0, 5.0]])
  for target in range(3):
    t = jnp.full(3, target)
    ce = optax.softmax_cross_entropy_with_integer_labels(scores, t)
    ce_grad = jax.vmap(jax.grad(
        optax.softmax_cross_entropy_with_integer_labels))(scores, t)
    expected = jnp.exp((1.0 - nu) * ce)[:, None] * ce_grad
    got = jax.vmap(jax.grad(lambda s, y: losses.comp_sum_loss(s, y, nu=nu)))(
        scores, t)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_comp_sum_nu1_is_softmax_cross_entropy():
  rng = _rng(3)
  scores = rng.normal(size=(32, 7)).astype(np.float32) * 3.0
  targets = rng.integers(0, 7, size=32)
  np.testing.assert_allclose(
      losses.comp_sum_loss(scores, targets, nu=1.0),
      optax.softmax_cross_entropy_with_integer_labels(scores, targets),
      rtol=1e-6, atol=1e-6)


def test_comp_sum_special_cases():
  scores = jnp.array([[1.0, 0.0, -1.0], [0.0, 3.0, 0.5]])
  targets = jnp.array([0, 2])
  sm = jax.nn.softmax(scores)[jnp.arange(2), targets]
  # ν = 2: mean absolute error 1 − p_j; ν = 0: sum-exponential 1/p_j − 1.
  np.testing.assert_allclose(losses.comp_sum_loss(scores, targets, nu=2.0),
                             1 - sm, rtol=1e-6)
  np.testing.assert_allclose(losses.comp_sum_loss(scores, targets, nu=0.0),
                             1 / sm - 1, rtol=1e-5)


def test_comp_sum_precise_near_zero():
  # A confident correct score: Φ^ν ≈ v = 3·e^-20 for every ν; no 1 − 1 loss.
  scores = jnp.array([[20.0, 0.0, 0.0, 0.0]])
  expected = 3 * np.exp(-20.0)
  for nu in NUS:
    got = float(losses.comp_sum_loss(scores, jnp.array([0]), nu=nu)[0])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("nu", NUS)
def test_comp_sum_extreme_scores(nu):
  scores = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
  targets = jnp.array([0, 0])  # right with a huge margin, then wrong
  values = losses.comp_sum_loss(scores, targets, nu=nu)
  grads = jax.vmap(jax.grad(lambda s, t: losses.comp_sum_loss(s, t, nu=nu)))(
      scores, targets)
  assert np.all(np.isfinite(grads)), grads
  np.testing.assert_array_equal(grads[0], 0.0)  # exp(-2e4) underflows
  assert float(values[0]) == pytest.approx(0.0, abs=1e-30)
  if nu >= 1.0:
    # ℓ = 2e4: logistic 2e4, GCE/MAE bounded by 1/(ν − 1).
    expected = 2e4 if nu == 1.0 else -np.expm1((1 - nu) * 2e4) / (nu - 1)
    np.testing.assert_allclose(float(values[1]), expected, rtol=1e-6)
    if nu == 1.0:  # GCE and MAE saturate: exp((1 − ν)·2e4) = 0 there
      np.testing.assert_allclose(grads[1], [-1.0, 1.0, 0.0], atol=1e-6)
  else:
    # exp((1 − ν)·2e4) overflows: the value is +inf, its gradient 0 (no NaN).
    assert float(values[1]) == np.inf
    np.testing.assert_array_equal(grads[1], 0.0)


def test_comp_sum_overflow_threshold_nu0():
  # Finite just below log(finfo.max) − 1, +inf above, for float32.
  limit = float(np.log(np.finfo(np.float32).max)) - 1.0
  below = losses.comp_sum_loss(jnp.array([0.0, limit - 0.5]), jnp.array(0),
                               nu=0.0)
  above = losses.comp_sum_loss(jnp.array([0.0, limit + 0.5]), jnp.array(0),
                               nu=0.0)
  np.testing.assert_allclose(float(below), np.exp(limit - 0.5), rtol=1e-5)
  assert float(above) == np.inf


def test_comp_sum_leading_dims_and_vmap():
  rng = _rng(4)
  scores = rng.normal(size=(3, 4, 5)).astype(np.float32)
  targets = rng.integers(0, 5, size=(3, 4))
  full = losses.comp_sum_loss(scores, targets, nu=0.5)
  assert full.shape == (3, 4)
  per = jax.vmap(jax.vmap(lambda s, t: losses.comp_sum_loss(s, t, nu=0.5)))(
      scores, targets)
  np.testing.assert_allclose(full, per, rtol=1e-6)
  assert losses.comp_sum_loss(scores[0, 0], targets[0, 0]).shape == ()


def test_comp_sum_target_out_of_range_nan_under_jit():
  scores = jnp.zeros((2, 3))
  got = jax.jit(losses.comp_sum_loss)(scores, jnp.array([1, 3]))
  assert np.isfinite(got[0]) and np.isnan(got[1])
  with pytest.raises(ValueError, match="`targets` must lie in"):
    losses.comp_sum_loss(scores, jnp.array([1, 3]))


@pytest.mark.parametrize("nu,err,match", [
    (-0.1, ValueError, r"`nu` must lie in \[0, 2\]"),
    (2.5, ValueError, r"`nu` must lie in \[0, 2\]"),
    (float("nan"), ValueError, r"`nu` must lie in \[0, 2\]"),
    (True, TypeError, "`nu` must be a real"),
    ("1", TypeError, "`nu` must be a real"),
])
def test_comp_sum_bad_nu(nu, err, match):
  with pytest.raises(err, match=match):
    losses.comp_sum_loss(jnp.zeros((2, 3)), jnp.array([0, 1]), nu=nu)


def test_comp_sum_bad_shapes():
  with pytest.raises(ValueError, match="`targets` must have shape"):
    losses.comp_sum_loss(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))
  with pytest.raises(TypeError, match="`scores` must have a floating"):
    losses.comp_sum_loss(jnp.zeros((2, 3), jnp.int32), jnp.array([0, 1]))
  with pytest.raises(TypeError, match="`targets` must have an integer"):
    losses.comp_sum_loss(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))


# --- agent costs.


def test_agent_costs_zero_one():
  preds = np.array([[1, 2, 1], [0, 0, 2]], np.int32)
  y = np.array([1, 2], np.int32)
  alpha = np.array([1.0, 2.0, 0.5], np.float32)
  beta = np.array([0.0, 0.1, 0.25], np.float32)
  got = jax.jit(lambda p, t: losses.agent_costs(
      p, t, alpha=alpha, beta=beta))(preds, y)
  expected = alpha * (preds != y[:, None]) + beta
  np.testing.assert_allclose(got, expected, rtol=1e-7)


@pytest.mark.parametrize("loss", ["squared", "absolute"])
def test_agent_costs_regression(loss):
  rng = _rng(5)
  preds = rng.normal(size=(2, 7, 4)).astype(np.float32)
  y = rng.normal(size=(2, 7)).astype(np.float32)
  alpha = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
  beta = np.array([0.0, 0.05, 0.1, 0.2], np.float32)
  diff = preds.astype(np.float64) - y[..., None]
  err = diff ** 2 if loss == "squared" else np.abs(diff)
  got = losses.agent_costs(preds, y, alpha=alpha, beta=beta, loss=loss)
  assert got.shape == (2, 7, 4)
  np.testing.assert_allclose(got, alpha * err + beta, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(beta=np.array([0.0, -0.1, 0.0])), ValueError, "`beta` must be >= 0"),
    (dict(beta=np.array([0.0, np.nan, 0.0])), ValueError, "`beta` contains"),
    (dict(alpha=np.array([1.0, np.inf, 1.0])), ValueError,
     "`alpha` contains"),
    (dict(beta=np.zeros(4)), ValueError, r"`beta` must be a scalar or have"),
    (dict(loss="hinge"), ValueError, "`loss` must be one of"),
])
def test_agent_costs_bad_options(kwargs, err, match):
  with pytest.raises(err, match=match):
    losses.agent_costs(np.zeros((2, 3), np.int32), np.zeros(2, np.int32),
                       **kwargs)


def test_agent_costs_bad_inputs():
  with pytest.raises(ValueError, match="`agent_predictions` must have shape"):
    losses.agent_costs(np.zeros((2, 3), np.int32), np.zeros(3, np.int32))
  with pytest.raises(TypeError, match="`agent_predictions` must have an int"):
    losses.agent_costs(np.zeros((2, 3)), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="`agent_predictions` contains NaN"):
    losses.agent_costs(np.full((2, 3), np.nan), np.zeros(2), loss="squared")


# --- Top-k surrogate and loss.


@pytest.mark.parametrize("nu", NUS)
def test_surrogate_matches_numpy_and_is_nonnegative(nu):
  rng = _rng(6)
  scores = rng.normal(size=(16, 4)).astype(np.float32)
  costs = rng.uniform(0, 1, size=(16, 4)).astype(np.float32)
  got = jax.jit(lambda r, c: losses.topk_deferral_surrogate(r, c, nu=nu))(
      scores, costs)
  np.testing.assert_allclose(got, np_surrogate(scores, costs, nu), rtol=2e-5,
                             atol=1e-6)
  assert np.all(np.asarray(got) >= 0)


def test_surrogate_is_tau_weighted_comp_sum():
  rng = _rng(7)
  scores = rng.normal(size=(8, 5)).astype(np.float32)
  costs = rng.uniform(0, 2, size=(8, 5)).astype(np.float32)
  tau = costs.sum(-1, keepdims=True) - costs
  for nu in (0.5, 1.0):
    per_target = jnp.stack([losses.comp_sum_loss(
        scores, jnp.full(8, j), nu=nu) for j in range(5)], axis=-1)
    np.testing.assert_allclose(
        losses.topk_deferral_surrogate(scores, costs, nu=nu),
        jnp.sum(tau * per_target, axis=-1), rtol=1e-5)


def test_surrogate_gradient_with_tied_scores():
  # τ = (2, 1) at equal scores: d/ds_0 = 2(p_0 − 1) + 1·p_0 = −0.5.
  g = jax.grad(lambda r: losses.topk_deferral_surrogate(
      r, jnp.array([1.0, 2.0])))(jnp.array([3.0, 3.0]))
  np.testing.assert_allclose(g, [-0.5, 0.5], rtol=1e-6)


def test_surrogate_gradients_finite_at_extremes():
  scores = jnp.array([[1e4, -1e4, 0.0, 5.0]])
  costs = jnp.array([[0.0, 1.0, 0.5, 0.25]])
  for nu in (1.0, 1.5, 2.0):
    g = jax.grad(lambda r: jnp.sum(losses.topk_deferral_surrogate(
        r, costs, nu=nu)))(scores)
    assert np.all(np.isfinite(g))


def test_surrogate_zero_tau_with_infinite_phi_is_zero():
  # Only agent 0 has a cost: τ_0 = 0, so its infinite Φ^0 term is dropped.
  scores = jnp.array([-1e4, 1e4, 0.0])
  costs = jnp.array([1.0, 0.0, 0.0])
  got = losses.topk_deferral_surrogate(scores, costs, nu=0.0)
  assert float(got) == np.inf  # τ_2 = 1 and Φ^0(r, 2) overflows
  costs = jnp.array([0.0, 0.0, 0.0])
  assert float(losses.topk_deferral_surrogate(scores, costs, nu=0.0)) == 0.0


# --- the fast path (ν >= 1: analytic derivative) against the general one.

def _fast_and_general(nu):
  fast = lambda w, s: _topk_comp_sum._weighted_comp_sum_fast(w, s, nu)
  general = lambda w, s: _topk_comp_sum._weighted_comp_sum_general(w, s, nu)
  return fast, general


def _values_and_grads(f, weights, scores):
  total = lambda w, s: jnp.sum(f(w, s))
  return f(weights, scores), jax.grad(total, argnums=(0, 1))(weights, scores)


@pytest.mark.parametrize("nu", [1.0, 1.25, 1.5, 2.0])
def test_fast_path_equals_general_path(nu):
  rng = _rng(20)
  scores = (rng.normal(size=(64, 6)) * 4).astype(np.float32)
  scores[:8] = np.round(scores[:8] / 4)  # rows with tied (top) scores
  scores[8:12, :3] = scores[8:12, 3:].max(-1, keepdims=True)
  weights = rng.uniform(0, 2, size=(64, 6)).astype(np.float32)
  weights[::5, 2] = 0.0
  fast, general = _fast_and_general(nu)
  got_v, got_g = _values_and_grads(jax.jit(fast), weights, scores)
  want_v, want_g = _values_and_grads(jax.jit(general), weights, scores)
  assert got_v.dtype == got_g[1].dtype == jnp.float32
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6, atol=1e-7)
  for got, want in zip(got_g, want_g):  # d/dweights, d/dscores
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  # The public losses take the fast path for ν >= 1.
  tau = weights.sum(-1, keepdims=True) - weights
  np.testing.assert_allclose(
      losses.topk_deferral_surrogate(scores, weights, nu=nu),
      general(jnp.asarray(tau), jnp.asarray(scores)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nu", [1.0, 1.5, 2.0])
def test_fast_path_finite_and_equal_at_extreme_scores(nu):
  scores = jnp.array([[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, -1e4],
                      [1e4, 1e4, 1e4, 1e4], [-1e4, -1e4, -1e4, 1e4]])
  weights = jnp.array([[0.0, 1.0, 0.5, 0.25], [1.0, 2.0, 0.0, 3.0],
                       [1.0, 0.0, 2.0, 0.5], [0.5, 0.5, 0.5, 0.5]])
  fast, general = _fast_and_general(nu)
  got_v, got_g = _values_and_grads(fast, weights, scores)
  want_v, want_g = _values_and_grads(general, weights, scores)
  assert np.all(np.isfinite(got_v))
  assert all(np.all(np.isfinite(g)) for g in got_g)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6)
  for got, want in zip(got_g, want_g):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Exact reference values: row 0, ν = 1: ℓ = (exp(-9995)≈0, 2e4, 1e4, 9995).
  if nu == 1.0:
    np.testing.assert_allclose(float(got_v[0]), 2e4 + 0.5e4 + 0.25 * 9995,
                               rtol=1e-6)


@pytest.mark.parametrize("nu", [1.0, 1.5])
def test_fast_path_check_grads_float64(nu):
  # Second order in both modes: the analytic rule is itself differentiable.
  rng = _rng(21)
  with jax.enable_x64(True):
    scores = jnp.asarray(rng.normal(size=(5, 4)))
    weights = jnp.asarray(rng.uniform(0.1, 1, size=(5, 4)))
    # Jitted: each derivative is one compiled program, not op-by-op calls.
    f = jax.jit(lambda w, s: jnp.sum(
        _topk_comp_sum._weighted_comp_sum_fast(w, s, nu)))
    jtu.check_grads(f, (weights, scores), order=2, modes=["fwd", "rev"],
                    atol=1e-6, rtol=1e-6)
    hess = jax.jit(jax.hessian(f, argnums=1))(weights, scores)
    hess_general = jax.jit(jax.hessian(
        lambda w, s: jnp.sum(_topk_comp_sum._weighted_comp_sum_general(
            w, s, nu)), argnums=1))(weights, scores)
    np.testing.assert_allclose(hess, hess_general, rtol=1e-9, atol=1e-12)


def test_fast_path_precise_near_zero():
  # Two agents, only the top has weight: Σ = ℓ_top = log1p(e^-30), not 0.
  scores = jnp.array([30.0, 0.0])
  for nu in (1.0, 1.5, 2.0):
    got = float(_topk_comp_sum._weighted_comp_sum_fast(
        jnp.array([1.0, 0.0]), scores, nu))
    np.testing.assert_allclose(got, np.exp(-30.0), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_topk_loss_matches_numpy(k):
  rng = _rng(8)
  scores = rng.integers(0, 3, size=(50, 4)).astype(np.float32)  # many ties
  costs = rng.uniform(0, 1, size=(50, 4)).astype(np.float32)
  got = jax.jit(lambda r, c: losses.topk_deferral_loss(r, c, k=k))(
      scores, costs)
  np.testing.assert_allclose(got, np_topk_loss(scores, costs, k), rtol=1e-6)


def test_topk_loss_identity_with_tau():
  # ℓ_k = Σ_j τ_j·1{j ∉ A_k} − (A − 1 − k)·Σ_j c_j, for every k.
  rng = _rng(9)
  num_agents = 6
  scores = rng.normal(size=(40, num_agents)).astype(np.float32)
  costs = rng.uniform(0, 3, size=(40, num_agents))
  tau = costs.sum(-1, keepdims=True) - costs
  for k in range(1, num_agents + 1):
    chosen = np.asarray(deferral.top_k_agents(scores, k=k))
    outside = np.ones_like(costs, bool)
    np.put_along_axis(outside, chosen, False, axis=-1)
    rhs = (tau * outside).sum(-1) - (num_agents - 1 - k) * costs.sum(-1)
    np.testing.assert_allclose(
        losses.topk_deferral_loss(scores, costs.astype(np.float32), k=k),
        rhs, rtol=1e-5, atol=1e-5)


def test_surrogate_independent_of_k_and_one_rejector_serves_every_k():
  # The surrogate has no k; its minimiser is Bayes-optimal for every k at once.
  rng = _rng(10)
  costs = rng.uniform(0, 1, size=(3, 5)).astype(np.float32)
  scores = rng.normal(size=(3, 5)).astype(np.float32)
  assert "k" not in losses.topk_deferral_surrogate.__code__.co_varnames[
      :losses.topk_deferral_surrogate.__code__.co_argcount
      + losses.topk_deferral_surrogate.__code__.co_kwonlyargcount]
  # Permuting agents (scores and costs together) leaves the value unchanged.
  perm = rng.permutation(5)
  np.testing.assert_allclose(
      losses.topk_deferral_surrogate(scores, costs),
      losses.topk_deferral_surrogate(scores[:, perm], costs[:, perm]),
      rtol=1e-6)


def _discrete_problem(seed=11, num_x=3, num_y=4, num_agents=5):
  """Free scores per x; costs c(x, y) [X, Y, A] and p(y | x) [X, Y]."""
  rng = _rng(seed)
  while True:
    costs = rng.uniform(0, 1, size=(num_x, num_y, num_agents))
    p = rng.dirichlet(np.ones(num_y), size=num_x)
    expected = np.einsum("xy,xya->xa", p, costs)
    gaps = np.diff(np.sort(expected, axis=-1), axis=-1)
    if gaps.min() > 0.03:  # distinct expected costs: a unique ranking
      return costs, p, expected


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 1.5])
def test_surrogate_minimiser_ranks_agents_by_expected_cost(nu):
  """Lemma 4.5: the minimiser's ranking is the Bayes-optimal set of every k."""
  costs, p, expected = _discrete_problem()
  num_x, num_y, num_agents = costs.shape
  with jax.enable_x64(True):
    costs_j, p_j = jnp.asarray(costs), jnp.asarray(p)

    def risk(r):  # r [X, A] free scores, one row per x
      rr = jnp.broadcast_to(r[:, None, :], costs_j.shape)
      return jnp.sum(p_j * losses.topk_deferral_surrogate(rr, costs_j, nu=nu))

    solver = optax.lbfgs()
    r = jnp.zeros((num_x, num_agents))
    state = solver.init(r)
    value_and_grad = optax.value_and_grad_from_state(risk)

    @jax.jit
    def step(r, state):
      value, grad = value_and_grad(r, state=state)
      updates, state = solver.update(grad, state, r, value=value, grad=grad,
                                     value_fn=risk)
      return optax.apply_updates(r, updates), state

    for _ in range(300):
      r, state = step(r, state)
    grad_norm = float(jnp.max(jnp.abs(jax.grad(risk)(r))))
  assert grad_norm < 1e-5, grad_norm
  for k in range(1, num_agents + 1):
    np.testing.assert_array_equal(
        deferral.top_k_agents(np.asarray(r, np.float32), k=k),
        deferral.bayes_optimal_agents(expected.astype(np.float32), k=k))


def test_surrogate_and_loss_leading_dims_and_vmap():
  rng = _rng(12)
  scores = rng.normal(size=(2, 3, 4)).astype(np.float32)
  costs = rng.uniform(size=(2, 3, 4)).astype(np.float32)
  s = losses.topk_deferral_surrogate(scores, costs, nu=1.5)
  l = losses.topk_deferral_loss(scores, costs, k=2)
  assert s.shape == l.shape == (2, 3)
  np.testing.assert_allclose(
      s, jax.vmap(jax.vmap(lambda a, b: losses.topk_deferral_surrogate(
          a, b, nu=1.5)))(scores, costs), rtol=1e-6)
  np.testing.assert_allclose(
      l, jax.vmap(jax.vmap(lambda a, b: losses.topk_deferral_loss(
          a, b, k=2)))(scores, costs), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5])
def test_surrogate_and_loss_reject_bad_costs(bad):
  scores = np.zeros((2, 3), np.float32)
  costs = np.ones((2, 3), np.float32)
  costs[1, 2] = bad
  match = "`costs` must be >= 0" if bad == -0.5 else "`costs` contains NaN"
  with pytest.raises(ValueError, match=match):
    losses.topk_deferral_surrogate(scores, costs)
  with pytest.raises(ValueError, match=match):
    losses.topk_deferral_loss(scores, costs, k=1)


def test_surrogate_nan_cost_under_jit_is_nan():
  costs = jnp.array([[0.0, 1.0, 1.0], [0.0, jnp.nan, 1.0]])
  got = jax.jit(losses.topk_deferral_surrogate)(jnp.zeros((2, 3)), costs)
  assert np.isfinite(got[0]) and np.isnan(got[1])


@pytest.mark.parametrize("k,err,match", [
    (0, ValueError, "`k` must be >= 1"),
    (4, ValueError, r"`k` must lie in \[1, A\] = \[1, 3\]"),
    (1.0, TypeError, "`k` must be an int"),
])
def test_topk_loss_bad_k(k, err, match):
  with pytest.raises(err, match=match):
    losses.topk_deferral_loss(jnp.zeros((2, 3)), jnp.ones((2, 3)), k=k)


def test_surrogate_shape_mismatch_and_bad_nu():
  with pytest.raises(ValueError, match="`costs` must have the shape"):
    losses.topk_deferral_surrogate(jnp.zeros((2, 3)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="`nu` must lie in"):
    losses.topk_deferral_surrogate(jnp.zeros((2, 3)), jnp.ones((2, 3)),
                                   nu=3.0)


def test_ties_in_topk_loss_go_to_lower_index():
  scores = jnp.array([1.0, 1.0, 1.0, 0.0])
  costs = jnp.array([0.5, 0.25, 0.125, 0.0])
  for k, expected in zip(range(1, 5), itertools.accumulate(
      [0.5, 0.25, 0.125, 0.0])):
    assert float(losses.topk_deferral_loss(scores, costs, k=k)) == expected


@functools.partial(jax.jit, static_argnames=("nu",))
def _surrogate_and_every_k(scores, costs, *, nu):
  """One compiled program per (A, ν): surrogate; per k, chosen agents, loss."""
  ks = range(1, scores.shape[-1] + 1)
  return (losses.topk_deferral_surrogate(scores, costs, nu=nu),
          [deferral.top_k_agents(scores, k=k) for k in ks],
          [losses.topk_deferral_loss(scores, costs, k=k) for k in ks])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_agents=st.integers(1, 9),
       nu=st.sampled_from(NUS), ties=st.booleans())
def test_surrogate_and_loss_properties(seed, num_agents, nu, ties):
  """For random shapes: surrogate >= 0 and the τ identity for every k."""
  rng = _rng(seed)
  scores = rng.normal(size=(5, num_agents)) * 3
  if ties:
    scores = np.round(scores)
  scores = scores.astype(np.float32)
  costs = rng.uniform(0, 2, size=(5, num_agents)).astype(np.float32)
  sur, chosen_k, loss_k = jax.device_get(
      _surrogate_and_every_k(scores, costs, nu=nu))
  assert np.all(sur >= 0) and np.all(np.isfinite(sur))
  assert len(chosen_k) == len(loss_k) == num_agents
  tau = costs.sum(-1, keepdims=True) - costs
  for k, chosen, loss in zip(range(1, num_agents + 1), chosen_k, loss_k):
    assert chosen.shape == (5, k)
    outside = np.ones_like(costs, bool)
    np.put_along_axis(outside, chosen, False, axis=-1)
    rhs = (tau * outside).sum(-1) - (num_agents - 1 - k) * costs.sum(-1)
    np.testing.assert_allclose(loss, rhs, rtol=1e-5, atol=1e-5)
