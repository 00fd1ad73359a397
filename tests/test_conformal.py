"""Conformal scores, quantiles, sets, RAPS tuning and coverage."""

import fractions
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import conformal_reference as ref
from tests.conformal_reference import random_probs as _probs
from l2d_jax import conformal


@pytest.mark.parametrize("ties", [False, True])
def test_scores_match_numpy_reference(ties):
  rng = np.random.default_rng(0)
  p = _probs(rng, 50, 7, ties)
  y = rng.integers(0, 7, 50)
  np.testing.assert_allclose(conformal.lac_scores(p), ref.lac(p), atol=1e-6)
  np.testing.assert_allclose(conformal.aps_scores(p), ref.aps(p), atol=1e-5)
  np.testing.assert_allclose(conformal.raps_scores(p, k_reg=2, lam=0.1),
                             ref.raps(p, 2, 0.1), atol=1e-5)
  np.testing.assert_allclose(conformal.aps_scores(p, y),
                             ref.aps(p)[np.arange(50), y], atol=1e-5)
  np.testing.assert_allclose(
      jax.jit(conformal.lac_scores)(p, y), 1 - p[np.arange(50), y], atol=1e-6)


def test_sorted_scores_are_nondecreasing_and_consistent():
  rng = np.random.default_rng(1)
  p = _probs(rng, 40, 10, ties=True)
  order, sp = conformal.sort_probs(p)
  for fn, full in ((conformal.sorted_lac_scores, conformal.lac_scores(p)),
                   (conformal.sorted_aps_scores, conformal.aps_scores(p))):
    rs = np.asarray(fn(sp))
    assert np.all(np.diff(rs, axis=1) >= -1e-7)
    np.testing.assert_allclose(
        rs, np.take_along_axis(np.asarray(full), np.asarray(order), 1),
        atol=1e-6)


def test_randomized_aps_needs_key_and_lies_between_bounds(rng):
  p = _probs(np.random.default_rng(2), 30, 5)
  with pytest.raises(ValueError, match="key"):
    conformal.aps_scores(p, randomized=True)
  r = np.asarray(conformal.aps_scores(p, key=rng, randomized=True))
  hi = np.asarray(conformal.aps_scores(p))
  lo = hi - p
  assert np.all(r <= hi + 1e-6) and np.all(r >= lo - 1e-6)
  # One u per point: the sets stay prefixes.
  _, sp = conformal.sort_probs(p)
  rs = np.asarray(conformal.sorted_aps_scores(sp, key=rng, randomized=True))
  assert np.all(np.diff(rs, axis=1) >= -1e-7)


def _exact_quantile(scores, alpha):
  s = np.sort(scores)
  k = math.ceil((len(s) + 1) * (1 - fractions.Fraction(str(alpha))))
  return np.inf if k > len(s) else s[k - 1]


@pytest.mark.parametrize("n", [1, 9, 99, 100, 999, 1000, 1001])
def test_conformal_quantile_is_exact_order_statistic(n):
  rng = np.random.default_rng(n)
  s = rng.random(n).astype(np.float32)
  alphas = np.round(np.concatenate([np.arange(1, 100) / 1000,
                                    np.arange(1, 100) / 100]), 3)
  got = np.asarray(conformal.conformal_quantile(s, alphas))
  want = np.array([_exact_quantile(s, a) for a in alphas])
  np.testing.assert_array_equal(got, want.astype(np.float32))
  # Scalar alpha gives a scalar; jit and presorted agree.
  assert conformal.conformal_quantile(s, 0.1).shape == ()
  np.testing.assert_array_equal(
      jax.jit(conformal.conformal_quantile, static_argnames="presorted")(
          np.sort(s), alphas, presorted=True), got)


def test_conformal_quantile_differs_from_np_quantile_higher():
  # The common np.quantile(..., ceil((n+1)(1-a))/n, 'higher') shortcut picks
  # the next order statistic here; ours must not.
  s = np.arange(1000, dtype=np.float32)
  a = 0.1
  exact = _exact_quantile(s, a)
  shortcut = np.quantile(s, math.ceil(1001 * 0.9) / 1000, method="higher")
  assert float(conformal.conformal_quantile(s, a)) == exact == 900.0
  assert shortcut != exact


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), alpha=st.floats(0.001, 0.999))
def test_quantile_rank_property(n, alpha):
  alpha = round(alpha, 3)
  if not 0 < alpha < 1:
    return
  want = math.ceil((n + 1) * (1 - fractions.Fraction(str(alpha))))
  assert int(conformal.quantile_rank(n, alpha)) == want


