"""The vectorised deferral sweep against the plain numpy loop reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import conformal_reference as ref
from experiments import conformal_deferral as exp
from l2d_jax import conformal
from l2d_jax import data
from l2d_jax import experts


def _setup(seed=0, n_images=300, n_cal=120):
  ds = data.synthetic_pool(seed, num_images=n_images, num_classes=6,
                           num_experts=25, answers_per_expert=60)
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n_images)
  cal, test = perm[:n_cal], perm[n_cal:]
  labels = ds.labels
  conf = np.asarray(experts.confusion_matrices(ds.annotations, labels))
  return ds, cal, test, conf


@pytest.mark.parametrize("score", ["lac", "aps"])
@pytest.mark.parametrize("strategy", ["segregativity", "naive_most_accurate"])
def test_sweep_matches_loop_reference(score, strategy):
  ds, cal, test, conf = _setup()
  labels, probs, ann = ds.labels, ds.probs, ds.annotations
  a, m, v = (np.asarray(x)[test] for x in (ann.annotator, ann.answer,
                                           ann.mask))
  # Distinct costs make the reference's tie-break deterministic.
  costs = np.random.default_rng(1).permutation(ann.num_experts).astype(float)
  alphas = np.array([0.01, 0.05, 0.1, 0.2, 0.35, 0.6])
  want = ref.deferral_loop(probs[cal], labels[cal], probs[test], labels[test],
                           a, m, v, conf, alphas, score=score, costs=costs,
                           strategy=strategy)
  order, sp = conformal.sort_probs(probs)
  order, sp = np.asarray(order), np.asarray(sp)
  seg = conformal.prefix_segregativity(order[test], labels[test], a, m, v,
                                       conf)
  out = conformal.strategy_outcomes(
      seg, order[test, 0] == labels[test], a, m == labels[test][:, None], v,
      strategy=strategy, key=jax.random.key(0), tie_break="cost", costs=costs)
  fn = {"lac": conformal.sorted_lac_scores,
        "aps": conformal.sorted_aps_scores}[score]
  rs = np.asarray(fn(sp))
  pos = np.argsort(order, 1)[np.arange(labels.size), labels]
  q = conformal.conformal_quantile(rs[cal, pos[cal]], alphas)
  sizes = conformal.set_sizes_from_sorted(rs[test], q,
                                          include_crossing=(score == "aps"))
  got = conformal.sweep_metrics(sizes, out, num_experts=ann.num_experts)
  np.testing.assert_allclose(got.accuracy, want["accuracy"], atol=1e-6)
  np.testing.assert_array_equal(got.queries, want["queries"])
  np.testing.assert_array_equal(got.max_queries_per_expert,
                                want["max_queries_per_expert"])
  np.testing.assert_allclose(got.avg_queries_per_queried_expert,
                             want["avg_queries_per_queried_expert"], rtol=1e-6)
  np.testing.assert_allclose((pos[test][:, None] < np.asarray(sizes)).mean(0),
                             want["coverage"], atol=1e-6)


def test_prefix_segregativity_matches_leave_one_out_matrices():
  ds, _, test, conf = _setup(seed=2)
  ann, labels = ds.annotations, ds.labels
  sub = ann.select_images(test)
  order, _ = conformal.sort_probs(ds.probs[test])
  seg = np.asarray(conformal.prefix_segregativity(
      order, labels[test], sub.annotator, sub.answer, sub.mask, conf,
      batch_size=7))
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


def test_outcomes_model_answers_singletons_and_random_choice_is_valid(rng):
  ds, _, test, conf = _setup(seed=3)
  ann, labels = ds.annotations.select_images(test), ds.labels[test]
  order, _ = conformal.sort_probs(ds.probs[test])
  seg = conformal.prefix_segregativity(order, labels, ann.annotator,
                                       ann.answer, ann.mask, conf)
  model_correct = np.asarray(order[:, 0]) == labels
  for strategy in conformal.STRATEGIES:
    out = conformal.strategy_outcomes(
        seg, model_correct, ann.annotator,
        np.asarray(ann.answer) == labels[:, None], ann.mask,
        strategy=strategy, key=rng)
    np.testing.assert_array_equal(out.expert[:, 1], conformal.MODEL)
    np.testing.assert_array_equal(out.correct[:, 1], model_correct)
    chosen = np.asarray(out.expert)[:, [0, 2]]
    for i in range(len(test)):
      assert set(chosen[i]) <= set(np.asarray(ann.annotator)[i][
          np.asarray(ann.mask)[i]])
    # Empty set = whole matrix = the s = K prefix.
    if strategy == "segregativity":
      assert np.mean(np.asarray(out.expert[:, 0]) ==
                     np.asarray(out.expert[:, -1])) > 0.6
  with pytest.raises(ValueError, match="strategy"):
    conformal.strategy_outcomes(seg, model_correct, ann.annotator,
                                ann.mask, ann.mask, strategy="oracle", key=rng)


def test_sweep_compiles_once_across_splits():
  ds = data.synthetic_pool(0, num_images=400, num_experts=30,
                           answers_per_expert=80)
  has = np.asarray(ds.annotations.mask).any(1)
  pool = exp.Pool(ds.probs, ds.labels, ds.annotations, np.flatnonzero(has),
                  None, "synthetic", "m")
  alphas = np.array([0.02, 0.1, 0.3])
  exp._strategy_sweep._clear_cache()  # pylint: disable=protected-access
  exp._sizes_fixed._clear_cache()  # pylint: disable=protected-access
  per = exp.sweep(pool, scores=["lac", "aps", "raps"], alphas=alphas,
                  n_splits=4, cal_size=100, seed=0, progress=False)
  # One compilation for all strategies and one per fixed score (LAC, APS),
  # however many splits.
  assert exp._strategy_sweep._cache_size() == 1  # pylint: disable=protected-access
  assert exp._sizes_fixed._cache_size() == 2  # pylint: disable=protected-access
  assert len(per["baselines"]["model"]) == 4
  res, det = exp.summarise(per, pool=pool, alphas=alphas,
                           scores=["lac", "aps", "raps"])
  seg = res["scores"]["aps"]["strategies"]["segregativity"]
  assert len(seg["accuracy_mean"]) == 3
  assert 0 <= seg["p_value_vs_strongest_baseline"] <= 1
  assert det["strongest_baseline"] in ("best_expert", "model")


def test_stratified_sample_keeps_class_shares():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), [100, 200, 300, 400])
  idx = exp.stratified_sample(rng, np.arange(1000), labels, 100)
  np.testing.assert_array_equal(np.bincount(labels[idx]), [10, 20, 30, 40])
  assert np.unique(idx).size == 100
  with pytest.raises(ValueError, match="cal-size"):
    exp.stratified_sample(rng, np.arange(10), labels, 11)


def test_workload_counts():
  q, mx, avg = conformal.workload(jnp.array([-1, 2, 2, 0, -1, 2]),
                                  num_experts=3)
  assert (int(q), int(mx), float(avg)) == (4, 3, 2.0)
  chex.assert_trees_all_close(
      conformal.workload(jnp.array([-1, -1]), num_experts=2),
      (jnp.array(0), jnp.array(0), jnp.array(0.0)))
