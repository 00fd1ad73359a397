"""The conventions under which the conformal sets were compared with peers.

The conformal functions were checked side by side with MAPIE, TorchCP, puncc
and crepes on the DenseNet CIFAR-10 probabilities (issue 7). Agreement rests
on these conventions, recorded here on hand-made cases whose expectations are
worked out by hand in the comments (dyadic probabilities, exact in float32):

1. the threshold is the exact order statistic, the ceil((n+1)(1-alpha))-th
   smallest calibration score, +inf when that rank exceeds n (seen from the
   conformity side: the floor((n+1) alpha)-th smallest conformity, -inf when
   that rank is 0);
2. a score equal to the threshold is in the set;
3. labels tied in probability share their APS/RAPS score;
4. the threshold-crossing label of the non-randomized APS/RAPS sets is the
   next label in decreasing probability (ties by label index), never chosen
   by label index among labels of different probability.
"""

import math

import numpy as np

from l2d_jax import conformal

# Four scores; n = 4.
_S = np.array([0.1, 0.2, 0.3, 0.4], np.float32)


def test_exact_order_statistic_not_the_higher_shortcut():
  # alpha = 0.4: rank ceil(5 * 0.6) = 3, so qhat is the 3rd smallest, 0.3.
  assert int(conformal.quantile_rank(4, 0.4)) == 3
  assert float(conformal.conformal_quantile(_S, 0.4)) == np.float32(0.3)
  # The shortcut np.quantile(s, ceil((n+1)(1-a))/n, 'higher') asks for level
  # 3/4: virtual index (4 - 1) * 0.75 = 2.25, rounded up to 3 (0-based), the
  # 4th smallest, 0.4: the next order statistic, a larger threshold.
  level = math.ceil(5 * 0.6) / 4
  assert np.quantile(_S, level, method="higher") == np.float32(0.4)
  # Conformity side: c = 1 - s = [0.9, 0.8, 0.7, 0.6]; floor(5 * 0.4) = 2nd
  # smallest conformity, 0.7 = 1 - 0.3.
  t = conformal.conformity_threshold(1 - _S.astype(np.float64), 0.4)
  np.testing.assert_allclose(float(t), 0.7, rtol=1e-6)


def test_rank_beyond_n_gives_infinite_threshold_and_full_sets():
  # alpha = 0.1: ceil(5 * 0.9) = ceil(4.5) = 5 > n = 4: qhat = +inf.
  assert int(conformal.quantile_rank(4, 0.1)) == 5
  assert float(conformal.conformal_quantile(_S, 0.1)) == np.inf
  # Conformity side: floor(5 * 0.1) = 0: threshold -inf, every label kept.
  t = conformal.conformity_threshold(1 - _S, 0.1)
  assert float(t) == -np.inf
  p = np.array([[0.5, 0.25, 0.25], [0.875, 0.125, 0.0]], np.float32)
  sets = conformal.prediction_sets(p, threshold=t, score="lac")
  np.testing.assert_array_equal(sets, np.ones((2, 3), bool))
  # The largest alpha with a finite qhat here: ceil(5 (1 - a)) <= 4 needs
  # a >= 0.2; at a = 0.2, rank ceil(4.0) = 4 (no float slack: 4, not 5).
  assert int(conformal.quantile_rank(4, 0.2)) == 4
  assert int(conformal.quantile_rank(4, np.float32(0.2))) == 4


def test_score_equal_to_qhat_is_in_the_set():
  # LAC. Calibration p_y = 0.5, 0.625, 0.75, 0.875 -> scores 0.5, 0.375,
  # 0.25, 0.125. alpha = 0.4: rank 3, qhat = 3rd smallest score = 0.375,
  # conformity threshold = 2nd smallest p_y = 0.625.
  p_cal = np.array([[0.5, 0.5], [0.625, 0.375], [0.75, 0.25],
                    [0.875, 0.125]], np.float32)
  y_cal = np.zeros(4, np.int32)
  assert float(conformal.conformal_quantile(
      conformal.lac_scores(p_cal, y_cal), 0.4)) == 0.375
  t = conformal.conformity_threshold(conformal.lac_conformity(p_cal, y_cal),
                                     0.4)
  assert float(t) == 0.625
  # Test row [0.625, 0.375]: label 0 has score 0.375 == qhat: in the set;
  # label 1 has 0.625 > qhat: out. Set {0}.
  sets = conformal.prediction_sets(np.array([[0.625, 0.375]], np.float32),
                                   threshold=t, score="lac")
  np.testing.assert_array_equal(sets, [[True, False]])


