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
from l2d_jax.conformal import _quantile
from l2d_jax.conformal import _sweep
from l2d_jax.conformal import _sweep_events
from l2d_jax.conformal import _sweep_slots
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
  prios, _ = _sweep_slots._split_randomness(key, p, shape)  # pylint: disable=protected-access
  return list(np.asarray(prios))


@pytest.mark.parametrize("score,lcb", [("lac", (1.0, 1.0, 1.0)),
                                       ("aps", (0.0, 1.0, 1.0)),
                                       ("raps", (2.0, 3.0, 0.5))])
def test_sweep_matches_loop_reference(score, lcb):
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
      tune_idx=tune, groups=groups, tie_break="cost", costs=costs,
      lcb_lambda=lcb[0], lcb_prior_a=lcb[1], lcb_prior_b=lcb[2])
  num_s = len(deferral.STRATEGIES)
  chex.assert_shape(out.strategies.accuracy, (2, 1, num_s, ALPHAS.size))
  chex.assert_shape(out.baselines.accuracy, (2, 3))
  chex.assert_shape(out.group_accuracy, (2, 1, num_s, 2, ALPHAS.size))
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
          lcb=lcb, **kw)
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
        hindsight, prio[num_s], prio[num_s + 1])
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
    _, shots_key = _sweep_slots._split_randomness(  # pylint: disable=protected-access
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
  # All splits, scores and alphas in one program: new splits, keys,
  # alphas, LCB settings and split ids of the same shapes do not trace again.
  for seed in (0, 1):
    cal, test, tune = _splits(has, ds.probs.shape[0], 3, 30, 40, 10,
                              seed=seed)
    out = fn(jnp.asarray(ds.probs), jnp.asarray(ds.labels), ds.annotations,
             jnp.asarray(cal), jnp.asarray(test),
             jnp.asarray(ALPHAS + seed / 100),
             jax.random.key(seed), jnp.asarray(tune), None, None,
             # A new LCB lambda and prior do not trace again either.
             tuple(jnp.float32(v + seed) for v in (1.0, 1.0, 2.0)),
             jnp.arange(3, dtype=jnp.uint32) + seed,
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


def test_alphas_in_order_give_the_columns_of_any_order():
  # Alphas known to be sorted skip the sort in the program; the same columns.
  ds, has = _pool(seed=4)
  cal, test, tune = _splits(has, ds.probs.shape[0], 2, 30, 40, 10)
  order = np.argsort(ALPHAS)
  args = (ds.probs, ds.labels, ds.annotations, cal, test)
  kw = dict(key=jax.random.key(2), tune_idx=tune,
            groups=np.tile(np.arange(30) % 2, (2, 1)))
  mixed = conformal.deferral_sweep(*args, ALPHAS, **kw)
  in_order = conformal.deferral_sweep(*args, ALPHAS[order], **kw)
  chex.assert_trees_all_equal(
      jax.tree.map(lambda x: x[..., order], mixed._replace(baselines=None)),
      in_order._replace(baselines=None))
  chex.assert_trees_all_equal(mixed.baselines, in_order.baselines)


def test_a_subset_of_splits_with_their_ids_gives_their_rows():
  ds, has = _pool(seed=9)
  cal, test, tune = _splits(has, ds.probs.shape[0], 3, 30, 40, 10)
  groups = (np.arange(30)[None, :] % 2).repeat(3, 0)
  args = (ds.probs, ds.labels, ds.annotations)
  kw = dict(key=jax.random.key(2), scores=("aps", "raps"), groups=groups)
  full = conformal.deferral_sweep(*args, cal, test, ALPHAS, tune_idx=tune,
                                  **kw)
  # The default ids are the rows' positions.
  ids = conformal.deferral_sweep(*args, cal, test, ALPHAS, tune_idx=tune,
                                 split_ids=np.arange(3), **kw)
  chex.assert_trees_all_equal(ids, full)
  # Splits 2 and 0 alone (in that order), keyed by their ids.
  rows = np.array([2, 0])
  sub = conformal.deferral_sweep(
      *args, cal[rows], test[rows], ALPHAS, tune_idx=tune[rows],
      split_ids=rows, **{**kw, "groups": groups[rows]})
  chex.assert_trees_all_equal(sub, jax.tree.map(lambda x: x[rows], full))
  # Without the ids, row 0 of the subset would use split 0's draws: the
  # random strategy's and baseline's choices differ from split 2's.
  plain = conformal.deferral_sweep(
      *args, cal[rows], test[rows], ALPHAS, tune_idx=tune[rows],
      **{**kw, "groups": groups[rows]})
  assert not all(np.array_equal(a[0], b[2]) for a, b in zip(
      jax.tree.leaves(plain), jax.tree.leaves(full)))


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
  with pytest.raises(ValueError, match=r"`split_ids` must have shape "
                     r"\[P\]=\[2\] \(one id per row of `cal_idx`\), got \(3,\)"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",),
                             split_ids=np.arange(3))
  with pytest.raises(ValueError, match=r"`split_ids` must lie in \[0, "
                     r"2\*\*32\), got values in \[-1, 0\]"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",),
                             split_ids=np.array([0, -1]))
  with pytest.raises(TypeError, match="`split_ids` must hold integers"):
    conformal.deferral_sweep(*args, key=key, scores=("lac",),
                             split_ids=np.array([0.0, 1.0]))
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


def _walk_runs(sizes):
  """Starts and sizes of the runs of each row, the plain way."""
  out = []
  for row in sizes:
    starts = [a for a in range(row.size) if a == 0 or row[a] != row[a - 1]]
    out.append((starts, [int(row[a]) for a in starts]))
  return out


def test_change_codes_list_every_run_start():
  rng = np.random.default_rng(3)
  n, num_a, pad = 40, 9, 5
  sizes = np.cumsum(rng.random((n, num_a)) < 0.3, axis=1) % 4
  codes, total = _sweep_events._change_codes(  # pylint: disable=protected-access
      jnp.asarray(sizes, jnp.int32), pad)
  want = [i * num_a + a for i, (starts, _) in enumerate(_walk_runs(sizes))
          for a in starts]
  assert int(total) == len(want)
  np.testing.assert_array_equal(
      codes, want + [-1] * (n * num_a + pad - len(want)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sort_floats_equals_numpy_sort(dtype):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 4, 57)).astype(dtype)
  x[0, 0, :6] = [-0.0, 0.0, np.inf, -np.inf, np.nan, -np.nan]
  x[1, 2, ::3] = 0.25  # ties
  with jax.enable_x64(dtype == np.float64):
    got = np.asarray(_quantile._sort_floats(jnp.asarray(x)))  # pylint: disable=protected-access
  assert got.dtype == dtype
  want = np.sort(x, axis=-1)  # -0 and 0 equal, NaN last, as jnp.sort
  np.testing.assert_array_equal(got, want)  # NaN-aware; -0.0 == 0.0
  assert not np.signbit(got[got == 0]).any()  # zeros made canonical


def test_alpha_floors_equal_alpha_floor_per_n():
  alphas = np.array([0.001, 0.01, 0.0133, 0.1, 0.25, 1 / 3, 0.5, 0.999, 0.0,
                     1.0], np.float32)
  ns = (2, 299, 301, 1001, 70001)
  want = np.stack([np.floor(np.float64(n) * alphas.astype(np.float64))
                   for n in ns])
  traced = jax.jit(lambda a: _quantile.alpha_floors(ns, a))(alphas)
  for r, n in enumerate(ns):
    # Rows equal the single-n floors, traced and concrete.
    one = jax.jit(lambda a, n=n: _quantile.alpha_floor(n, a))(alphas)
    np.testing.assert_array_equal(traced[r], one)
    np.testing.assert_array_equal(
        _quantile.alpha_floors(ns, alphas[:-2])[r],
        _quantile.alpha_floor(n, alphas[:-2]))
  # Decimal alphas are exact; alphas outside (0, 1) give -1 under jit.
  np.testing.assert_array_equal(traced[:, [0, 1, 2, 3, 4, 6, 7]],
                                want[:, [0, 1, 2, 3, 4, 6, 7]])
  np.testing.assert_array_equal(traced[:, -2:], -1)


@pytest.mark.parametrize("n", [1, 5, 128, 129, 9000])
def test_exclusive_cumsum_equals_numpy(n):
  x = np.random.default_rng(n).integers(0, 300, n).astype(np.int32)
  got = _sweep_events._exclusive_cumsum(jnp.asarray(x))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, np.cumsum(x) - x)


@pytest.mark.parametrize("chunk,fixed", [(3, False), (31, False),
                                         (3, True), (31, True)])
def test_run_events_equal_a_direct_histogram(chunk, fixed):
  rng = np.random.default_rng(0)
  n, num_a, num_k, num_j, num_s = 50, 30, 5, 7, 2
  # Piecewise-constant sizes in any direction (as RAPS's can be).
  steps = rng.random((n, num_a)) < 0.2
  sizes = np.where(steps, rng.integers(0, num_k + 1, (n, num_a)), -1)
  sizes[:, 0] = rng.integers(0, num_k + 1, n)
  for a in range(1, num_a):
    sizes[:, a] = np.where(sizes[:, a] < 0, sizes[:, a - 1], sizes[:, a])
  agent = jnp.asarray(rng.integers(-1, num_j + 1, (num_s, n, num_k + 1)),
                      jnp.int32)
  weights = jnp.asarray(rng.integers(0, 2, (num_s, n, num_k + 1, 2)),
                        jnp.int32)
  shared = jnp.asarray(rng.integers(0, 4, (n, num_k + 1, 2)), jnp.int32)
  ev = {}
  if fixed:
    # Strategy 1 consults one expert (or nobody) per point at every size but
    # 1 (the model): one event per run at that expert's column.
    one = rng.integers(-1, num_j + 1, n)
    one = np.where(one == 0, 1, one)
    agent = agent.at[1].set(np.where(np.arange(num_k + 1) == 1, 0,
                                     one[:, None]))
    right = rng.integers(0, 2, (n, 1, 2))
    model_right = rng.integers(0, 2, (n, 1, 2))
    weights = weights.at[1].set(np.where(
        (np.arange(num_k + 1) == 1)[None, :, None], model_right, right))
    ev = dict(fixed=(1,), fixed_col=jnp.asarray(np.maximum(one - 1, 0))[None])
  rows = _sweep_events._count_rows(weights, shared)  # pylint: disable=protected-access
  dims = dict(num_a=num_a, num_c=2, num_s=num_s, num_experts=num_j,
              num_g=2, num_h=2)
  tables = _sweep_events._new_tables(**dims)  # pylint: disable=protected-access
  # Score 0 from all runs at once (as the sweep reads LAC/APS).
  walks = _walk_runs(sizes)
  num_r = max(len(st) for st, _ in walks)
  start = np.full((n, num_r), num_a)
  size = np.zeros((n, num_r), int)
  for i, (st, vals) in enumerate(walks):
    start[i, :len(st)] = st
    size[i, :len(st)] = vals
    size[i, len(st):] = vals[-1]
  who = jnp.take_along_axis(agent, jnp.broadcast_to(size, (num_s, n, num_r)),
                            axis=2)
  cnt = jnp.take_along_axis(rows, jnp.asarray(size)[..., None], axis=1)
  tables = _sweep_events._add_events(tables, _sweep_events._run_events(  # pylint: disable=protected-access
      jnp.asarray(start, jnp.int32), who, cnt, score_index=0, num_scores=2,
      num_alphas=num_a, num_experts=num_j, **ev))
  # Score 1 from the list of run starts, in chunks (as the sweep reads RAPS).
  jsizes = jnp.asarray(sizes, jnp.int32)
  codes, total = _sweep_events._change_codes(jsizes, chunk)  # pylint: disable=protected-access
  for first in range(0, int(total), chunk):
    events = _sweep_events._change_events(  # pylint: disable=protected-access
        codes[first:first + chunk], jsizes, agent, rows, score_index=1,
        num_scores=2, num_experts=num_j, **ev)
    tables = _sweep_events._add_events(tables, events)  # pylint: disable=protected-access
  got = _sweep_events._read_events(tables, **dims)  # pylint: disable=protected-access
  agent, weights, shared = (np.asarray(x) for x in (agent, weights, shared))
  for c in range(2):
    queries, n_q, max_q, counts, sh = (np.asarray(x)[:, c] for x in got)
    for a in range(num_a):
      s = sizes[:, a]
      np.testing.assert_array_equal(sh[a], shared[np.arange(n), s].sum(0))
      for t in range(num_s):
        who = agent[t, np.arange(n), s]
        hist = np.bincount(who[who >= 1] - 1, minlength=num_j)
        assert queries[a, t] == hist.sum()
        assert n_q[a, t] == (hist > 0).sum()
        assert max_q[a, t] == hist.max()
        np.testing.assert_array_equal(
            counts[a, t], weights[t, np.arange(n), s].sum(0))


@pytest.mark.parametrize("num_a", [1, 15, 16, 17, 202])
def test_count_at_most_equals_a_direct_count(num_a):
  from l2d_jax.conformal import _set_sizes  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(num_a)
  t = np.sort(rng.choice(np.r_[-np.inf, rng.random(9)], num_a))
  x = np.r_[rng.random(300), t, -np.inf, np.inf, np.nan]
  t, x = t.astype(np.float32), x.astype(np.float32)
  got = _set_sizes._count_at_most(jnp.asarray(t), jnp.asarray(x))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, (t[None, :] <= x[:, None]).sum(1))


