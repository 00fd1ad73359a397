"""Bad input to the conformal functions: clear errors, or marked results under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conformal_reference import random_probs as _probs
from l2d_jax import conformal


def test_integer_scores_are_promoted_to_float():
  # n = 5, alpha = 0.1: rank ceil(6 * 0.9) = 6 > 5 -> +inf, not INT_MAX.
  q = conformal.conformal_quantile(np.arange(5), 0.1)
  assert jnp.issubdtype(q.dtype, jnp.floating) and float(q) == np.inf
  # n = 9, alpha = 0.2: rank 8 -> the 8th smallest of 0..8 is 7.
  assert float(conformal.conformal_quantile(np.arange(9), 0.2)) == 7.0
  # Conformity side: floor(10 * 0.2) = 2nd smallest of 0..8 is 1; rank 0
  # (alpha = 0.05: floor(0.5) = 0) keeps everything.
  assert float(conformal.conformity_threshold(np.arange(9), 0.2)) == 1.0
  assert float(conformal.conformity_threshold(np.arange(9), 0.05)) == -np.inf


@pytest.mark.parametrize("alpha", [1.5, np.nan, 0.0, 1.0, -0.1, np.inf])
def test_quantile_rank_rejects_bad_alpha(alpha):
  with pytest.raises(ValueError, match=r"`alpha` must lie in .*\(0, 1\)"):
    conformal.quantile_rank(10, alpha)
  with pytest.raises(ValueError, match="alpha"):
    conformal.conformal_quantile(np.ones(5), np.array([0.1, alpha]))
  with pytest.raises(ValueError, match="alpha"):
    conformal.conformity_threshold(np.ones(5), alpha)
  # Under jit the value cannot be checked: rank -1, threshold NaN.
  assert int(jax.jit(conformal.quantile_rank, static_argnums=0)(
      10, alpha)) == -1
  assert np.isnan(jax.jit(conformal.conformal_quantile)(np.ones(5), alpha))
  assert np.isnan(jax.jit(conformal.conformity_threshold)(np.ones(5), alpha))


def test_quantile_rank_rejects_bad_n():
  with pytest.raises(ValueError, match="`n`"):
    conformal.quantile_rank(0, 0.1)
  with pytest.raises(TypeError, match="`n`"):
    conformal.quantile_rank(10.0, 0.1)


def test_paper_alpha_grid_stays_below_one_and_validates():
  g = conformal.paper_alpha_grid(0.0004)
  assert g.max() == 0.999 and g.min() == 0.001 and np.all(np.diff(g) > 0)
  np.testing.assert_array_equal(conformal.paper_alpha_grid(np.float32(0.9914)),
                                conformal.paper_alpha_grid(0.9914))
  np.testing.assert_array_equal(conformal.paper_alpha_grid(np.float64(0.5)),
                                conformal.paper_alpha_grid(0.5))
  for bad in (np.nan, 0.0, 1.0, -0.5, np.float64(1.5)):
    with pytest.raises(ValueError, match="model_accuracy"):
      conformal.paper_alpha_grid(bad)
  for bad in ("0.9", None, [0.9], True):
    with pytest.raises(TypeError, match="model_accuracy"):
      conformal.paper_alpha_grid(bad)


def test_tune_raps_rejects_bad_lam_grid():
  rng = np.random.default_rng(9)
  p = _probs(rng, 40, 4)
  y = rng.integers(0, 4, 40)
  for grid in ([-0.1, 0.1], [np.nan], []):
    with pytest.raises(ValueError, match="lam_grid"):
      conformal.tune_raps(p, y, 0.1, lam_grid=grid)
  with pytest.raises(ValueError, match="alpha"):
    conformal.tune_raps(p, y, np.full((2, 2), 0.1))
  with pytest.raises(ValueError, match="alpha"):
    conformal.tune_raps(p, y, 1.5)


def test_nan_threshold_is_refused_or_consistent():
  rng = np.random.default_rng(10)
  p = _probs(rng, 12, 4)
  _, sp = conformal.sort_probs(p)
  c = conformal.sorted_aps_conformity(sp)
  t = np.array([0.3, np.nan], np.float32)
  with pytest.raises(ValueError, match="threshold"):
    conformal.prediction_sets(p, threshold=t, score="aps")
  with pytest.raises(ValueError, match="threshold"):
    conformal.set_sizes_from_sorted(c, threshold=t)
  # Under jit both keep no rank at NaN (size 0, 1 with the crossing label).
  for crossing in (False, True):
    sets = jax.jit(lambda pp, tt, cr=crossing: conformal.prediction_sets(
        pp, threshold=tt, score="aps", include_crossing=cr))(p, t)
    sizes = jax.jit(lambda cc, tt, cr=crossing: conformal.set_sizes_from_sorted(
        cc, threshold=tt, include_crossing=cr))(c, t)
    np.testing.assert_array_equal(np.asarray(sets).sum(-1), np.asarray(sizes).T)
    np.testing.assert_array_equal(sizes[:, 1], int(crossing))


def test_set_coverage_rejects_or_drops_out_of_range_labels():
  with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
    conformal.set_coverage(np.zeros((2, 3), bool), np.array([5, 5]))
  with pytest.raises(ValueError, match="labels"):
    conformal.set_coverage(np.ones((2, 3), bool), np.array([-1, 0]))
  with pytest.raises(TypeError, match="labels"):
    conformal.set_coverage(np.ones((2, 3), bool), np.array([0.0, 1.0]))
  # Under jit an out-of-range label is not covered (never another class).
  cov = jax.jit(conformal.set_coverage)(np.ones((2, 3), bool),
                                        np.array([5, -1]))
  assert float(cov) == 0.0
  cov = jax.jit(conformal.set_coverage)(np.ones((4, 3), bool),
                                        np.array([0, 3, 2, -1]))
  assert float(cov) == 0.5


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_softmax_is_accepted(dtype):
  logits = jax.random.normal(jax.random.key(1), (200, 10)) * 3
  p = jax.nn.softmax(logits.astype(dtype), axis=-1)
  y = np.zeros(200, np.int32)
  t = conformal.conformity_threshold(conformal.aps_conformity(p, y), 0.1)
  sets = conformal.prediction_sets(p, threshold=t, score="aps",
                                   include_crossing=True)
  assert sets.shape == (200, 10) and int(sets.sum(-1).min()) >= 1
  with pytest.raises(ValueError, match="sum to 1"):
    conformal.lac_conformity((p * 0.9).astype(dtype))


def test_shape_errors_name_the_argument():
  p = np.full((3, 2), 0.5, np.float32)
  sp = np.asarray(conformal.sort_probs(p)[1])
  cases = [
      (lambda: conformal.prediction_sets(p[0], threshold=0.5, score="aps"),
       "probs"),
      (lambda: conformal.prediction_sets(p, threshold=np.ones((2, 2)),
                                         score="aps"), "threshold"),
      (lambda: conformal.prediction_sets(p, threshold=0.5, score="ap"),
       "score"),
      (lambda: conformal.prediction_sets(p, threshold=0.5, score="raps"),
       "k_reg"),
      (lambda: conformal.prediction_sets(p, threshold=0.5, score="lac",
                                         randomized=True), "randomized"),
      (lambda: conformal.set_sizes_from_sorted(sp[0], threshold=0.5),
       "sorted_conformity"),
      (lambda: conformal.set_coverage(np.ones(3, bool), np.array([0])),
       "sets"),
      (lambda: conformal.set_coverage(np.ones((3, 2), bool), np.array([0])),
       "labels"),
      (lambda: conformal.mean_set_size(np.ones(3, bool)), "sets"),
      (lambda: conformal.conformal_quantile(np.ones((2, 2)), 0.1), "scores"),
      (lambda: conformal.conformal_quantile(np.ones(3), np.full((2, 2), 0.1)),
       "alpha"),
      (lambda: conformal.conformity_threshold(np.ones(0), 0.1), "empty"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp[:, :1],
                                         np.array([0.1]), score="lac"),
       "sorted_probs_test"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(2, np.int32), sp,
                                         np.array([0.1]), score="lac"),
       "label_rank_cal"),
      (lambda: conformal.split_set_sizes(sp, np.array([0, 1, 2]), sp,
                                         np.array([0.1]), score="lac"),
       "label_rank_cal"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp, 0.1,
                                         score="lac"), "alphas"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp,
                                         np.array([0.1, 0.2]), score="raps",
                                         k_reg=np.array([1, 2, 3]), lam=0.1),
       "k_reg"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp,
                                         np.array([0.1]), score="raps",
                                         k_reg=1, lam=-0.1), "lam"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp,
                                         np.array([0.1]), score="aps",
                                         lam=0.1), "RAPS only"),
      (lambda: conformal.split_set_sizes(sp, np.zeros(3, np.int32), sp,
                                         np.array([1.5]), score="aps"),
       "alpha"),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=match):
      fn()


def test_split_set_sizes_marks_bad_values_under_jit():
  p = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], np.float32)
  fn = jax.jit(conformal.split_set_sizes, static_argnames="score")
  sizes = fn(p, np.array([0, 1], np.int32), p, np.array([0.5, 1.5]),
             score="aps")
  assert np.all(np.asarray(sizes)[:, 1] == -1)
  assert np.all(np.asarray(sizes)[:, 0] >= 1)
  sizes = fn(p, np.array([0, 3], np.int32), p, np.array([0.5]), score="aps")
  assert np.all(np.asarray(sizes) == -1)
