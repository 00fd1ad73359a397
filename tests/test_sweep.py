"""conformal.deferral_sweep against the numpy loop reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import conformal
from l2d_jax import data
from l2d_jax import deferral
from l2d_jax import experts
from l2d_jax.conformal import _sweep
from tests import conformal_reference as ref

ALPHAS = np.array([0.35, 0.01, 0.05, 0.1, 0.2, 0.6])  # unsorted on purpose


def _pool(seed=0, n_images=160, num_classes=6, num_experts=12, answers=30):
  ds = data.synthetic_pool(seed, num_images=n_images, num_classes=num_classes,
                           num_experts=num_experts, answers_per_expert=answers)
  has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
  return ds, has


def _splits(has, n_images, num_p, n_test, n_cal, n_tune, seed=0):
  rng = np.random.default_rng(seed)
  test, cal, tune = [], [], []
  for _ in range(num_p):
    t = np.sort(rng.choice(has, n_test, replace=False))
    rest = rng.permutation(np.setdiff1d(np.arange(n_images), t))
    test.append(t)
    cal.append(rest[:n_cal])
    tune.append(rest[n_cal:n_cal + n_tune])
  return np.stack(cal), np.stack(test), np.stack(tune)


def _priorities(key, p, shape):
  prios, _ = _sweep._split_randomness(key, p, shape)  # pylint: disable=protected-access
  return list(np.asarray(prios))


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_sweep_matches_loop_reference(score):
  ds, has = _pool()
  probs, labels, ann = ds.probs, ds.labels, ds.annotations
  cal, test, tune = _splits(has, ds.probs.shape[0], 2, 40, 60, 30)
  # Distinct costs break every score tie the same way in both.
  costs = np.random.default_rng(1).permutation(ann.num_experts).astype(
      np.float32)
  key = jax.random.key(3)
  groups = (np.arange(40)[None, :] % 2).repeat(2, 0)
  out = conformal.deferral_sweep(
      probs, labels, ann, cal, test, ALPHAS, key=key, scores=(score,),
      tune_idx=tune, groups=groups, tie_break="cost", costs=costs)
  chex.assert_shape(out.strategies.accuracy, (2, 1, 3, ALPHAS.size))
  chex.assert_shape(out.baselines.accuracy, (2, 3))
  chex.assert_shape(out.group_accuracy, (2, 1, 3, 2, ALPHAS.size))
  conf = np.asarray(experts.confusion_matrices(ann, labels))
  hindsight = np.asarray(experts.expert_accuracy(conf)[0])
  a_all, m_all, v_all = (np.asarray(x) for x in (ann.annotator, ann.answer,
                                                 ann.mask))
  for p in range(2):
    t = test[p]
    a, m, v = a_all[t], m_all[t], v_all[t]
    prio = _priorities(key, p, a.shape)
    # LAC and APS calibrate on the RAPS tuning points too.
    c = cal[p] if score == "raps" else np.concatenate([cal[p], tune[p]])
    kw = {}
    if score == "raps":
      kw = {"k_reg": np.asarray(out.k_reg[p]), "lam": np.asarray(out.lam[p])}
      want_k, want_l = conformal.tune_raps(probs[tune[p]], labels[tune[p]],
                                           np.sort(ALPHAS))
      np.testing.assert_array_equal(kw["k_reg"][np.argsort(ALPHAS)], want_k)
      np.testing.assert_allclose(kw["lam"][np.argsort(ALPHAS)], want_l)
    for s_i, strategy in enumerate(deferral.STRATEGIES):
      want = ref.deferral_loop(
          probs[c], labels[c], probs[t], labels[t], a, m, v, conf, ALPHAS,
          score=score, costs=costs, strategy=strategy, priority=prio[s_i],
          **kw)
      got = jax.tree.map(lambda x: np.asarray(x[p, 0, s_i]), out.strategies)
      np.testing.assert_allclose(got.accuracy, want["accuracy"], atol=1e-6)
      np.testing.assert_array_equal(got.queries, want["queries"])
      np.testing.assert_array_equal(got.max_queries_per_expert,
                                    want["max_queries_per_expert"])
      np.testing.assert_allclose(got.avg_queries_per_queried_expert,
                                 want["avg_queries_per_queried_expert"],
                                 rtol=1e-6)
      for g in (0, 1):
        np.testing.assert_allclose(
            out.group_accuracy[p, 0, s_i, g],
            want["correct"][:, groups[p] == g].mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(out.coverage[p, 0], want["coverage"],
                               atol=1e-6)
    np.testing.assert_allclose(out.mean_set_size[p, 0], want["mean_set_size"],
                               atol=1e-6)
    base = ref.baselines_loop(
        np.asarray(probs[t].argmax(1) == labels[t]), a, m, labels[t], v,
        hindsight, prio[3], prio[4])
    for b_i, b in enumerate(conformal.BASELINES):
      got = [np.asarray(f[p, b_i]) for f in out.baselines]
      np.testing.assert_allclose(got, base[b], rtol=1e-6)


def test_sweep_n_shots_matches_reference_on_the_subsample():
  ds, has = _pool(seed=1)
  probs, labels, ann = ds.probs, ds.labels, ds.annotations
  cal, test, _ = _splits(has, ds.probs.shape[0], 2, 40, 60, 0, seed=1)
  costs = np.random.default_rng(2).permutation(ann.num_experts).astype(
      np.float32)
  key = jax.random.key(0)
  out = conformal.deferral_sweep(probs, labels, ann, cal, test, ALPHAS,
                                 key=key, scores=("lac",),
                                 n_shots=np.int64(2),
                                 tie_break="cost", costs=costs)
  for p in range(2):
    _, shots_key = _sweep._split_randomness(  # pylint: disable=protected-access
        key, p, ann.mask[test[p]].shape)
    kept = experts.subsample_n_shots(shots_key, ann, labels, n_shots=2)
    conf = np.asarray(experts.confusion_matrices(kept, labels))
    t = test[p]
    a, m, v = (np.asarray(x)[t] for x in (ann.annotator, ann.answer,
                                          ann.mask))
    want = ref.deferral_loop(
        probs[cal[p]], labels[cal[p]], probs[t], labels[t], a, m, v, conf,
        ALPHAS, score="lac", costs=costs, exclude=np.asarray(kept.mask)[t])
    np.testing.assert_allclose(out.strategies.accuracy[p, 0, 0],
                               want["accuracy"], atol=1e-6)
    np.testing.assert_array_equal(out.strategies.queries[p, 0, 0],
                                  want["queries"])


def test_sweep_compiles_once_for_all_splits():
  ds, has = _pool(seed=2)
  traced = chex.assert_max_traces(_sweep._deferral_sweep.__wrapped__, n=1)  # pylint: disable=protected-access
  fn = jax.jit(traced, static_argnames=("scores", "tie_break", "n_shots",
                                        "lam_grid", "batch_size"))
  # All splits, scores and alphas in one program: new splits, keys and
  # alphas of the same shapes do not trace again.
  for seed in (0, 1):
    cal, test, tune = _splits(has, ds.probs.shape[0], 3, 30, 40, 10,
                              seed=seed)
    out = fn(jnp.asarray(ds.probs), jnp.asarray(ds.labels), ds.annotations,
             jnp.asarray(cal), jnp.asarray(test),
             jnp.asarray(ALPHAS + seed / 100),
             jax.random.key(seed), jnp.asarray(tune), None, None,
             scores=("lac", "aps", "raps"), tie_break="random", n_shots=None,
             lam_grid=(0.01, 0.1), batch_size=16)
    chex.assert_shape(out.coverage, (3, 3, ALPHAS.size))


def test_one_call_for_all_scores_equals_one_call_per_score():
  ds, has = _pool(seed=7)
  cal, test, tune = _splits(has, ds.probs.shape[0], 2, 30, 40, 10)
  args = (ds.probs, ds.labels, ds.annotations, cal, test, ALPHAS)
  key = jax.random.key(5)
  all_three = conformal.deferral_sweep(*args, key=key, tune_idx=tune)
  for c, score in enumerate(("lac", "aps", "raps")):
    one = conformal.deferral_sweep(*args, key=key, scores=(score,),
                                   tune_idx=tune)
    chex.assert_trees_all_equal(
        jax.tree.map(lambda x, c=c: x[:, c], all_three.strategies),
        jax.tree.map(lambda x: x[:, 0], one.strategies))
    np.testing.assert_array_equal(all_three.coverage[:, c], one.coverage[:, 0])
    chex.assert_trees_all_equal(all_three.baselines, one.baselines)


def test_model_answers_singletons_exactly():
  # With alpha so large that every set is a singleton or empty, the
  # accuracy at a singleton-only alpha is the model's accuracy exactly.
  ds, has = _pool(seed=4)
  cal, test, _ = _splits(has, ds.probs.shape[0], 1, 40, 60, 0)
  out = conformal.deferral_sweep(ds.probs, ds.labels, ds.annotations, cal,
                                 test, np.array([0.999]), key=jax.random.key(0),
                                 scores=("aps",))
  # APS keeps the crossing label: every set has size 1 at alpha ~ 1.
  np.testing.assert_array_equal(out.mean_set_size, [[[1.0]]])
  model_acc = np.mean(ds.probs[test[0]].argmax(1) == ds.labels[test[0]])
  np.testing.assert_allclose(out.strategies.accuracy[0, 0, :, 0], model_acc)
  np.testing.assert_array_equal(out.strategies.queries[0, 0, :, 0], 0)
  np.testing.assert_allclose(out.baselines.accuracy[0, 0], model_acc)


def test_sweep_bad_input():
  ds, has = _pool(seed=5)
  cal, test, tune = _splits(has, ds.probs.shape[0], 2, 20, 30, 10)
  args = (ds.probs, ds.labels, ds.annotations, cal, test, ALPHAS)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="tune_idx"):
    conformal.deferral_sweep(*args, key=key)
  with pytest.raises(ValueError, match="tune_idx"):
    conformal.deferral_sweep(*args, key=key, tune_idx=tune[:, :1])
  with pytest.raises(TypeError, match="scores"):
    conformal.deferral_sweep(*args, key=key, scores="lac")
  with pytest.raises(ValueError, match="scores"):
    conformal.deferral_sweep(*args, key=key, scores=("lac", "lac"))
  with pytest.raises(ValueError, match="score"):
    conformal.deferral_sweep(*args, key=key, scores=("thr",))
  with pytest.raises(ValueError, match="test_idx"):
    conformal.deferral_sweep(ds.probs, ds.labels, ds.annotations, cal,
                             test + 1000, ALPHAS, key=key, scores=("lac",))
  with pytest.raises(ValueError, match="groups"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",),
                             groups=np.zeros(test.shape, int))
  with pytest.raises(ValueError, match="costs"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",), tie_break="cost")
  with pytest.raises(ValueError, match="alphas"):
    conformal.deferral_sweep(*args[:-1], np.array([0.1, 1.0]), key=key,
                             scores=("lac",))
  with pytest.raises(TypeError, match="n_shots"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",), n_shots=1.5)
  no_ann = np.flatnonzero(~np.asarray(ds.annotations.mask).any(1))
  if no_ann.size:
    bad = test.copy()
    bad[0, 0] = no_ann[0]
    with pytest.raises(ValueError, match="no valid annotator"):
      conformal.deferral_sweep(ds.probs, ds.labels, ds.annotations, cal, bad,
                               ALPHAS, key=key, scores=("lac",))


def test_cross_fitted_accuracy_hand_example():
  acc = np.array([
      # split 0: group 0 peaks at alpha 1, group 1 at alpha 2.
      [[0.8, 0.9, 0.7], [0.85, 0.8, 0.95]],
      # split 1: both peak at alpha 0 (ties go to the first alpha).
      [[0.6, 0.6, 0.5], [0.7, 0.6, 0.7]],
  ])
  got = conformal.cross_fitted_accuracy(acc)
  np.testing.assert_allclose(got, [(0.8 + 0.7) / 2, (0.7 + 0.6) / 2])
  # Leading axes (splits x strategies) pass through.
  chex.assert_shape(conformal.cross_fitted_accuracy(np.zeros((4, 3, 2, 5))),
                    (4, 3))
  with pytest.raises(ValueError, match="group_accuracy"):
    conformal.cross_fitted_accuracy(np.zeros((3, 5)))


def test_cross_fitted_accuracy_from_sweep_is_at_most_the_hindsight_optimum():
  ds, has = _pool(seed=6)
  cal, test, _ = _splits(has, ds.probs.shape[0], 3, 40, 60, 0)
  groups = np.random.default_rng(0).permutation(
      np.arange(40) % 2)[None].repeat(3, 0)
  out = conformal.deferral_sweep(ds.probs, ds.labels, ds.annotations, cal,
                                 test, ALPHAS, key=jax.random.key(1),
                                 scores=("lac",), groups=groups)
  cf = np.asarray(conformal.cross_fitted_accuracy(out.group_accuracy))
  # Each half scored at its own best alpha bounds the cross-fitted score.
  best = np.asarray(out.group_accuracy).max(axis=-1).mean(axis=-1)
  assert np.all(cf <= best + 1e-7)
  # Equal halves: the mean of the two group accuracies is the accuracy.
  np.testing.assert_allclose(np.asarray(out.group_accuracy).mean(axis=-2),
                             out.strategies.accuracy, atol=1e-6)


def test_run_events_equal_the_direct_histogram():
  rng = np.random.default_rng(0)
  n, num_a, num_s, num_j = 50, 30, 6, 7
  # Piecewise-constant sizes in any direction (as RAPS's can be).
  steps = rng.random((n, num_a)) < 0.2
  sizes = np.where(steps, rng.integers(0, num_s, (n, num_a)), -1)
  sizes[:, 0] = rng.integers(0, num_s, n)
  for a in range(1, num_a):
    sizes[:, a] = np.where(sizes[:, a] < 0, sizes[:, a - 1], sizes[:, a])
  sizes = jnp.asarray(sizes, jnp.int32)
  agent = jnp.asarray(rng.integers(-1, num_j + 1, (n, num_s)), jnp.int32)
  weights = jnp.asarray(rng.random((n, num_s, 2)) < 0.5)
  want = _sweep._read_alphas_gather(sizes, agent, weights, num_j)  # pylint: disable=protected-access
  start, end, size, overflow = _sweep._runs(sizes, num_a)  # pylint: disable=protected-access
  assert not overflow
  got = _sweep._read_alphas_runs((start, end, size), agent, weights, num_a,  # pylint: disable=protected-access
                                 num_j)
  chex.assert_trees_all_equal(got, want)
  # Direct numpy check of one alpha's histogram.
  a = 7
  who = np.asarray(agent)[np.arange(n), np.asarray(sizes)[:, a]]
  hist = np.bincount(who[(who >= 1)] - 1, minlength=num_j)
  np.testing.assert_array_equal(got[0][a], hist)
  assert bool(_sweep._runs(sizes, 2)[3])  # pylint: disable=protected-access


def test_runs_match_a_numpy_walk():
  rng = np.random.default_rng(3)
  n, num_a = 40, 9
  sizes = np.cumsum(rng.random((n, num_a)) < 0.3, axis=1) % 4
  for num_runs in (2, num_a, num_a + 3):  # fewer, as many as, more than A
    start, end, size, overflow = _sweep._runs(  # pylint: disable=protected-access
        jnp.asarray(sizes, jnp.int32), num_runs)
    want_overflow = False
    for i in range(n):
      starts = [a for a in range(num_a)
                if a == 0 or sizes[i, a] != sizes[i, a - 1]]
      want_overflow |= len(starts) > num_runs
      kept = (starts + [num_a] * num_runs)[:num_runs]
      np.testing.assert_array_equal(start[i], kept)
      np.testing.assert_array_equal(end[i], kept[1:] + [num_a])
      np.testing.assert_array_equal(
          size[i], sizes[i, np.minimum(kept, num_a - 1)])
    assert bool(overflow) == want_overflow