def test_prediction_sets_coverage_and_size():
  rng = np.random.default_rng(3)
  p = _probs(rng, 20, 4)
  y = rng.integers(0, 4, 20)
  t = jnp.array([0.7, 0.4, 0.1])  # conformity thresholds: LAC keeps p >= t
  sets = conformal.prediction_sets(p, threshold=t, score="lac")
  chex.assert_shape(sets, (3, 20, 4))
  want = p[None] >= np.asarray(t)[:, None, None]
  np.testing.assert_array_equal(sets, want)
  np.testing.assert_allclose(conformal.set_coverage(sets, y),
                             want[:, np.arange(20), y].mean(1))
  np.testing.assert_allclose(conformal.mean_set_size(sets),
                             want.sum(-1).mean(-1))
  # Prefix sizes agree with label-space sets.
  _, sp = conformal.sort_probs(p)
  sizes = conformal.set_sizes_from_sorted(
      conformal.sorted_lac_conformity(sp), threshold=t)
  np.testing.assert_array_equal(np.asarray(sizes).T, want.sum(-1))


def test_crossing_label_sets_are_never_empty_and_match_prefix_sizes():
  rng = np.random.default_rng(6)
  p = _probs(rng, 60, 5, ties=True)
  c = np.asarray(conformal.aps_conformity(p))
  t = jnp.array([0.95, 0.7, 0.3, 0.05, -1.0])
  plain = np.asarray(conformal.prediction_sets(p, threshold=t, score="aps"))
  np.testing.assert_array_equal(plain, c[None] >= np.asarray(t)[:, None, None])
  sets = np.asarray(conformal.prediction_sets(p, threshold=t, score="aps",
                                              include_crossing=True))
  assert sets.sum(-1).min() >= 1
  assert np.all(sets >= plain)
  assert np.all(sets.sum(-1) <= np.minimum(plain.sum(-1) + 1, 5))
  order, sp = conformal.sort_probs(p)
  sizes = conformal.set_sizes_from_sorted(
      conformal.sorted_aps_conformity(sp), threshold=t, include_crossing=True)
  np.testing.assert_array_equal(np.asarray(sizes).T, sets.sum(-1))
  # Every set is the prefix of the labels in probability order.
  order = np.asarray(order)
  for a in range(len(t)):
    for i in range(60):
      size = int(sets[a, i].sum())
      assert set(order[i, :size]) == set(np.flatnonzero(sets[a, i]))
  # Scalar threshold path.
  one = conformal.prediction_sets(p, threshold=0.95, score="aps",
                                  include_crossing=True)
  np.testing.assert_array_equal(one, sets[0])


_CONFORMITY = {
    "lac": conformal.lac_conformity,
    "aps": conformal.aps_conformity,
    "raps": lambda q, lab=None: conformal.raps_conformity(
        q, lab, k_reg=2, lam=0.05),
}


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_marginal_coverage_over_random_splits(score):
  """Coverage >= 1 - alpha (and <= 1 - alpha + 1/(n+1)) over many splits."""
  rng = np.random.default_rng(4)
  n_cal, n_test, k, splits = 200, 200, 6, 300
  logits = rng.normal(size=(splits, n_cal + n_test, k)) * 2
  p = np.exp(logits)
  p /= p.sum(-1, keepdims=True)
  y = np.array([[rng.choice(k, p=row) for row in block] for block in p])
  p = p.astype(np.float32)
  alpha = 0.1
  fn = _CONFORMITY[score]
  kw = dict(k_reg=2, lam=0.05) if score == "raps" else {}

  @jax.jit
  def one(pp, yy):
    t = conformal.conformity_threshold(fn(pp[:n_cal], yy[:n_cal]), alpha)
    sets = conformal.prediction_sets(pp[n_cal:], threshold=t, score=score,
                                     **kw)
    return conformal.set_coverage(sets, yy[n_cal:])

  cov = np.asarray(jax.vmap(one)(p, y.astype(np.int32)))
  mean = cov.mean()
  # Each split's coverage has mean in [1-a, 1-a+1/(n+1)]; its variance is at
  # most that of a Beta-binomial; 4 standard errors of the mean over splits.
  se = cov.std(ddof=1) / np.sqrt(splits)
  assert mean >= 1 - alpha - 4 * se
  assert mean <= 1 - alpha + 1 / (n_cal + 1) + 4 * se


