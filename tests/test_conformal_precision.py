"""Conformal sets and ranks must not depend on float precision.

Sets are built from conformities (the mass below a label), so float32 sets
equal the float64 textbook sets without x64; ranks ``ceil((n+1)(1-alpha))``
are exact rational arithmetic for decimal alphas given in float32 or float64.
References here are plain numpy float64 / ``fractions.Fraction``.
"""

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conformal_reference as ref
from l2d_jax import conformal
from l2d_jax import data

# --- exact quantile ranks ----------------------------------------------------

_NS = [1, 2, 3, 9, 10, 99, 100, 999, 1000, 1001, 4999, 9999, 10000, 19999,
       20000, 49999, 50000, 99999, 100000, 199999, 200000]
_ALPHAS = np.arange(1, 1000) / 1000  # 0.001 .. 0.999, float64


def _exact_ranks(n, alphas):
  """ceil((n + 1)(1 - a)) with a the decimal k/1000, in rationals."""
  return np.array([math.ceil((n + 1) * (1 - fractions.Fraction(round(a * 1000),
                                                               1000)))
                   for a in alphas])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantile_rank_is_exact_on_a_grid(dtype):
  alphas = _ALPHAS.astype(dtype)
  jitted = jax.jit(conformal.quantile_rank, static_argnums=0)
  for n in _NS:
    want = _exact_ranks(n, _ALPHAS)
    np.testing.assert_array_equal(conformal.quantile_rank(n, alphas), want,
                                  err_msg=f"concrete, n={n}")
    # Under jit alpha is traced (float32 without x64).
    np.testing.assert_array_equal(jitted(n, alphas), want,
                                  err_msg=f"jit, n={n}")


def test_quantile_rank_cases_from_the_issue():
  # ceil(20001 * 0.01) = ceil(200.01) = 201; ceil(50001 * 0.02) = 1001;
  # ceil(200001 * 0.1) = 20001; ceil(10001 * 0.01) = ceil(100.01) = 101.
  for n, a, want in [(20000, 0.99, 201), (50000, 0.98, 1001),
                     (200000, 0.9, 20001), (10000, 0.99, 101)]:
    for dtype in (np.float32, np.float64):
      assert int(conformal.quantile_rank(n, dtype(a))) == want, (n, a, dtype)
      assert int(jax.jit(conformal.quantile_rank, static_argnums=0)(
          n, dtype(a))) == want, (n, a, dtype)


def test_quantile_rank_is_exact_for_random_short_decimals():
  # Decimals k / 10**d with up to 6 significant digits and d <= 8 places,
  # n up to 10**6, float32 and float64, concrete and under jit.
  rng = np.random.default_rng(0)
  jitted = jax.jit(conformal.quantile_rank, static_argnums=0)
  for trial in range(20):
    n = int(rng.integers(1, 10**6 if trial % 2 else 1000))
    frac = []
    for d in rng.integers(1, 9, 100):
      digits = int(rng.integers(1, 7))
      frac.append(fractions.Fraction(int(rng.integers(1, 10**min(digits, d))),
                                     10**int(d)))
    want = [math.ceil((n + 1) * (1 - f)) for f in frac]
    a64 = np.array([float(f) for f in frac])
    for alphas in (a64, a64.astype(np.float32)):
      np.testing.assert_array_equal(conformal.quantile_rank(n, alphas), want)
      np.testing.assert_array_equal(jitted(n, alphas), want)


def test_quantile_rank_x64_traced_and_non_decimal_alpha():
  with jax.enable_x64(True):
    got = jax.jit(conformal.quantile_rank, static_argnums=0)(
        200000, jnp.asarray(_ALPHAS, jnp.float64))
  np.testing.assert_array_equal(got, _exact_ranks(200000, _ALPHAS))
  # A float that is no short decimal is taken at its exact binary value:
  # float64(1/3) < 1/3, so floor(3 * a) = 0 and the rank is 3 - 0 = 3.
  third = 1 / 3
  assert fractions.Fraction(third) < fractions.Fraction(1, 3)
  assert int(conformal.quantile_rank(2, third)) == 3
  # 0.1 is snapped to 1/10: floor(10 * 0.1) = 1, rank 10 - 1 = 9. The
  # float64 0.1 - 1e-12 is no 6-digit decimal: floor(10 * a) = 0, rank 10.
  # In float32 the 1e-12 is lost and the value is the decimal 0.1 again.
  assert int(conformal.quantile_rank(9, 0.1)) == 9
  assert int(conformal.quantile_rank(9, 0.1 - 1e-12)) == 10
  assert int(conformal.quantile_rank(9, np.float32(0.1 - 1e-12))) == 9


