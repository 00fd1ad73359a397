"""Context sets, synthetic population experts and pseudo expert labels."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import experts


def _binomial_ok(count, n, p, sigmas=5.0):
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


# --- oracle sets --------------------------------------------------------------


def test_oracle_sets_cyclic_k10_h8_by_hand():
  sets = experts.population_oracle_sets(10, 10, size_h=8, order="cyclic")
  expected = {
      0: [0, 1, 2, 3, 4, 5, 6, 7],
      1: [1, 2, 3, 4, 5, 6, 7, 8],
      2: [2, 3, 4, 5, 6, 7, 8, 9],
      3: [0, 3, 4, 5, 6, 7, 8, 9],
      4: [0, 1, 4, 5, 6, 7, 8, 9],
      5: [0, 1, 2, 5, 6, 7, 8, 9],
      6: [0, 1, 2, 3, 6, 7, 8, 9],
      7: [0, 1, 2, 3, 4, 7, 8, 9],
      8: [0, 1, 2, 3, 4, 5, 8, 9],
      9: [0, 1, 2, 3, 4, 5, 6, 9],
  }
  assert sets.dtype == bool and sets.shape == (10, 10)
  for e, classes in expected.items():
    assert np.flatnonzero(sets[e]).tolist() == classes
  # Every class is known by exactly H experts: no class is shared by all.
  np.testing.assert_array_equal(sets.sum(0), 8)


def test_oracle_sets_lexicographic_k10_h8_by_hand():
  sets = experts.population_oracle_sets(10, 10, size_h=8,
                                        order="lexicographic")
  expected = [
      [0, 1, 2, 3, 4, 5, 6, 7],
      [0, 1, 2, 3, 4, 5, 6, 8],
      [0, 1, 2, 3, 4, 5, 6, 9],
      [0, 1, 2, 3, 4, 5, 7, 8],
      [0, 1, 2, 3, 4, 5, 7, 9],
      [0, 1, 2, 3, 4, 5, 8, 9],
      [0, 1, 2, 3, 4, 6, 7, 8],
      [0, 1, 2, 3, 4, 6, 7, 9],
      [0, 1, 2, 3, 4, 6, 8, 9],
      [0, 1, 2, 3, 4, 7, 8, 9],
  ]
  assert [np.flatnonzero(r).tolist() for r in sets] == expected
  assert sets[:, :4].all()  # every expert shares classes 0-3


@pytest.mark.parametrize("size_h", [0, 11, -1])
def test_oracle_sets_bad_h(size_h):
  with pytest.raises(ValueError, match="size_h"):
    experts.population_oracle_sets(10, 10, size_h=size_h)


def test_oracle_sets_bad_options():
  with pytest.raises(ValueError, match="order"):
    experts.population_oracle_sets(2, 3, size_h=1, order="random")
  with pytest.raises(ValueError, match="num_experts"):
    experts.population_oracle_sets(4, 3, size_h=2, order="lexicographic")
  with pytest.raises(TypeError, match="size_h"):
    experts.population_oracle_sets(2, 3, size_h=1.0)


# --- population answers -------------------------------------------------------


def _pool(n=2000, k=10, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, k, n), jnp.int32), jnp.arange(n)


@pytest.mark.parametrize("wrong", ["other", "all"])
def test_answers_follow_oracle_sets_and_wrong_rule(wrong):
  k, h = 10, 8
  labels, ids = _pool(k=k)
  sets = experts.population_oracle_sets(10, k, size_h=h)
  answers = np.asarray(experts.population_answers(
      jax.random.key(1), labels, ids, jnp.array(3), sets, wrong=wrong))
  labels = np.asarray(labels)
  known = sets[3][labels]
  np.testing.assert_array_equal(answers[known], labels[known])
  off = answers[~known]
  assert ((off >= 0) & (off < k)).all()
  hits = int((off == labels[~known]).sum())
  if wrong == "other":
    assert hits == 0
  else:
    assert _binomial_ok(hits, off.size, 1 / k)
  # Wrong answers are uniform over the classes they may take.
  counts = np.array([np.sum((off == c) & (off != labels[~known]))
                     for c in range(k)])
  for c in range(k):
    p = 1 / (k - 1) if wrong == "other" else 1 / k
    # class c can be a wrong answer only for points whose label is not c
    eligible = int(np.sum(labels[~known] != c))
    assert _binomial_ok(counts[c], eligible, p)


def test_answers_stable_when_asked_twice():
  labels, ids = _pool(n=50)
  sets = experts.population_oracle_sets(10, 10, size_h=2)
  key = jax.random.key(7)
  all_experts = jnp.broadcast_to(jnp.arange(10), (50, 10))
  full = experts.population_answers(key, labels, ids, all_experts, sets)
  again = experts.population_answers(key, labels, ids, all_experts, sets)
  np.testing.assert_array_equal(full, again)
  # One expert at a time, and a shuffled subset of images, give the same.
  for e in range(10):
    np.testing.assert_array_equal(
        experts.population_answers(key, labels, ids, jnp.array(e), sets),
        full[:, e])
  perm = np.random.default_rng(0).permutation(50)[:20]
  per_image = experts.population_answers(
      key, labels[perm], ids[perm], jnp.asarray(perm % 10), sets)
  np.testing.assert_array_equal(per_image, np.asarray(full)[perm, perm % 10])
  # Different experts answer differently somewhere (distinct keys).
  assert not np.array_equal(full[:, 0], full[:, 5])


def test_answers_jit_and_out_of_range_under_jit():
  labels = jnp.array([0, 1, 5, 2])
  ids = jnp.arange(4)
  sets = experts.population_oracle_sets(3, 3, size_h=3)
  fn = jax.jit(lambda l, e: experts.population_answers(
      jax.random.key(0), l, ids, e, sets))
  out = fn(labels, jnp.array([0, 2, 0, 3]))
  np.testing.assert_array_equal(out, [0, 1, -1, -1])
  assert out.dtype == jnp.int32


def test_answers_bad_input():
  labels, ids = jnp.array([0, 1]), jnp.arange(2)
  sets = experts.population_oracle_sets(2, 3, size_h=1)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="labels"):
    experts.population_answers(key, jnp.array([0, 3]), ids, 0, sets)
  with pytest.raises(ValueError, match="expert_ids"):
    experts.population_answers(key, labels, ids, jnp.array([0, 2]), sets)
  with pytest.raises(ValueError, match="expert_ids"):
    experts.population_answers(key, labels, ids, jnp.zeros(3, int), sets)
  with pytest.raises(ValueError, match="image_ids"):
    experts.population_answers(key, labels, jnp.array([0, -1]), 0, sets)
  with pytest.raises(TypeError, match="oracle_sets"):
    experts.population_answers(key, labels, ids, 0, sets.astype(int))
  with pytest.raises(ValueError, match="wrong"):
    experts.population_answers(key, labels, ids, 0, sets, wrong="none")
  with pytest.raises(TypeError, match="key"):
    experts.population_answers(0, labels, ids, 0, sets)
  with pytest.raises(ValueError, match="oracle_sets"):
    experts.population_answers(key, labels * 0, ids, 0,
                               np.zeros((2, 1), bool))
  one_class = experts.population_answers(key, labels * 0, ids, 0,
                                         np.ones((2, 1), bool))
  np.testing.assert_array_equal(one_class, [0, 0])


# --- pseudo expert labels -----------------------------------------------------


@pytest.mark.parametrize("wrong", ["other", "all"])
def test_pseudo_labels_distribution(wrong):
  k, n = 5, 20000
  labels = jnp.asarray(np.random.default_rng(0).integers(0, k, n), jnp.int32)
  correct = jnp.arange(n) % 2 == 0
  out = np.asarray(experts.pseudo_expert_labels(
      jax.random.key(3), labels, correct, num_classes=k, wrong=wrong))
  labels = np.asarray(labels)
  np.testing.assert_array_equal(out[::2], labels[::2])
  off, y = out[1::2], labels[1::2]
  assert ((off >= 0) & (off < k)).all()
  hits = int((off == y).sum())
  if wrong == "other":
    assert hits == 0  # the paper: never the true label
    p_class = 1 / (k - 1)
  else:
    assert _binomial_ok(hits, off.size, 1 / k)  # the official code
    p_class = 1 / k
  for c in range(k):
    eligible = y != c
    assert _binomial_ok(int((off[eligible] == c).sum()), int(eligible.sum()),
                        p_class)


def test_pseudo_labels_probabilities_threshold_and_jit():
  labels = jnp.array([0, 1, 2, 3])
  p = jnp.array([0.9, 0.51, 0.5, 0.1])
  fn = jax.jit(lambda l, q: experts.pseudo_expert_labels(
      jax.random.key(0), l, q, num_classes=4))
  out = np.asarray(fn(labels, p))
  np.testing.assert_array_equal(out[:2], [0, 1])
  assert out[2] != 2 and out[3] != 3
  # vmap over experts: one key per expert.
  keys = jax.random.split(jax.random.key(0), 3)
  many = jax.vmap(lambda k: experts.pseudo_expert_labels(
      k, labels, p, num_classes=4))(keys)
  assert many.shape == (3, 4)
  # Out-of-range labels under jit are -1, never another class.
  np.testing.assert_array_equal(fn(jnp.array([4, -1, 0, 0]), p)[:2], [-1, -1])


def test_pseudo_labels_bad_input():
  key = jax.random.key(0)
  labels = jnp.array([0, 1])
  with pytest.raises(ValueError, match="labels"):
    experts.pseudo_expert_labels(key, jnp.array([0, 2]), jnp.array([1., 0.]),
                                 num_classes=2)
  with pytest.raises(ValueError, match="correct"):
    experts.pseudo_expert_labels(key, labels, jnp.array([1.5, 0.]),
                                 num_classes=2)
  with pytest.raises(ValueError, match="correct"):
    experts.pseudo_expert_labels(key, labels, jnp.array([True]),
                                 num_classes=2)
  with pytest.raises(TypeError, match="correct"):
    experts.pseudo_expert_labels(key, labels, jnp.array([1, 0]),
                                 num_classes=2)
  with pytest.raises(ValueError, match="num_classes"):
    experts.pseudo_expert_labels(key, jnp.array([0]), jnp.array([True]),
                                 num_classes=1)
  with pytest.raises(ValueError, match="wrong"):
    experts.pseudo_expert_labels(key, labels, jnp.array([True, False]),
                                 num_classes=2, wrong="paper")


# --- context sampling ---------------------------------------------------------


def _ctx_pool(n=40, k=4, d=3):
  rng = np.random.default_rng(0)
  labels = jnp.asarray(np.repeat(np.arange(k), n // k), jnp.int32)
  answers = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  features = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  return features, labels, answers


@pytest.mark.parametrize("balanced", [False, True])
def test_sample_context_distinct_points_and_mask(balanced):
  features, labels, answers = _ctx_pool()
  ctx = experts.sample_context(jax.random.key(0), features, labels, answers,
                               size=6, capacity=10, num_classes=4,
                               balanced=balanced)
  assert ctx.features.shape == (10, 3) and ctx.mask.shape == (10,)
  np.testing.assert_array_equal(ctx.mask, np.arange(10) < 6)
  # Every slot is a pool point with its own label and answer, all distinct.
  rows = [int(np.flatnonzero((np.asarray(features) == r).all(1))[0])
          for r in np.asarray(ctx.features)]
  assert len(set(rows)) == 10
  np.testing.assert_array_equal(ctx.labels, np.asarray(labels)[rows])
  np.testing.assert_array_equal(ctx.answers, np.asarray(answers)[rows])
  if balanced:
    counts = np.bincount(np.asarray(ctx.labels)[:6], minlength=4)
    assert sorted(counts.tolist()) == [1, 1, 2, 2]


def test_sample_context_balanced_and_uniform_frequencies():
  features, labels, answers = _ctx_pool(n=40, k=4)
  keys = jax.random.split(jax.random.key(1), 400)
  ctxs = jax.vmap(lambda k: experts.sample_context(
      k, features, labels, answers, size=4, capacity=8, num_classes=4,
      balanced=True))(keys)
  counts = jax.vmap(lambda l: jnp.bincount(l[:4], length=4))(ctxs.labels)
  np.testing.assert_array_equal(counts, 1)  # one point per class, always
  # Which point of a class is taken is uniform (10 per class).
  first = np.asarray(ctxs.features[:, :4, 0]).ravel()
  _, freq = np.unique(first, return_counts=True)
  assert freq.size == 40 and all(_binomial_ok(f, 1600, 1 / 40) for f in freq)


def test_sample_context_traced_size_compiles_once():
  features, labels, answers = _ctx_pool()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(key, size):
    return experts.sample_context(key, features, labels, answers, size=size,
                                  capacity=12, num_classes=4, balanced=True)

  for n in (0, 3, 12):
    ctx = sample(jax.random.key(n), jnp.int32(n))
    assert int(ctx.mask.sum()) == n
    assert ctx.mask[:n].all()


def test_sample_context_where_and_invalid_points_under_jit():
  features, labels, answers = _ctx_pool()
  where = jnp.arange(40) % 4 == 0  # only class-0 points... and some others
  ctx = experts.sample_context(jax.random.key(0), features, labels, answers,
                               size=10, capacity=12, num_classes=4,
                               where=where)
  assert int(ctx.mask.sum()) == 10
  kept = set(np.flatnonzero(np.asarray(where)).tolist())
  rows = [int(np.flatnonzero((np.asarray(features) == r).all(1))[0])
          for r in np.asarray(ctx.features)[:10]]
  assert set(rows) <= kept
  # Under jit, out-of-range answers are never sampled.
  bad = answers.at[:20].set(9)
  ctx = jax.jit(lambda a: experts.sample_context(
      jax.random.key(0), features, labels, a, size=20, capacity=25,
      num_classes=4))(bad)
  assert int(ctx.mask.sum()) == 20
  assert (np.asarray(ctx.answers)[np.asarray(ctx.mask)] < 4).all()


def test_context_broadcast():
  features, labels, answers = _ctx_pool()
  ctx = experts.sample_context(jax.random.key(0), features, labels, answers,
                               size=3, capacity=5, num_classes=4)
  batch = ctx.broadcast(7)
  assert isinstance(batch, experts.Context)
  assert batch.features.shape == (7, 5, 3) and batch.mask.shape == (7, 5)


def test_sample_context_bad_input():
  features, labels, answers = _ctx_pool()
  key = jax.random.key(0)
  kw = dict(capacity=5, num_classes=4)
  with pytest.raises(ValueError, match="size"):
    experts.sample_context(key, features, labels, answers, size=6, **kw)
  with pytest.raises(ValueError, match="size"):
    experts.sample_context(key, features, labels, answers, size=-1, **kw)
  with pytest.raises(ValueError, match="size.*available"):
    experts.sample_context(key, features, labels, answers, size=5,
                           where=jnp.arange(40) < 3, **kw)
  with pytest.raises(ValueError, match="capacity"):
    experts.sample_context(key, features, labels, answers, size=1,
                           capacity=41, num_classes=4)
  with pytest.raises(ValueError, match="labels"):
    experts.sample_context(key, features, labels.at[0].set(4), answers,
                           size=1, **kw)
  with pytest.raises(ValueError, match="answers"):
    experts.sample_context(key, features, labels, answers.at[0].set(-1),
                           size=1, **kw)
  with pytest.raises(ValueError, match="answers"):
    experts.sample_context(key, features, labels, answers[:3], size=1, **kw)
  with pytest.raises(TypeError, match="size"):
    experts.sample_context(key, features, labels, answers, size=1.0, **kw)


def test_combinations_order_matches_itertools():
  sets = experts.population_oracle_sets(7, 6, size_h=3, order="lexicographic")
  combos = list(itertools.combinations(range(6), 3))[:7]
  assert [tuple(np.flatnonzero(r)) for r in sets] == combos
