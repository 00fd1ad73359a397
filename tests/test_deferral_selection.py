"""deferral.select_expert and the conformal strategies' outcomes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import conformal
from l2d_jax import deferral
from l2d_jax import experts


def test_select_expert_tie_breaks(rng):
  scores = jnp.array([[0.5, 0.9, 0.9, 0.1]] * 2000)
  valid = jnp.array([[True, True, True, True]] * 2000)
  pick = np.asarray(deferral.select_expert(scores, valid, key=rng))
  assert set(np.unique(pick)) == {1, 2}
  assert 0.45 < (pick == 1).mean() < 0.55
  costs = jnp.array([0.0, 2.0, 1.0, 0.0])
  pick = deferral.select_expert(scores[:1], valid[:1], tie_break="cost",
                                costs=costs)
  assert int(pick[0]) == 2
  # Invalid candidates are never picked, even with the top score.
  pick = deferral.select_expert(scores[:1], valid[:1].at[0, 1:3].set(False),
                                key=rng)
  assert int(pick[0]) == 0
  # Explicit priorities replace the key: the highest tied priority wins.
  pick = deferral.select_expert(scores[:1], valid[:1],
                                priority=jnp.array([0.0, 0.1, 0.9, 1.0]))
  assert int(pick[0]) == 2
  with pytest.raises(ValueError, match="tie_break"):
    deferral.select_expert(scores, valid, tie_break="first")
  with pytest.raises(ValueError, match="key"):
    deferral.select_expert(scores, valid)
  with pytest.raises(ValueError, match="costs"):
    deferral.select_expert(scores, valid, tie_break="cost")
  with pytest.raises(ValueError, match="same shape"):
    deferral.select_expert(scores, valid[:, :3], key=rng)


@pytest.mark.parametrize("jit", [False, True])
def test_select_expert_never_returns_an_invalid_slot(jit, rng):
  fn = deferral.select_expert
  if jit:
    fn = jax.jit(fn, static_argnames="tie_break")
  # The case: NaN on a valid slot, the top score on an invalid one.
  scores = jnp.array([[0.9, jnp.nan, 0.5], [jnp.nan, jnp.nan, jnp.nan],
                      [0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
  valid = jnp.array([[False, True, True], [True, True, True],
                     [False, False, False], [True, True, True]])
  got = fn(scores, valid, tie_break="cost", costs=jnp.zeros(3))
  np.testing.assert_array_equal(got, [2, -1, -1, 2])
  got = fn(scores, valid, tie_break="random", key=rng)
  np.testing.assert_array_equal(got, [2, -1, -1, 2])
  # NaN costs count as infinite, never as a way to pick an invalid slot.
  got = fn(jnp.ones((1, 3)), jnp.array([[False, True, True]]),
           tie_break="cost", costs=jnp.array([0.0, jnp.nan, 1.0]))
  np.testing.assert_array_equal(got, [2])


def _tiny_pool():
  """Two points, K = 3, three experts with hand-made matrices."""
  ann = experts.Annotations.from_long(
      np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]),
      num_images=2, num_experts=3, num_classes=3)
  labels = np.array([0, 2])
  conf = np.zeros((3, 3, 3), int)
  conf[0] = np.diag([9, 1, 1]) + np.array([[1, 0, 0], [0, 0, 5], [0, 5, 0]])
  conf[1] = np.diag([2, 8, 8]) + np.array([[0, 2, 0], [0, 0, 0], [0, 0, 0]])
  conf[2] = np.diag([5, 5, 5])
  order = np.array([[0, 1, 2], [2, 1, 0]])
  return ann, labels, conf, order


def _lcb_table(order, labels, ann, conf, **kw):
  correct, total = conformal.prefix_counts(order, labels, ann, conf)
  lcb = deferral.posterior_lcb(correct, total, **kw)
  return jnp.where(jnp.asarray(ann.mask)[..., None], lcb, -jnp.inf)


def test_prefix_counts_are_the_segregativity_fraction():
  ann, labels, conf, order = _tiny_pool()
  correct, total = conformal.prefix_counts(order, labels, ann, conf)
  seg = conformal.prefix_segregativity(order, labels, ann, conf)
  # Point 0, expert 0 (own answer 0 on label 0 left out) over {0, 1}: 10/10.
  assert float(correct[0, 0, 2]) == 10 and float(total[0, 0, 2]) == 10
  valid = np.asarray(ann.mask)[..., None] & (np.asarray(total) > 0)
  np.testing.assert_allclose(np.asarray(seg)[valid],
                             (np.asarray(correct) / np.asarray(total))[valid],
                             rtol=1e-6)


def test_posterior_lcb_hand_values_and_ranking():
  correct = np.array([3.0, 30.0, 0.0, 2.0])
  total = np.array([3.0, 30.0, 0.0, 4.0])
  for lam, a0, b0 in ((1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (2.0, 3.0, 0.5)):
    got = np.asarray(deferral.posterior_lcb(correct, total, lcb_lambda=lam,
                                            prior_a=a0, prior_b=b0))
    a, b = a0 + correct, b0 + total - correct
    want = a / (a + b) - lam * np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
  # Right on 30 of 30 beats right on 3 of 3 (segregativity ties them at 1).
  s = np.asarray(deferral.posterior_lcb(correct, total))
  assert s[1] > s[0]
  # lambda = 0: the posterior mean (uniform prior: (c + 1) / (t + 2)).
  np.testing.assert_allclose(
      deferral.posterior_lcb(correct, total, lcb_lambda=0.0),
      (correct + 1) / (total + 2), rtol=1e-6)
  with pytest.raises(ValueError, match="lcb_lambda"):
    deferral.posterior_lcb(correct, total, lcb_lambda=-1.0)
  with pytest.raises(ValueError, match="prior_a"):
    deferral.posterior_lcb(correct, total, prior_a=0.0)
  with pytest.raises(ValueError, match="correct"):
    deferral.posterior_lcb(np.array([5.0]), np.array([4.0]))


def test_segregativity_lcb_needs_its_table(rng):
  ann, labels, conf, order = _tiny_pool()
  seg = conformal.prefix_segregativity(order, labels, ann, conf)
  with pytest.raises(ValueError, match="lcb_table"):
    deferral.strategy_outcomes(seg, np.array([True, False]), ann, labels,
                               strategy="segregativity_lcb", key=rng)
  with pytest.raises(ValueError, match="lcb_table"):
    deferral.strategy_scores(seg, "segregativity_lcb", lcb_table=seg[:1])
  # With every prefix of equal counts the LCB and plain segregativity rank
  # alike where the totals are equal; here: the table is what is used.
  lcb = _lcb_table(order, labels, ann, conf)
  np.testing.assert_array_equal(
      deferral.strategy_scores(seg, "segregativity_lcb", lcb_table=lcb),
      np.swapaxes(np.asarray(lcb), 1, 2))


def test_strategy_outcomes_agent_encoding_and_model_at_size_one(rng):
  ann, labels, conf, order = _tiny_pool()
  seg = conformal.prefix_segregativity(order, labels, ann, conf)
  lcb = _lcb_table(order, labels, ann, conf)
  model_correct = np.array([True, False])
  for strategy in deferral.STRATEGIES:
    out = deferral.strategy_outcomes(seg, model_correct, ann, labels,
                                     strategy=strategy, key=rng,
                                     lcb_table=lcb)
    np.testing.assert_array_equal(out.agent[:, 1], deferral.MODEL)
    np.testing.assert_array_equal(out.correct[:, 1], model_correct)
    # 1 + expert id, and only the point's own annotators.
    allowed = [{1, 2}, {2, 3}]
    for i in range(2):
      assert set(np.asarray(out.agent[i, [0, 2, 3]]).tolist()) <= allowed[i]
  out = deferral.strategy_outcomes(seg, model_correct, ann, labels,
                                   strategy="segregativity", key=rng)
  # Point 0 (label 0, order 0, 1, 2): experts 0 and 1 answered 0 and 1.
  # With each one's own answer left out, over {0, 1}: expert 0 = 10 / 10,
  # expert 1 = 10 / 11 (expert 0, right, answers); over the whole matrix:
  # expert 0 = 11 / 21, expert 1 = 18 / 19 (expert 1 answers 1: wrong).
  np.testing.assert_array_equal(out.agent[0], [2, 0, 1, 2])
  np.testing.assert_array_equal(out.correct[0], [False, True, True, False])


def test_strategy_outcomes_point_without_annotator():
  ann, labels, conf, order = _tiny_pool()
  seg = conformal.prefix_segregativity(order, labels, ann, conf)
  no_one = ann.with_mask(jnp.array([[True, True], [False, False]]))
  seg = seg.at[1].set(-jnp.inf)
  with pytest.raises(ValueError, match="no valid annotator"):
    deferral.strategy_outcomes(seg, np.array([True, True]), no_one, labels,
                               strategy="segregativity", key=jax.random.key(0))
  fn = jax.jit(deferral.strategy_outcomes,
               static_argnames=("strategy", "tie_break"))
  out = fn(seg, np.array([True, True]), no_one, labels,
           strategy="segregativity", key=jax.random.key(0))
  # Visibly invalid, never slot 0's answer; the model still answers size 1.
  np.testing.assert_array_equal(out.agent[1], [-1, 0, -1, -1])
  np.testing.assert_array_equal(out.correct[1], [False, True, False, False])
  metrics = conformal.sweep_metrics(np.array([[2], [2]]), out,
                                    num_experts=np.int64(3))
  assert float(metrics.accuracy[0]) == 0.5 and int(metrics.queries[0]) == 1


def test_strategy_outcomes_bad_input(rng):
  ann, labels, conf, order = _tiny_pool()
  seg = conformal.prefix_segregativity(order, labels, ann, conf)
  with pytest.raises(ValueError, match="strategy"):
    deferral.strategy_outcomes(seg, np.array([True, True]), ann, labels,
                               strategy="oracle", key=rng)
  with pytest.raises(ValueError, match="costs"):
    deferral.strategy_outcomes(seg, np.array([True, True]), ann, labels,
                               strategy="segregativity", key=rng,
                               tie_break="cost")


def test_decision_rules_live_only_in_deferral():
  # One home for decision rules (issue 6): experts no longer carries them.
  assert callable(deferral.select_expert)
  for name in ("select_expert", "TIE_BREAKS", "drop_unusable_experts"):
    with pytest.raises(AttributeError):
      getattr(experts, name)
