"""Tests for Top-k / Top-k(x) deferral rules, set aggregates and budgets."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from l2d_jax import deferral
from l2d_jax import losses
from l2d_jax import models


def _rng(seed=0):
  return np.random.default_rng(seed)


def np_rank(scores):
  """Agents by decreasing score, ties to the lower index (numpy reference)."""
  scores = np.asarray(scores, np.float64)
  return np.array([sorted(range(len(r)), key=lambda j: (-r[j], j))
                   for r in scores.reshape(-1, scores.shape[-1])]).reshape(
                       scores.shape)


# --- top_k_agents and bayes_optimal_agents.


# 5 agents rank by pairwise comparison, 40 through lax.top_k: same rule.
@pytest.mark.parametrize("num_agents,k", [(5, 1), (5, 2), (5, 5), (40, 1),
                                          (40, 7), (40, 40)])
def test_top_k_agents_matches_numpy_with_ties(num_agents, k):
  rng = _rng(1)
  scores = rng.integers(-2, 3, size=(200, num_agents)).astype(np.float32)
  got = jax.jit(lambda r: deferral.top_k_agents(r, k=k))(scores)
  assert got.dtype == jnp.int32 and got.shape == (200, k)
  np.testing.assert_array_equal(got, np_rank(scores)[:, :k])


@pytest.mark.parametrize("num_agents", [4, 40])
def test_top_k_agents_signed_zero_ties_and_nan_rows(num_agents):
  scores = np.full((3, num_agents), -1.0, np.float32)
  scores[0, :4] = [0.0, -0.0, 0.0, -0.0]
  scores[1, :4] = [1.0, 3.0, 3.0, 2.0]
  scores[2, 1] = np.nan
  f = jax.jit(lambda r: deferral.top_k_agents(r, k=4))
  np.testing.assert_array_equal(f(scores), [[0, 1, 2, 3], [1, 2, 3, 0],
                                            [-1, -1, -1, -1]])
  np.testing.assert_array_equal(deferral.top_k_agents(scores[:2], k=4),
                                [[0, 1, 2, 3], [1, 2, 3, 0]])


def test_top_k_agents_leading_dims_vmap_and_nan_rows():
  rng = _rng(2)
  scores = rng.normal(size=(3, 4, 6)).astype(np.float32)
  got = deferral.top_k_agents(scores, k=3)
  assert got.shape == (3, 4, 3)
  np.testing.assert_array_equal(
      got, jax.vmap(jax.vmap(lambda r: deferral.top_k_agents(r, k=3)))(scores))
  bad = scores[0].copy()
  bad[1, 2] = np.nan
  out = jax.jit(lambda r: deferral.top_k_agents(r, k=2))(bad)
  np.testing.assert_array_equal(out[1], [-1, -1])
  assert np.all(np.asarray(out[0]) >= 0)
  with pytest.raises(ValueError, match="`rejector_scores` contains NaN"):
    deferral.top_k_agents(bad, k=2)


@pytest.mark.parametrize("k,err,match", [
    (0, ValueError, "`k` must be >= 1"),
    (7, ValueError, r"`k` must lie in \[1, A\] = \[1, 6\]"),
    (2.0, TypeError, "`k` must be an int"),
])
def test_top_k_agents_bad_k(k, err, match):
  with pytest.raises(err, match=match):
    deferral.top_k_agents(jnp.zeros((2, 6)), k=k)


def test_top_k_agents_bad_scores():
  with pytest.raises(TypeError, match="`rejector_scores` must have a floating"):
    deferral.top_k_agents(jnp.zeros((2, 3), jnp.int32), k=1)
  with pytest.raises(ValueError, match="`rejector_scores` must have shape"):
    deferral.top_k_agents(jnp.float32(1.0), k=1)


def test_bayes_optimal_agents_lowest_expected_cost_ties_lower_index():
  costs = jnp.array([[0.3, 0.1, 0.3, 0.0], [0.5, 0.5, 0.5, 0.5]])
  np.testing.assert_array_equal(deferral.bayes_optimal_agents(costs, k=3),
                                [[3, 1, 0], [0, 1, 2]])
  rng = _rng(3)
  costs = rng.uniform(size=(50, 5)).astype(np.float32)
  np.testing.assert_array_equal(deferral.bayes_optimal_agents(costs, k=5),
                                np_rank(-costs))
  with pytest.raises(ValueError, match="`expected_costs` contains NaN"):
    deferral.bayes_optimal_agents(jnp.array([0.0, jnp.nan]), k=1)


# --- numpy references for the set rules (float64, explicit loops).


def np_vote(answers, scores, weighted):
  """Winner of every prefix; ties go to the highest-ranked tied answer."""
  out = []
  order = np_rank(scores[None])[0]
  for k in range(1, len(order) + 1):
    chosen = order[:k]
    w = np.exp(scores[chosen] - scores[chosen].max()) if weighted else np.ones(k)
    w = w / w.sum()
    tally = {}
    for i, a in zip(chosen, w):
      tally[answers[i]] = tally.get(answers[i], 0.0) + a
    best = max(tally.values())
    out.append(next(answers[i] for i in chosen if tally[answers[i]] == best))
  return np.array(out)


def np_average(values, scores, weighted):
  out = []
  order = np_rank(scores[None])[0]
  for k in range(1, len(order) + 1):
    chosen = order[:k]
    w = np.exp(scores[chosen] - scores[chosen].max()) if weighted else np.ones(k)
    out.append(np.sum(w / w.sum() * values[chosen]))
  return np.array(out)


@pytest.mark.parametrize("rule", ["majority_vote", "weighted_vote"])
def test_set_votes_match_numpy(rule):
  rng = _rng(4)
  answers = rng.integers(0, 3, size=(300, 6)).astype(np.int32)  # many ties
  scores = rng.normal(size=(300, 6)).astype(np.float32)
  scores[:50] = np.round(scores[:50])  # tied scores too
  got = jax.jit(lambda a, r: deferral.set_predictions(a, r, rule=rule))(
      answers, scores)
  assert got.dtype == jnp.int32 and got.shape == (300, 6)
  expected = np.stack([np_vote(a, r.astype(np.float64), rule[0] == "w")
                       for a, r in zip(answers, scores)])
  np.testing.assert_array_equal(got, expected)


def test_majority_vote_tie_goes_to_highest_ranked_agent():
  # Ranked answers 7, 5, 5, 7: k=4 is a 2-2 tie, won by 7 (the top agent).
  answers = jnp.array([5, 7, 5, 7])
  scores = jnp.array([2.0, 3.0, 1.0, 0.0])
  np.testing.assert_array_equal(
      deferral.set_predictions(answers, scores, rule="majority_vote"),
      [7, 7, 5, 7])
  # Weighted: the top agent's weight beats the two others for every k here.
  np.testing.assert_array_equal(
      deferral.set_predictions(answers, scores, rule="weighted_vote"),
      [7, 7, 7, 7])


@pytest.mark.parametrize("rule", ["weighted_average", "uniform_average"])
def test_set_averages_match_numpy(rule):
  rng = _rng(5)
  values = rng.normal(size=(100, 5)).astype(np.float32)
  scores = (rng.normal(size=(100, 5)) * 3).astype(np.float32)
  got = deferral.set_predictions(values, scores, rule=rule)
  expected = np.stack([np_average(v.astype(np.float64), r.astype(np.float64),
                                  rule[0] == "w")
                       for v, r in zip(values, scores)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_weighted_average_softmax_over_selected_agents_only():
  values = jnp.array([1.0, 3.0, 100.0])
  scores = jnp.array([0.0, jnp.log(3.0), -50.0])
  got = deferral.set_predictions(values, scores, rule="weighted_average")
  # k=2: weights 3/4, 1/4 over the two selected agents (sum to 1).
  np.testing.assert_allclose(got[:2], [3.0, 2.5], rtol=1e-6)


def test_set_losses_classification():
  answers = jnp.array([[3, 5, 7, 5], [1, 1, 2, 2]])
  scores = jnp.array([[4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
  y = jnp.array([5, 1])
  np.testing.assert_array_equal(
      deferral.set_losses(answers, y, scores, metric="top_k"),
      [[1, 0, 0, 0], [1, 1, 0, 0]])
  np.testing.assert_array_equal(
      deferral.set_losses(answers, y, scores, metric="majority_vote"),
      [[1, 1, 1, 0], [1, 1, 1, 1]])  # row 1, k=4: 2-2 tie, answer 2 ranks first


@pytest.mark.parametrize("loss", ["squared", "absolute"])
def test_set_losses_regression(loss):
  rng = _rng(6)
  values = rng.normal(size=(40, 4)).astype(np.float32)
  y = rng.normal(size=40).astype(np.float32)
  scores = rng.normal(size=(40, 4)).astype(np.float32)
  base = (lambda d: d * d) if loss == "squared" else np.abs
  order = np_rank(scores)
  ranked_err = base(np.take_along_axis(values, order, -1) - y[:, None])
  np.testing.assert_allclose(
      deferral.set_losses(values, y, scores, metric="best_agent", loss=loss),
      np.minimum.accumulate(ranked_err, axis=-1), rtol=1e-6)
  for metric in ("weighted_average", "uniform_average"):
    agg = deferral.set_predictions(values, scores, rule=metric)
    np.testing.assert_allclose(
        deferral.set_losses(values, y, scores, metric=metric, loss=loss),
        base(np.asarray(agg) - y[:, None]), rtol=1e-6)


def test_set_functions_leading_dims_and_nan_under_jit():
  rng = _rng(7)
  values = rng.normal(size=(2, 3, 4)).astype(np.float32)
  y = rng.normal(size=(2, 3)).astype(np.float32)
  scores = rng.normal(size=(2, 3, 4)).astype(np.float32)
  out = deferral.set_losses(values, y, scores, metric="weighted_average")
  assert out.shape == (2, 3, 4)
  np.testing.assert_allclose(out, jax.vmap(jax.vmap(
      lambda v, t, r: deferral.set_losses(v, t, r, metric="weighted_average")
  ))(values, y, scores), rtol=1e-6)
  scores[0, 1, 2] = np.nan
  f = jax.jit(lambda v, t, r: deferral.set_losses(v, t, r, metric="best_agent"))
  out = f(values, y, scores)
  assert np.all(np.isnan(out[0, 1])) and np.all(np.isfinite(out[1]))


def test_set_budgets_and_expected_budget():
  scores = jnp.array([[0.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
  beta = jnp.array([0.5, 0.25, 0.125])
  np.testing.assert_allclose(deferral.set_budgets(scores, beta),
                             [[0.25, 0.375, 0.875], [0.5, 0.75, 0.875]])
  np.testing.assert_allclose(
      deferral.set_budgets(scores, beta, count_model=False),
      [[0.25, 0.375, 0.375], [0.0, 0.25, 0.375]])
  assert float(deferral.expected_budget(scores, beta, k=1)) == 0.375
  assert float(deferral.expected_budget(
      scores, beta, k=jnp.array([3, 2]))) == (0.875 + 0.75) / 2
  assert float(deferral.expected_budget(
      scores, beta, k=jnp.array([3, 1]), count_model=False)) == 0.375 / 2
  assert float(deferral.expected_cardinality(jnp.array([3, 1, 1, 1]))) == 1.5
  f = jax.jit(lambda r, k: deferral.expected_budget(r, beta, k=k))
  assert np.isnan(f(scores, jnp.array([3, 4])))


def test_at_cardinality_and_select_cardinality():
  values = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  np.testing.assert_array_equal(
      deferral.at_cardinality(values, jnp.array([3, 1])), [3.0, 4.0])
  got = jax.jit(deferral.at_cardinality)(values, jnp.array([0, 2]))
  assert np.isnan(got[0]) and got[1] == 5.0
  with pytest.raises(ValueError, match=r"`k` must lie in \[1, 3\]"):
    deferral.at_cardinality(values, jnp.array([0, 2]))
  s = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0], [-1.0, -1.0, -1.0]])
  np.testing.assert_array_equal(deferral.select_cardinality(s), [1, 3, 1])
  s_nan = s.at[1, 0].set(jnp.nan)
  np.testing.assert_array_equal(
      jax.jit(deferral.select_cardinality)(s_nan), [1, -1, 1])


def test_top_kx_agents():
  scores = jnp.array([[0.0, 3.0, 1.0, 2.0], [4.0, 3.0, 2.0, 1.0]])
  selector = jnp.array([[0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])  # K = 3 <= A = 4
  agents, k = deferral.top_kx_agents(scores, selector)
  np.testing.assert_array_equal(agents, [[1, 3, 2, -1], [0, -1, -1, -1]])
  np.testing.assert_array_equal(k, [3, 1])
  with pytest.raises(ValueError, match="more cardinalities|only A=4 agents"):
    deferral.top_kx_agents(scores, jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match="`selector_scores` has 5 cardinalities"):
    deferral.select_cardinality(jnp.zeros((2, 5)), num_agents=4)
  with pytest.raises(ValueError, match="batch shape"):
    deferral.top_kx_agents(scores, jnp.zeros((3, 4)))


def _cascade(confidence, thresholds, order):
  """Early-exit cascade: consult agents in `order` until one is confident."""
  consulted = []
  for stage, agent in enumerate(order):
    consulted.append(agent)
    if confidence[agent] >= thresholds[stage]:
      break
  return consulted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cascade_is_a_top_kx_allocation(seed):
  """Lemma A.4/A.6: fixed order + thresholds = rejector scores + selector."""
  rng = _rng(seed)
  num_agents, n = 3, 500
  order = rng.permutation(num_agents)
  thresholds = np.array([0.6, 0.5, -np.inf])  # the last stage always answers
  # Confidences on a coarse grid, so that conf == threshold happens.
  confidence = rng.integers(0, 11, size=(n, num_agents)) / 10.0
  # Rejector: input-independent scores decreasing along the order.
  rejector = np.zeros((n, num_agents), np.float32)
  rejector[:, order] = np.arange(num_agents, 0, -1, dtype=np.float32)
  # Selector: scores of k = 1..A, 1 at the first confident stage, else 0.
  passes = confidence[:, order] >= thresholds  # [n, stage]
  first = passes & (np.cumsum(passes, axis=1) == 1)
  selector = first.astype(np.float32)
  agents, k = jax.jit(deferral.top_kx_agents)(rejector, selector)
  for i in range(n):
    expected = _cascade(confidence[i], thresholds, order)
    assert int(k[i]) == len(expected)
    np.testing.assert_array_equal(agents[i, :len(expected)], expected)
    assert np.all(np.asarray(agents[i, len(expected):]) == -1)
  # The answering agent (the cascade's last stage) is the last one selected.
  last = jnp.take_along_axis(agents, (k - 1)[:, None], axis=1)[:, 0]
  np.testing.assert_array_equal(
      last, [_cascade(c, thresholds, order)[-1] for c in confidence])


# --- cardinality loss and surrogate.


def test_cardinality_loss_and_lambda_sweep():
  d = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  scores = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
  beta = jnp.array([0.0, 0.5, 0.25])
  got = losses.cardinality_loss(d, scores, beta=beta, lam=2.0)
  np.testing.assert_allclose(got, [[1.0, 1.0, 1.5], [0.5, 1.5, 2.5]])
  lams = jnp.array([0.0, 1.0, 2.0])
  sweep = jax.jit(lambda l: losses.cardinality_loss(d, scores, beta=beta,
                                                    lam=l))(lams[:, None])
  assert sweep.shape == (3, 2, 3)
  np.testing.assert_allclose(sweep[2], got)
  np.testing.assert_allclose(sweep[0], d)
  free_model = losses.cardinality_loss(d, scores, beta=jnp.ones(3), lam=1.0,
                                       count_model=False)
  np.testing.assert_allclose(free_model, [[1.0, 1.0, 2.0], [1.0, 2.0, 3.0]])


def np_cardinality_surrogate(s, c, nu, scale):
  s = np.asarray(s, np.float64)
  c = np.asarray(c, np.float64)
  out = []
  for si, ci in zip(s, c):
    if scale is None:
      span = ci.max() - ci.min()
      cbar = (ci - ci.min()) / span if span > 0 else np.zeros_like(ci)
    else:
      cbar = np.minimum(ci / scale, 1.0)
    total = 0.0
    for k in range(len(si)):
      v = sum(np.exp(si[i] - si[k]) for i in range(len(si)) if i != k)
      phi = np.log1p(v) if nu == 1 else ((1 + v) ** (1 - nu) - 1) / (1 - nu)
      total += (1 - cbar[k]) * phi
    out.append(total)
  return np.array(out)


@pytest.mark.parametrize("nu", [0.0, 1.0, 1.5])
@pytest.mark.parametrize("scale", [None, 2.0])
def test_cardinality_surrogate_matches_numpy(nu, scale):
  rng = _rng(8)
  s = rng.normal(size=(30, 4)).astype(np.float32)
  c = rng.uniform(0, 2.5, size=(30, 4)).astype(np.float32)  # some above scale
  c[0] = 0.5  # flat row: min-max gives c̄ = 0, every weight 1
  got = jax.jit(lambda a, b: losses.cardinality_surrogate(
      a, b, nu=nu, scale=scale))(s, c)
  np.testing.assert_allclose(got, np_cardinality_surrogate(s, c, nu, scale),
                             rtol=2e-5, atol=1e-6)
  assert np.all(np.asarray(got) >= 0)


def _minimise(risk, shape, steps=300):
  with jax.enable_x64(True):
    solver = optax.lbfgs()
    x = jnp.zeros(shape)
    state = solver.init(x)
    vg = optax.value_and_grad_from_state(risk)

    @jax.jit
    def step(x, state):
      value, grad = vg(x, state=state)
      updates, state = solver.update(grad, state, x, value=value, grad=grad,
                                     value_fn=risk)
      return optax.apply_updates(x, updates), state

    for _ in range(steps):
      x, state = step(x, state)
  return np.asarray(x)


def test_cardinality_surrogate_global_scale_is_consistent_min_max_is_not():
  # Two equally likely outcomes; cardinality costs for k = 1, 2, 3.
  costs = np.array([[0.0, 10.0, 20.0], [1.2, 0.0, 1.2]])
  p = np.array([0.5, 0.5])
  assert np.argmin(p @ costs) == 0  # the Bayes-optimal cardinality is k = 1

  def risk_fn(scale):
    def risk(s):
      ss = jnp.broadcast_to(s, costs.shape)
      return jnp.sum(p * losses.cardinality_surrogate(
          ss, jnp.asarray(costs), scale=scale))
    return risk

  s_global = _minimise(risk_fn(20.0), (3,))
  s_minmax = _minimise(risk_fn(None), (3,), steps=100)
  assert int(deferral.select_cardinality(s_global.astype(np.float32))) == 1
  # Min-max weights E[1 − c̄] = (0.5, 0.75, 0): the minimiser picks k = 2.
  assert int(deferral.select_cardinality(s_minmax.astype(np.float32))) == 2


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(scale=0.0), ValueError, "`scale` must be positive"),
    (dict(scale=float("inf")), ValueError, "`scale` must be positive"),
    (dict(scale="1"), TypeError, "`scale` must be None or a real"),
    (dict(nu=-1.0), ValueError, "`nu` must lie in"),
])
def test_cardinality_surrogate_bad_options(kwargs, err, match):
  with pytest.raises(err, match=match):
    losses.cardinality_surrogate(jnp.zeros((2, 3)), jnp.ones((2, 3)), **kwargs)


def test_cardinality_bad_inputs():
  scores = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="`cardinality_costs` contains NaN"):
    losses.cardinality_surrogate(scores, jnp.array([[0.0, jnp.nan, 1.0]] * 2))
  with pytest.raises(ValueError, match="`cardinality_costs` must have the"):
    losses.cardinality_surrogate(scores, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="`lam` must be finite and >= 0"):
    losses.cardinality_loss(jnp.ones((2, 3)), scores, beta=0.1, lam=-1.0)
  with pytest.raises(ValueError, match=r"`beta` \(consultation costs\) must"):
    losses.cardinality_loss(jnp.ones((2, 3)), scores,
                            beta=jnp.array([0.0, -0.1, 0.0]), lam=1.0)
  with pytest.raises(ValueError, match="`beta` contains NaN or inf"):
    deferral.set_budgets(scores, jnp.array([0.0, jnp.inf, 0.0]))
  with pytest.raises(ValueError, match="`metric_losses` must have the shape"):
    losses.cardinality_loss(jnp.ones((2, 4)), scores, beta=0.1, lam=1.0)


def test_set_functions_bad_inputs():
  scores = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="`rule` must be one of"):
    deferral.set_predictions(jnp.zeros((2, 3), jnp.int32), scores, rule="max")
  with pytest.raises(ValueError, match="`metric` must be one of"):
    deferral.set_losses(jnp.zeros((2, 3)), jnp.zeros(2), scores, metric="x")
  with pytest.raises(ValueError, match="`agent_predictions` must have the"):
    deferral.set_predictions(jnp.zeros((2, 4)), scores,
                             rule="uniform_average")
  with pytest.raises(ValueError, match="`targets` must have the batch shape"):
    deferral.set_losses(jnp.zeros((2, 3)), jnp.zeros(3), scores,
                        metric="best_agent")
  with pytest.raises(TypeError, match="`agent_predictions` must have an int"):
    deferral.set_predictions(jnp.zeros((2, 3)), scores, rule="majority_vote")
  with pytest.raises(TypeError, match="`agent_predictions` must have a float"):
    deferral.set_predictions(jnp.zeros((2, 3), jnp.int32), scores,
                             rule="weighted_average")
  with pytest.raises(ValueError, match="`rejector_scores` contains NaN or inf"):
    deferral.set_predictions(jnp.zeros((2, 3)), scores.at[0, 0].set(jnp.inf),
                             rule="weighted_average")
  with pytest.raises(ValueError, match="`loss` must be one of"):
    deferral.set_losses(jnp.zeros((2, 3)), jnp.zeros(2), scores,
                        metric="best_agent", loss="huber")


def test_mlp_rejector_learns_the_bayes_ranking():
  """models.MLP with A outputs serves as the rejector (no new model needed)."""
  rng = _rng(9)
  n = 2000

  def expected_costs(x):
    c0 = np.full(len(x), 0.5)
    c1 = np.where(x[:, 0] > 0, 0.1, 0.9)
    c2 = np.where(x[:, 1] > 0, 0.2, 0.8)
    return np.stack([c0, c1, c2], axis=-1)

  x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
  costs = (rng.uniform(size=(n, 3)) < expected_costs(x)).astype(np.float32)
  model = models.MLP(2, (32,), 3, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, x, c):
    def loss_fn(m):
      return jnp.mean(losses.topk_deferral_surrogate(m(x), c))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  for _ in range(300):
    step(model, opt, x, costs)
  x_test = rng.uniform(-1, 1, size=(500, 2)).astype(np.float32)
  x_test = x_test[np.abs(x_test).min(-1) > 0.1]  # away from the boundaries
  ranking = deferral.top_k_agents(model(x_test), k=3)
  bayes = deferral.bayes_optimal_agents(
      expected_costs(x_test).astype(np.float32), k=3)
  agree = np.mean(np.all(np.asarray(ranking) == np.asarray(bayes), -1))
  assert agree > 0.9


def test_lambda_sweep_compiles_once_and_vmaps():
  rng = _rng(10)
  d = rng.uniform(size=(2, 5, 4)).astype(np.float32)
  scores = rng.normal(size=(2, 5, 4)).astype(np.float32)
  selector = rng.normal(size=(2, 5, 4)).astype(np.float32)
  beta = jnp.array([0.0, 0.1, 0.2, 0.3])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def surrogate(lam):
    c = losses.cardinality_loss(d, scores, beta=beta, lam=lam)
    return losses.cardinality_surrogate(selector, c, scale=4.0)

  for lam in (0.0, 0.5, 1.0, 2.0):
    out = surrogate(jnp.float32(lam))
    assert out.shape == (2, 5)
  per = jax.vmap(jax.vmap(lambda s, c: losses.cardinality_surrogate(
      s, c, nu=0.5)))(selector, d)
  np.testing.assert_allclose(
      per, losses.cardinality_surrogate(selector, d, nu=0.5), rtol=1e-6)
