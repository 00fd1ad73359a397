"""Prefix segregativity, strategy outcomes and sweep_metrics vs the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.conformal_deferral import run as exp_run
from l2d_jax import conformal
from l2d_jax import data
from l2d_jax import deferral
from l2d_jax import experts
from tests import conformal_reference as ref


def _setup(seed=0, n_images=300, n_cal=120):
  ds = data.synthetic_pool(seed, num_images=n_images, num_classes=6,
                           num_experts=25, answers_per_expert=60)
  rng = np.random.default_rng(seed)
  has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
  perm = rng.permutation(has)
  cal, test = perm[:n_cal], perm[n_cal:]
  labels = ds.labels
  conf = np.asarray(experts.confusion_matrices(ds.annotations, labels))
  return ds, cal, test, conf


@pytest.mark.parametrize("score", ["lac", "aps"])
@pytest.mark.parametrize("strategy", ["segregativity", "naive_most_accurate"])
def test_outcomes_and_sweep_metrics_match_loop_reference(score, strategy):
  ds, cal, test, conf = _setup()
  labels, probs = ds.labels, ds.probs
  sub = ds.annotations.select_images(test)
  a, m, v = (np.asarray(x) for x in (sub.annotator, sub.answer, sub.mask))
  # Distinct costs make the reference's tie-break deterministic.
  costs = np.random.default_rng(1).permutation(
      ds.annotations.num_experts).astype(float)
  alphas = np.array([0.01, 0.05, 0.1, 0.2, 0.35, 0.6])
  want = ref.deferral_loop(probs[cal], labels[cal], probs[test], labels[test],
                           a, m, v, conf, alphas, score=score, costs=costs,
                           strategy=strategy)
  order, sp = (np.asarray(x) for x in conformal.sort_probs(probs))
  seg = conformal.prefix_segregativity(order[test], labels[test], sub, conf)
  out = deferral.strategy_outcomes(
      seg, order[test, 0] == labels[test], sub, labels[test],
      strategy=strategy, key=jax.random.key(0), tie_break="cost", costs=costs)
  rank = np.argsort(order, 1)[np.arange(labels.size), labels]
  sizes = conformal.split_set_sizes(sp[cal], rank[cal], sp[test], alphas,
                                    score=score)
  got = conformal.sweep_metrics(sizes, out,
                                num_experts=ds.annotations.num_experts)
  np.testing.assert_allclose(got.accuracy, want["accuracy"], atol=1e-6)
  np.testing.assert_array_equal(got.queries, want["queries"])
  np.testing.assert_array_equal(got.max_queries_per_expert,
                                want["max_queries_per_expert"])
  np.testing.assert_allclose(got.avg_queries_per_queried_expert,
                             want["avg_queries_per_queried_expert"], rtol=1e-6)
  np.testing.assert_allclose((rank[test][:, None] < np.asarray(sizes)).mean(0),
                             want["coverage"], atol=1e-6)


def test_prefix_segregativity_matches_leave_one_out_matrices():
  ds, _, test, conf = _setup(seed=2)
  ann, labels = ds.annotations, ds.labels
  sub = ann.select_images(test)
  order, _ = conformal.sort_probs(ds.probs[test])
  seg = np.asarray(conformal.prefix_segregativity(order, labels[test], sub,
                                                  conf, batch_size=7))
  loo = np.asarray(experts.leave_one_out_confusions(conf, sub, labels[test]))
  k = ds.num_classes
  mask = np.asarray(sub.mask)
  for i in range(0, len(test), 17):
    for s_ in range(k + 1):
      in_set = np.zeros(k, bool)
      in_set[np.asarray(order[i, :s_])] = True
      for slot in range(mask.shape[1]):
        if not mask[i, slot]:
          assert seg[i, slot, s_] == -np.inf
          continue
        want = np.asarray(experts.segregativity(loo[i, slot][None], in_set))[0]
        np.testing.assert_allclose(seg[i, slot, s_], want, rtol=1e-6)


def test_prefix_segregativity_out_of_range_is_nan_under_jit():
  ds, _, test, conf = _setup(seed=2)
  sub = ds.annotations.select_images(test[:5])
  order, _ = conformal.sort_probs(ds.probs[test[:5]])
  broken = sub.replace(annotator=sub.annotator.at[0, 0].set(
      ds.annotations.num_experts))
  with pytest.raises(ValueError, match="annotator"):
    conformal.prefix_segregativity(order, ds.labels[test[:5]], broken, conf)
  seg = np.asarray(jax.jit(conformal.prefix_segregativity)(
      order, ds.labels[test[:5]], broken, conf))
  assert np.isnan(seg[0, 0]).all()  # never the last expert's values
  assert not np.isnan(np.delete(seg.reshape(-1, seg.shape[-1]), 0, 0)).any()
  with pytest.raises(ValueError, match="confusion"):
    conformal.prefix_segregativity(order, ds.labels[test[:5]], sub, -conf)


def test_empty_set_decides_like_the_full_set(rng):
  # The empty set uses the whole matrix, which is the s = K prefix: the
  # table entries are equal floats, so every strategy (same scores, same
  # priorities) consults exactly the same annotator at s = 0 and s = K.
  ds, _, test, conf = _setup(seed=3)
  sub, labels = ds.annotations.select_images(test), ds.labels[test]
  order, _ = conformal.sort_probs(ds.probs[test])
  seg = np.asarray(conformal.prefix_segregativity(order, labels, sub, conf))
  np.testing.assert_array_equal(seg[..., 0], seg[..., -1])
  model_correct = np.asarray(order[:, 0]) == labels
  correct, total = conformal.prefix_counts(order, labels, sub, conf)
  lcb = deferral.posterior_lcb(correct, total)
  lcb = jnp.where(jnp.asarray(sub.mask)[..., None], lcb, -jnp.inf)
  np.testing.assert_array_equal(lcb[..., 0], lcb[..., -1])
  for strategy in deferral.STRATEGIES:
    out = deferral.strategy_outcomes(seg, model_correct, sub, labels,
                                     strategy=strategy, key=rng,
                                     lcb_table=lcb)
    np.testing.assert_array_equal(out.agent[:, 0], out.agent[:, -1])
    np.testing.assert_array_equal(out.correct[:, 0], out.correct[:, -1])
    assert (np.asarray(out.agent)[:, [0, 2]] >= 1).all()


def test_experiment_sweep_reports_cross_fitted_accuracy():
  ds = data.synthetic_pool(0, num_images=400, num_experts=30,
                           answers_per_expert=80)
  has = np.asarray(ds.annotations.mask).any(1)
  pool = exp_run.Pool(ds.probs, ds.labels, ds.annotations, np.flatnonzero(has),
                      None, "synthetic", "m")
  per = exp_run.sweep(pool, scores=["lac", "raps"],
                      alphas=np.array([0.02, 0.1, 0.3]), n_splits=3,
                      cal_size=100, seed=0, progress=False)
  for s in ("lac", "raps"):
    for t in deferral.STRATEGIES:
      cf = np.asarray(per["strategies"][s][t]["accuracy_cross_fitted"])
      acc = np.asarray(per["strategies"][s][t]["accuracy"])
      assert cf.shape == (3,) and acc.shape == (3, 3)
      assert np.all((cf >= 0) & (cf <= 1))
  assert len(per["baselines"]["model"]) == 3
  assert len(per["raps_params"]) == 3


def test_stratified_sample_keeps_class_shares():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), [100, 200, 300, 400])
  idx = exp_run.stratified_sample(rng, np.arange(1000), labels, 100)
  np.testing.assert_array_equal(np.bincount(labels[idx]), [10, 20, 30, 40])
  assert np.unique(idx).size == 100
  with pytest.raises(ValueError, match="cal-size"):
    exp_run.stratified_sample(rng, np.arange(10), labels, 11)