# APS/RAPS calibration set (K = 3), scores by hand (u = 1):
#   a: p = [0.5, 0.25, 0.25],   y = 0: s = 0.5
#   b: p = [0.5, 0.25, 0.25],   y = 1: labels 1, 2 tie; s = 0.5 + 0.25 = 0.75
#   c: p = [0.75, 0.125, 0.125], y = 0: s = 0.75
#   d: p = [0.25, 0.5, 0.25],   y = 2: s = 0.5 + 0.25 = 0.75
_P_CAL = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.75, 0.125, 0.125],
                   [0.25, 0.5, 0.25]], np.float32)
_Y_CAL = np.array([0, 1, 0, 2], np.int32)
_P_TEST = np.array([[0.125, 0.625, 0.25], [0.25, 0.5, 0.25]], np.float32)


def test_aps_ties_and_crossing_label_by_hand():
  s = conformal.aps_scores(_P_CAL, _Y_CAL)
  np.testing.assert_array_equal(s, [0.5, 0.75, 0.75, 0.75])
  # alpha = 0.4: rank 3 of [0.5, 0.75, 0.75, 0.75] -> qhat = 0.75 (a tie).
  assert float(conformal.conformal_quantile(s, 0.4)) == 0.75
  t = conformal.conformity_threshold(conformal.aps_conformity(_P_CAL, _Y_CAL),
                                     0.4)
  assert float(t) == 0.25  # 2nd smallest of c = [0.5, 0.25, 0.25, 0.25]
  # Test row 1, [0.125, 0.625, 0.25]: scores label 1: 0.625, label 2: 0.875,
  # label 0: 1.0. Plain set {1}; the crossing label is the next by
  # probability, label 2 (not label 0): {1, 2}.
  # Test row 2, [0.25, 0.5, 0.25]: label 1: 0.5; labels 0 and 2 tie at
  # 0.5 + 0.25 = 0.75 == qhat: both in. {0, 1, 2}, nothing left to cross.
  plain = conformal.prediction_sets(_P_TEST, threshold=t, score="aps")
  np.testing.assert_array_equal(plain, [[False, True, False],
                                        [True, True, True]])
  sets = conformal.prediction_sets(_P_TEST, threshold=t, score="aps",
                                   include_crossing=True)
  np.testing.assert_array_equal(sets, [[False, True, True],
                                       [True, True, True]])
  # The same sizes through split_set_sizes (ranks of the true labels in
  # decreasing probability: a 0, b 1, c 0, d 2).
  _, sp_cal = conformal.sort_probs(_P_CAL)
  _, sp_test = conformal.sort_probs(_P_TEST)
  sizes = conformal.split_set_sizes(sp_cal, np.array([0, 1, 0, 2]), sp_test,
                                    np.array([0.4]), score="aps")
  np.testing.assert_array_equal(sizes, [[2], [3]])


def test_raps_by_hand():
  # k_reg = 1, lam = 0.25: penalty 0.25 * max(0, o - 1), o the 1-based rank
  # (tied labels take the first rank of their group).
  #   a: 0.5 (o = 1); b: 0.75 + 0.25 (o = 2) = 1.0; c: 0.75; d: 0.75 + 0.25
  #   = 1.0. alpha = 0.4: 3rd smallest of [0.5, 0.75, 1.0, 1.0] -> qhat 1.0.
  kw = dict(k_reg=1, lam=0.25)
  s = conformal.raps_scores(_P_CAL, _Y_CAL, **kw)
  np.testing.assert_array_equal(s, [0.5, 1.0, 0.75, 1.0])
  assert float(conformal.conformal_quantile(s, 0.4)) == 1.0
  t = conformal.conformity_threshold(
      conformal.raps_conformity(_P_CAL, _Y_CAL, **kw), 0.4)
  assert float(t) == 0.0  # 2nd smallest of c = [0.5, 0.0, 0.25, 0.0]
  # Test row 1: label 1: 0.625; label 2: 0.875 + 0.25 = 1.125; label 0:
  # 1.0 + 0.5 = 1.5. Plain {1}, with the crossing label {1, 2}.
  sets = conformal.prediction_sets(_P_TEST[:1], threshold=t, score="raps",
                                   include_crossing=True, **kw)
  np.testing.assert_array_equal(sets, [[False, True, True]])