# --- float32 sets equal float64 sets on real, very confident probabilities ---

_ALPHA_GRID = np.array([0.01, 0.02, 0.05, 0.1, 0.2])
_RAPS = dict(k_reg=1, lam=0.01)


def _ref_sets(scores_cal, scores_test, probs_test, alphas, crossing):
  """Textbook float64 sets {s <= qhat} (+ the next label by probability)."""
  out = []
  order = np.argsort(-probs_test, axis=1, kind="stable")
  for a in alphas:
    q = ref.quantile(scores_cal, a)
    sets = scores_test <= q
    if crossing:
      size = np.minimum(sets.sum(1) + 1, sets.shape[1])
      sets = np.arange(sets.shape[1])[None] < size[:, None]
      sets = np.take_along_axis(sets, np.argsort(order, axis=1), axis=1)
    out.append(sets)
  return np.stack(out)


def _ref_scores(p64, score, u=None):
  if score == "lac":
    return ref.lac(p64)
  s = ref.aps(p64) if score == "aps" else ref.raps(p64, **_RAPS)
  if u is not None:  # randomized APS: above + u * p_y
    s = s - (1 - u) * p64
  return s


@pytest.fixture(scope="module")
def densenet(data_dir):
  probs, labels, _ = data.load_model_probs(data_dir, "densenet-bc-L190-k40")
  p64 = probs.astype(np.float64)
  p64 /= p64.sum(1, keepdims=True)
  return probs, labels, p64


def _float32_textbook_scores(probs, score):
  """The old path: scores accumulated from the top in float32."""
  order = np.argsort(-probs, axis=1, kind="stable")
  sp = np.take_along_axis(probs, order, axis=1)
  s = 1 - sp if score == "lac" else np.cumsum(sp, axis=1, dtype=np.float32)
  if score == "raps":
    s = s + np.float32(_RAPS["lam"]) * np.maximum(
        0, np.arange(1, probs.shape[1] + 1) - _RAPS["k_reg"]).astype(
            np.float32)
  return np.take_along_axis(s, np.argsort(order, axis=1), axis=1)


def _sets_from_sizes(order, sizes):
  """[m, K] order, [m, A] sizes -> [A, m, K] label-space sets."""
  rank_of_label = np.argsort(np.asarray(order), axis=1)
  return rank_of_label[None] < np.asarray(sizes).T[:, :, None]


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_float32_sets_equal_float64_sets_on_densenet(densenet, score):
  probs, labels, p64 = densenet
  s64 = _ref_scores(p64, score)
  crossing = score != "lac"
  kw = _RAPS if score == "raps" else {}
  order, sp = conformal.sort_probs(probs)  # float32, x64 off
  rank = np.argmax(np.asarray(order) == labels[:, None], axis=1)
  sizes_fn = jax.jit(conformal.split_set_sizes, static_argnames="score")
  s32 = _float32_textbook_scores(probs, score)
  rng = np.random.default_rng(0)
  differ, old_differ, total = 0, 0, 0
  for _ in range(5):
    perm = rng.permutation(len(labels))
    cal, test = perm[:1000], perm[1000:]
    want = _ref_sets(s64[cal, labels[cal]], s64[test], p64[test], _ALPHA_GRID,
                     crossing)
    sizes = sizes_fn(sp[cal], rank[cal], sp[test], _ALPHA_GRID, score=score,
                     **kw)
    got = _sets_from_sizes(order[test], sizes)
    differ += np.any(got != want, axis=-1).sum()
    total += want.shape[0] * want.shape[1]
    # The same through the label-space API.
    fn = {"lac": conformal.lac_conformity, "aps": conformal.aps_conformity,
          "raps": lambda p, y: conformal.raps_conformity(p, y, **_RAPS)}[score]
    t = conformal.conformity_threshold(fn(probs[cal], labels[cal]),
                                       _ALPHA_GRID)
    sets = conformal.prediction_sets(probs[test], threshold=t, score=score,
                                     include_crossing=crossing, **kw)
    np.testing.assert_array_equal(sets, got)
    # The textbook computation in float32 (scores near 1) is what fails.
    old = _ref_sets(s32[cal, labels[cal]], s32[test], p64[test], _ALPHA_GRID,
                    crossing)
    old_differ += np.any(old != want, axis=-1).sum()
  print(f"{score}: {differ} of {total} sets differ from float64 "
        f"(float32 scores: {old_differ})")
  assert differ <= 1e-3 * total, (differ, total)
  if score == "aps":  # the check is sensitive: float32 scores fail it
    assert old_differ > 1e-3 * total, (old_differ, total)


