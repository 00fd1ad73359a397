"""Tests for Top-k / Top-k(x) deferral rules, set aggregates and budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import deferral
from l2d_jax import losses


def _rng(seed=0):
  return np.random.default_rng(seed)


def np_rank(scores):
  """Agents by decreasing score, ties to the lower index (numpy reference)."""
  scores = np.asarray(scores, np.float64)
  return np.array([sorted(range(len(r)), key=lambda j: (-r[j], j))
                   for r in scores.reshape(-1, scores.shape[-1])]).reshape(
                       scores.shape)


# --- top_k_agents and bayes_optimal_agents.


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_agents_matches_numpy_with_ties(k):
  rng = _rng(1)
  scores = rng.integers(-2, 3, size=(200, 5)).astype(np.float32)
  got = jax.jit(lambda r: deferral.top_k_agents(r, k=k))(scores)
  assert got.dtype == jnp.int32 and got.shape == (200, k)
  np.testing.assert_array_equal(got, np_rank(scores)[:, :k])


def test_top_k_agents_signed_zero_ties_and_order():
  scores = jnp.array([[0.0, -0.0, 0.0, -0.0], [1.0, 3.0, 3.0, 2.0]])
  np.testing.assert_array_equal(deferral.top_k_agents(scores, k=4),
                                [[0, 1, 2, 3], [1, 2, 3, 0]])
  np.testing.assert_array_equal(
      jax.jit(lambda r: deferral.top_k_agents(r, k=4))(scores),
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