def test_size_boundaries_equal_split_set_sizes():
  from l2d_jax.conformal import _set_sizes  # pylint: disable=import-outside-toplevel
  ds, _ = _pool(seed=8)
  order, sp = conformal.sort_probs(ds.probs)
  rank = np.argsort(np.asarray(order), axis=1)
  label_rank = rank[np.arange(ds.labels.size), ds.labels]
  alphas = np.sort(np.concatenate([ALPHAS, [0.001, 0.999, 0.5, 0.5]]))
  for score in ("lac", "aps"):
    want = np.asarray(conformal.split_set_sizes(
        sp[:60], label_rank[:60], sp[60:], alphas, score=score))
    conf = conformal.sorted_conformity(sp, score=score)
    low = conformal.quantile_rank(60, alphas)
    low = 61 - np.asarray(low)  # floor(61 alpha)
    t = _set_sizes._thresholds(  # pylint: disable=protected-access
        conf[np.arange(60), label_rank[:60]], jnp.asarray(low))
    b = np.asarray(_set_sizes.size_boundaries(
        conf[60:], t, include_crossing=score != "lac"))
    got = np.stack([(b[:, 1:] > a).sum(1) for a in range(alphas.size)], 1)
    np.testing.assert_array_equal(got, want)


def test_priority_draws_pack_exactly():
  # The slot picker packs float32 uniforms as multiples of 2**-23.
  prios, _ = _sweep_slots._split_randomness(jax.random.key(0), 3, (500, 64))  # pylint: disable=protected-access
  q = np.asarray(prios, np.float64) * 2.0**23
  np.testing.assert_array_equal(q, np.floor(q))
  tied = jax.random.bernoulli(jax.random.key(1), 0.3, (500, 7, 64))
  got = _sweep_slots._slot_picker(prios[0])(tied)  # pylint: disable=protected-access
  want = np.where(np.asarray(tied).any(-1), np.argmax(np.where(
      tied, np.asarray(prios[0])[:, None, :], -1.0), axis=-1), -1)
  np.testing.assert_array_equal(got, want)