def test_randomized_aps_float32_equals_float64_on_densenet(densenet, rng):
  probs, labels, p64 = densenet
  k_cal, k_test = jax.random.split(rng)
  rs = np.random.default_rng(1)
  differ, total = 0, 0
  for _ in range(3):
    perm = rs.permutation(len(labels))
    cal, test = perm[:1000], perm[1000:]
    # The draws the library makes: one u per point, shape [n, 1].
    u_cal = np.asarray(jax.random.uniform(k_cal, (1000, 1)), np.float64)
    u_test = np.asarray(jax.random.uniform(k_test, (len(test), 1)), np.float64)
    s_cal = _ref_scores(p64[cal], "aps", u_cal)[np.arange(1000), labels[cal]]
    want = _ref_sets(s_cal, _ref_scores(p64[test], "aps", u_test), p64[test],
                     _ALPHA_GRID, False)
    t = conformal.conformity_threshold(
        conformal.aps_conformity(probs[cal], labels[cal], key=k_cal,
                                 randomized=True), _ALPHA_GRID)
    got = np.asarray(conformal.prediction_sets(
        probs[test], threshold=t, score="aps", key=k_test, randomized=True))
    differ += np.any(got != want, axis=-1).sum()
    total += want.shape[0] * want.shape[1]
  assert differ <= 1e-3 * total, (differ, total)


def test_hand_made_confident_case():
  # Nine calibration points, label 0, mass below the top label b_i = 4e-8 ..
  # 1.2e-7; the APS scores 1 - b_i all round to 1 - 2**-24 or 1 - 2**-23 in
  # float32. alpha = 0.1, n = 9: qhat is the 9th smallest score 1 - 4e-8,
  # i.e. the threshold is the floor(10 * 0.1) = 1st smallest conformity 4e-8.
  b = np.arange(4, 13) * 1e-8
  cal = np.stack([1 - b, b], axis=1).astype(np.float32)
  y = np.zeros(9, np.int32)
  # Test point A: b = 3.5e-8 < 4e-8, so s = 1 - 3.5e-8 > qhat: the top label
  # is only the crossing label, set {0}. In float32 1 - 3.5e-8 and 1 - 4e-8
  # are the same number (1 - 2**-24), so the score path said {0, 1}.
  # Test point B: b = 4.5e-8 >= 4e-8: plain set {0}, plus crossing -> {0, 1}.
  test = np.array([[1 - 3.5e-8, 3.5e-8], [1 - 4.5e-8, 4.5e-8]], np.float32)
  assert np.float32(1 - 3.5e-8) == np.float32(1 - 4e-8)
  t = conformal.conformity_threshold(conformal.aps_conformity(cal, y), 0.1)
  np.testing.assert_allclose(float(t), 4e-8, rtol=1e-6)
  sets = conformal.prediction_sets(test, threshold=t, score="aps",
                                   include_crossing=True)
  np.testing.assert_array_equal(sets, [[True, False], [True, True]])
  _, sp = conformal.sort_probs(cal)
  _, sp_test = conformal.sort_probs(test)
  sizes = conformal.split_set_sizes(sp, np.zeros(9, np.int32), sp_test,
                                    np.array([0.1]), score="aps")
  np.testing.assert_array_equal(sizes, [[1], [2]])