def test_tune_raps_matches_reference_rules():
  rng = np.random.default_rng(5)
  p = _probs(rng, 300, 10)
  y = rng.integers(0, 10, 300)
  alphas = np.array([0.01, 0.03, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8])
  k_reg, lam = conformal.tune_raps(p, y, alphas)
  ranks = np.array([1 + (row > row[t]).sum() for row, t in zip(p, y)])
  for i, a in enumerate(alphas):
    assert int(k_reg[i]) == int(np.quantile(ranks, 1 - a, method="higher"))
    sizes = []
    for cand in conformal.DEFAULT_LAM_GRID:
      sc = ref.raps(p, int(k_reg[i]), cand)
      q = ref.quantile(sc[np.arange(300), y], a)
      sizes.append(np.minimum((sc <= q).sum(1) + 1, 10).mean())
    np.testing.assert_allclose(float(lam[i]),
                               conformal.DEFAULT_LAM_GRID[int(np.argmin(
                                   np.round(sizes, 6)))], rtol=1e-6)


def test_paper_alpha_grid():
  g = conformal.paper_alpha_grid(0.9914)
  assert g[0] == 0.001 and g[8] == 0.009 and g[9] == 0.019
  assert 0.109 in g and 0.319 in g and g[-1] <= 0.99
  assert np.all(np.diff(g) > 0)
  with pytest.raises(ValueError, match="model_accuracy"):
    conformal.paper_alpha_grid(1.0)


@pytest.mark.parametrize("bad, match", [
    (np.array([[0.5, 0.6]], np.float32), "sum to 1"),
    (np.array([[1.5, -0.5]], np.float32), r"\[0, 1\]"),
    (np.array([[np.nan, 1.0]], np.float32), "NaN"),
])
def test_bad_probabilities_raise(bad, match):
  with pytest.raises(ValueError, match=match):
    conformal.lac_scores(bad, np.array([0]))


def test_bad_inputs_raise():
  p = np.full((3, 2), 0.5, np.float32)
  with pytest.raises(ValueError, match="labels"):
    conformal.aps_scores(p, np.array([0, 1, 2]))
  with pytest.raises(ValueError, match="labels"):
    conformal.aps_scores(p, np.array([0, 1]))
  with pytest.raises(TypeError, match="labels"):
    conformal.lac_scores(p, np.array([0.0, 1.0, 0.0]))
  with pytest.raises(ValueError, match="alpha"):
    conformal.conformal_quantile(np.ones(5), 0.0)
  with pytest.raises(ValueError, match="alpha"):
    conformal.conformal_quantile(np.ones(5), np.array([0.1, 1.0]))
  with pytest.raises(ValueError, match="empty"):
    conformal.conformal_quantile(np.ones(0), 0.1)
  with pytest.raises(ValueError, match="NaN"):
    conformal.conformal_quantile(np.array([0.1, np.nan]), 0.1)
  with pytest.raises(ValueError, match="probs"):
    conformal.lac_scores(np.ones(3, np.float32))
  with pytest.raises(ValueError, match="lam"):
    conformal.raps_scores(p, k_reg=1, lam=-1.0)


# --- split_set_sizes: one split, every alpha, prefix sizes ----------------


def _ref_sorted_scores(sp, score, k_reg=None, lam=None):
  """Textbook scores of each rank in float64 (rows renormalised)."""
  sp = sp.astype(np.float64)
  sp = sp / sp.sum(1, keepdims=True)
  out = np.empty_like(sp)
  for i, p in enumerate(sp):
    for r in range(p.size):
      if score == "lac":
        out[i, r] = 1 - p[r]
        continue
      out[i, r] = p[p > p[r]].sum() + p[r]
      if score == "raps":
        out[i, r] += lam * max(0, 1 + int((p > p[r]).sum()) - k_reg)
  return out


def _ref_split_sizes(sp_cal, rank_cal, sp_test, alphas, score, k_reg=None,
                     lam=None):
  """Sizes the slow way: one alpha at a time, exact rational rank."""
  n = rank_cal.size
  out = np.zeros((len(sp_test), len(alphas)), np.int64)
  for j, a in enumerate(alphas):
    kr = k_reg[j] if np.ndim(k_reg) else k_reg
    la = lam[j] if np.ndim(lam) else lam
    cal = _ref_sorted_scores(sp_cal, score, kr, la)[np.arange(n), rank_cal]
    test = _ref_sorted_scores(sp_test, score, kr, la)
    rank = ref.exact_rank(n, a)
    q = np.inf if rank > n else np.sort(cal)[rank - 1]
    size = (test <= q).sum(1)
    if score != "lac":
      size = np.minimum(size + 1, sp_test.shape[1])
    out[:, j] = size
  return out