def test_tickets_equal_the_uniform_draws():
  # The sweep's unrolled threefry reproduces jax.random.uniform bit for bit.
  for key, split in ((jax.random.key(0), 3), (jax.random.key(7), 2**32 - 1)):
    prios, shots = _sweep_slots._split_randomness(key, split, (37, 11))  # pylint: disable=protected-access
    tickets, shots2 = _sweep_slots._split_tickets(key, split, (37, 11))  # pylint: disable=protected-access
    assert tickets.dtype == jnp.int32
    np.testing.assert_array_equal(
        np.asarray(tickets, np.float64), np.asarray(prios, np.float64) * 2**23)
    np.testing.assert_array_equal(jax.random.key_data(shots),
                                  jax.random.key_data(shots2))
  # The unrolled fold_in equals jax.random.fold_in.
  for data in (0, 1, 12345, 2**32 - 1):
    np.testing.assert_array_equal(
        _sweep_slots._fold_in_data(  # pylint: disable=protected-access
            jax.random.key_data(jax.random.key(3)), np.uint32(data)),
        jax.random.key_data(jax.random.fold_in(jax.random.key(3), data)))
  # A legacy uint32 key takes jax.random itself.
  raw = jax.random.PRNGKey(0)
  got, _ = _sweep_slots._split_tickets(raw, 1, (5, 3))  # pylint: disable=protected-access
  want, _ = _sweep_slots._split_randomness(raw, 1, (5, 3))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, want)