@pytest.mark.parametrize("score, kw", [
    ("lac", {}),
    ("aps", {}),
    ("raps", dict(k_reg=2, lam=0.05)),
    ("raps", dict(k_reg=np.array([1, 2, 3, 1, 2]),
                  lam=np.array([0.01, 0.1, 0.2, 0.5, 0.001]))),
])
@pytest.mark.parametrize("ties", [False, True])
def test_split_set_sizes_matches_numpy_reference(score, kw, ties):
  rng = np.random.default_rng(7)
  if ties:  # dyadic rows: exact in float32, sum exactly to 1, many ties/zeros
    p = np.stack([rng.multinomial(16, q) for q in rng.dirichlet(
        np.full(6, 0.7), 240)]).astype(np.float32) / 16
  else:
    p = _probs(rng, 240, 6)
  y = rng.integers(0, 6, 240)
  order, sp = conformal.sort_probs(p)
  rank = np.argmax(np.asarray(order) == y[:, None], axis=1)
  alphas = np.array([0.01, 0.05, 0.1, 0.2, 0.5])
  fn = jax.jit(conformal.split_set_sizes, static_argnames="score")
  got = np.asarray(fn(sp[:120], rank[:120], sp[120:], alphas, score=score,
                      **kw))
  want = _ref_split_sizes(np.asarray(sp[:120]), rank[:120],
                          np.asarray(sp[120:]), alphas, score,
                          kw.get("k_reg"), kw.get("lam"))
  assert got.dtype == np.int32 and got.shape == (120, 5)
  np.testing.assert_array_equal(got, want)
  if score != "lac":
    assert got.min() >= 1


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_split_set_sizes_coverage_over_random_splits(score):
  """Mean coverage over splits within a binomial tolerance of rank / (n+1).

  With distinct scores and exchangeable splits, the plain set covers with
  probability exactly ceil((n+1)(1-a)) / (n+1); the crossing label of APS/RAPS
  only adds coverage. n = 100 makes an off-by-one rank (1/101 = 0.0099) larger
  than the tolerance (4 standard errors, at most 0.007).
  """
  rng = np.random.default_rng(8)
  pool, k, n, m, splits = 3000, 8, 100, 1000, 600
  p = rng.dirichlet(np.full(k, 0.4), pool)
  y = np.array([rng.choice(k, p=row) for row in p])
  order, sp = conformal.sort_probs(p.astype(np.float32))
  rank = jnp.asarray(np.argmax(np.asarray(order) == y[:, None], axis=1),
                     jnp.int32)
  alphas = np.array([0.05, 0.1, 0.2])
  kw = dict(k_reg=2, lam=0.02) if score == "raps" else {}
  perms = np.stack([rng.permutation(pool)[:n + m] for _ in range(splits)])

  @jax.jit
  @jax.vmap
  def covered(idx):
    cal, test = idx[:n], idx[n:]
    sizes = conformal.split_set_sizes(sp[cal], rank[cal], sp[test], alphas,
                                      score=score, **kw)
    return (rank[test][:, None] < sizes).mean(0)

  mean = np.asarray(covered(perms)).mean(0)  # [A]
  a = alphas
  expected = np.array([ref.exact_rank(n, x) for x in a]) / (n + 1)
  # Var of one split's coverage: binomial over m test points plus the Beta
  # spread of the calibrated level, about a(1-a)/(n+2).
  se = np.sqrt(a * (1 - a) * (1 / m + 1 / (n + 2)) / splits)
  assert np.all(4 * se < 1 / (n + 1))
  assert np.all(mean >= expected - 4 * se), (mean, expected)
  if score == "lac":  # no crossing label: exact in expectation
    assert np.all(mean <= expected + 4 * se), (mean, expected)


# --- crossing label, prefixes and ties ---------------------------------------


def test_crossing_label_is_the_next_label_by_probability():
  # Issue 7: APS scores of all three labels round to 1.0 in float32, and the
  # old code picked the crossing label by label index: {0}. The mass below
  # label 1 is 2e-8 < 0.5, so the plain set is empty and the crossing label
  # is the most probable one: {1}.
  p = np.array([[1e-8, 0.99999994, 1e-8]], np.float32)
  # LAC keeps p_y >= t: t = 1 keeps nothing, the crossing label is label 1.
  for score, t in (("lac", 1.0), ("aps", 0.5), ("raps", 0.5)):
    kw = dict(k_reg=0, lam=0.1) if score == "raps" else {}
    sets = conformal.prediction_sets(p, threshold=t, score=score,
                                     include_crossing=True, **kw)
    np.testing.assert_array_equal(sets, [[False, True, False]], err_msg=score)
  # Zero probabilities: p = [0, 1, 0] has conformity 0 for every label.
  p = np.array([[0.0, 1.0, 0.0]], np.float32)
  sets = conformal.prediction_sets(p, threshold=0.5, score="aps",
                                   include_crossing=True)
  np.testing.assert_array_equal(sets, [[False, True, False]])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), score=st.sampled_from(["lac", "aps",
                                                              "raps"]),
       crossing=st.booleans())
def test_sets_are_probability_ordered_prefixes(seed, score, crossing):
  rng = np.random.default_rng(seed)
  k = 5
  # Dyadic rows: ties and zeros, exact in float32.
  p = np.stack([rng.multinomial(8, q) for q in rng.dirichlet(
      np.full(k, 0.5), 30)]).astype(np.float32) / 8
  t = np.sort(rng.uniform(-0.2, 1.0, 4)).astype(np.float32)
  kw = dict(k_reg=1, lam=0.05) if score == "raps" else {}
  sets = np.asarray(conformal.prediction_sets(
      p, threshold=t, score=score, include_crossing=crossing, **kw))
  order = np.argsort(-p, axis=1, kind="stable")
  for a in range(len(t)):
    for i in range(len(p)):
      size = int(sets[a, i].sum())
      np.testing.assert_array_equal(np.flatnonzero(sets[a, i]),
                                    np.sort(order[i, :size]))
      if crossing:
        assert sets[a, i, order[i, 0]]  # the top label is never dropped


def test_tie_rules():
  # p = [0.25, 0.5, 0.25]: probability order 1, 0, 2 (ties by label index).
  # APS conformity (mass below): label 1 -> 0.5; labels 0 and 2 tie and share
  # 0 + (2 - 1) * 0.25 = 0.25 (score 1 - 0.25 = 0.75 for both).
  p = np.array([[0.25, 0.5, 0.25]], np.float32)
  np.testing.assert_allclose(conformal.aps_conformity(p), [[0.25, 0.5, 0.25]])
  cases = {  # threshold -> (plain set, set with the crossing label)
      0.6: ([], [1]),
      0.5: ([1], [1, 0]),      # conformity == threshold is in the set
      0.3: ([1], [1, 0]),      # crossing adds one label of the tied pair: 0
      0.25: ([1, 0, 2], [1, 0, 2]),  # tied labels enter together
      -np.inf: ([1, 0, 2], [1, 0, 2]),
  }
  for t, (plain, cross) in cases.items():
    for crossing, want in ((False, plain), (True, cross)):
      got = conformal.prediction_sets(p, threshold=t, score="aps",
                                      include_crossing=crossing)[0]
      np.testing.assert_array_equal(np.flatnonzero(got), sorted(want),
                                    err_msg=f"t={t}, crossing={crossing}")


def test_split_set_sizes_sorts_the_calibration_once():
  rng = np.random.default_rng(11)
  _, sp = conformal.sort_probs(_probs(rng, 50, 5))
  rank = np.zeros(50, np.int32)
  alphas = np.linspace(0.05, 0.5, 10)
  for score, kw in (("lac", {}), ("aps", {}),
                    ("raps", dict(k_reg=1, lam=0.1))):
    jaxpr = str(jax.make_jaxpr(
        lambda a, b, c, d, s=score, kw=kw: conformal.split_set_sizes(
            a, b, c, d, score=s, **kw))(sp[:25], rank[:25], sp[25:], alphas))
    assert jaxpr.count(" sort[") == 1, score


def test_prediction_sets_with_per_alpha_raps_parameters():
  rng = np.random.default_rng(12)
  p = _probs(rng, 30, 5)
  t = np.array([0.2, 0.05, -0.1], np.float32)
  k_reg, lam = np.array([1, 2, 0]), np.array([0.1, 0.01, 0.2], np.float32)
  got = conformal.prediction_sets(p, threshold=t, score="raps", k_reg=k_reg,
                                  lam=lam, include_crossing=True)
  for a in range(3):
    want = conformal.prediction_sets(p, threshold=t[a], score="raps",
                                     k_reg=int(k_reg[a]), lam=lam[a],
                                     include_crossing=True)
    np.testing.assert_array_equal(got[a], want)
  with pytest.raises(ValueError, match="k_reg"):
    conformal.prediction_sets(p, threshold=t, score="raps", k_reg=k_reg[:2],
                              lam=0.1)
