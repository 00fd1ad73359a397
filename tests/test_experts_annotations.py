"""Annotation data model, confusion matrices, segregativity and selection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import experts


def _random_annotations(seed=0, n=30, j=6, k=4, per_image=3):
  rng = np.random.default_rng(seed)
  image = np.repeat(np.arange(n), per_image)
  annot = np.concatenate([rng.choice(j, per_image, replace=False)
                          for _ in range(n)])
  labels = rng.integers(0, k, n).astype(np.int32)
  answer = np.where(rng.random(image.size) < 0.7, labels[image],
                    rng.integers(0, k, image.size))
  ann = experts.Annotations.from_long(image, annot, answer, num_images=n,
                                      num_experts=j, num_classes=k)
  return ann, labels, (image, annot, answer)


def test_from_long_roundtrip_and_padding():
  ann = experts.Annotations.from_long(
      np.array([2, 0, 0, 2, 2]), np.array([1, 0, 1, 2, 0]),
      np.array([1, 1, 0, 2, 2]), num_images=4, num_experts=3, num_classes=3)
  assert ann.annotator.shape == (4, 3) and ann.annotator.dtype == jnp.int32
  np.testing.assert_array_equal(ann.mask.sum(1), [2, 0, 3, 0])
  np.testing.assert_array_equal(ann.annotator[2], [1, 2, 0])  # input order
  img, a, m = ann.to_long()
  assert sorted(zip(img, a, m)) == sorted(
      zip([2, 0, 0, 2, 2], [1, 0, 1, 2, 0], [1, 1, 0, 2, 2]))


@pytest.mark.parametrize("field, value, match", [
    ("image", [0, 5], "image"),
    ("annotator", [0, 3], "annotator"),
    ("answer", [0, -1], "answer"),
])
def test_from_long_rejects_out_of_range(field, value, match):
  kw = dict(image=np.array([0, 1]), annotator=np.array([0, 1]),
            answer=np.array([0, 1]))
  kw[field] = np.array(value)
  with pytest.raises(ValueError, match=match):
    experts.Annotations.from_long(**kw, num_images=2, num_experts=3,
                                  num_classes=2)


def test_from_long_rejects_mismatch_and_floats():
  with pytest.raises(ValueError, match="same length"):
    experts.Annotations.from_long(np.array([0]), np.array([0, 1]),
                                  np.array([0]), num_images=2, num_experts=2,
                                  num_classes=2)
  with pytest.raises(TypeError, match="answer"):
    experts.Annotations.from_long(np.array([0]), np.array([0]),
                                  np.array([0.0]), num_images=1, num_experts=1,
                                  num_classes=2)


def test_confusion_and_leave_one_out_match_numpy():
  ann, labels, (image, annot, answer) = _random_annotations()
  conf = np.asarray(jax.jit(experts.confusion_matrices)(ann, labels))
  want = np.zeros((6, 4, 4), int)
  np.add.at(want, (annot, labels[image], answer), 1)
  np.testing.assert_array_equal(conf, want)
  loo = np.asarray(experts.leave_one_out_confusions(conf, ann, labels))
  a = np.asarray(ann.annotator)
  m = np.asarray(ann.answer)
  mask = np.asarray(ann.mask)
  for i in range(ann.num_images):
    for s in range(ann.max_annotations):
      if not mask[i, s]:
        assert not loo[i, s].any()
        continue
      w = want[a[i, s]].copy()
      w[labels[i], m[i, s]] -= 1
      np.testing.assert_array_equal(loo[i, s], w)
  acc, count = experts.expert_accuracy(conf)
  np.testing.assert_allclose(acc, np.trace(want, axis1=1, axis2=2)
                             / want.sum((1, 2)), rtol=1e-6)
  np.testing.assert_array_equal(count, want.sum((1, 2)))


def test_labels_shape_is_checked():
  ann, labels, _ = _random_annotations()
  with pytest.raises(ValueError, match="labels"):
    experts.confusion_matrices(ann, labels[:-1])
  with pytest.raises(ValueError, match="labels"):
    experts.confusion_matrices(ann, labels + 10)


def test_subsample_n_shots_keeps_at_most_n_per_expert_label(rng):
  ann, labels, _ = _random_annotations(n=200, per_image=4)
  sub = experts.subsample_n_shots(rng, ann, labels, n_shots=3)
  full = np.asarray(experts.confusion_matrices(ann, labels)).sum(-1)
  kept = np.asarray(experts.confusion_matrices(sub, labels)).sum(-1)
  np.testing.assert_array_equal(kept, np.minimum(full, 3))
  assert not np.any(np.asarray(sub.mask) & ~np.asarray(ann.mask))
  other = experts.subsample_n_shots(jax.random.key(1), ann, labels, n_shots=3)
  assert not np.array_equal(sub.mask, other.mask)
  with pytest.raises(ValueError, match="n_shots"):
    experts.subsample_n_shots(rng, ann, labels, n_shots=0)


def test_keep_bottom_fraction():
  ann, labels, _ = _random_annotations(n=100, j=10, per_image=5)
  conf = experts.confusion_matrices(ann, labels)
  acc, _ = experts.expert_accuracy(conf)
  kept_ann, kept = experts.keep_bottom_fraction(ann, labels, f_kept=0.3)
  assert kept.sum() == 3
  assert np.asarray(acc)[kept].max() <= np.asarray(acc)[~kept].min()
  ids = np.asarray(kept_ann.annotator)[np.asarray(kept_ann.mask)]
  assert set(ids) <= set(np.flatnonzero(kept))
  with pytest.raises(ValueError, match="f_kept"):
    experts.keep_bottom_fraction(ann, labels, f_kept=0.0)


def test_drop_unusable_experts_warns():
  ann = experts.Annotations.from_long(np.array([0]), np.array([0]),
                                      np.array([0]), num_images=1,
                                      num_experts=3, num_classes=2)
  with pytest.warns(UserWarning, match="2 of 3 experts"):
    experts.drop_unusable_experts(ann)


def _seg_reference(conf, mask):
  m = mask if mask.any() else np.ones_like(mask)
  sub = conf[np.ix_(m, m)]
  return np.trace(sub) / sub.sum() if sub.sum() else -1.0


def test_segregativity_matches_numpy():
  rng = np.random.default_rng(0)
  conf = rng.integers(0, 5, (7, 5, 5))
  conf[3] = 0  # an expert without data
  masks = rng.random((4, 6, 5)) < 0.5
  masks[0, 0] = False  # empty set -> whole matrix
  got = np.asarray(jax.jit(experts.segregativity)(conf, masks))
  chex.assert_shape(got, (4, 6, 7))
  for idx in np.ndindex(4, 6):
    for j in range(7):
      np.testing.assert_allclose(got[idx + (j,)],
                                 _seg_reference(conf[j], masks[idx]),
                                 rtol=1e-6)
  one = experts.segregativity(conf, masks[1, 2])
  chex.assert_shape(one, (7,))


def test_segregativity_paper_figure_example():
  # An expert poor overall but perfect on {cat, dog} wins on that set.
  generalist = np.diag([9, 9, 9]) + np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
  specialist = np.array([[5, 0, 5], [0, 5, 5], [0, 0, 0]])
  conf = np.stack([generalist, specialist])
  seg = experts.segregativity(conf, np.array([True, True, False]))
  np.testing.assert_allclose(seg, [0.9, 1.0])
  acc, _ = experts.expert_accuracy(conf)
  assert acc[0] > acc[1]


def test_segregativity_bad_input():
  with pytest.raises(ValueError, match="confusion"):
    experts.segregativity(np.ones((3, 3)), np.ones(3, bool))
  with pytest.raises(ValueError, match="set_mask"):
    experts.segregativity(np.ones((2, 3, 3)), np.ones(4, bool))
  with pytest.raises(TypeError, match="set_mask"):
    experts.segregativity(np.ones((2, 3, 3)), np.ones(3))


def test_select_expert_tie_breaks(rng):
  scores = jnp.array([[0.5, 0.9, 0.9, 0.1]] * 2000)
  valid = jnp.array([[True, True, True, True]] * 2000)
  pick = np.asarray(experts.select_expert(scores, valid, key=rng))
  assert set(np.unique(pick)) == {1, 2}
  assert 0.45 < (pick == 1).mean() < 0.55
  costs = jnp.array([0.0, 2.0, 1.0, 0.0])
  pick = experts.select_expert(scores[:1], valid[:1], tie_break="cost",
                               costs=costs)
  assert int(pick[0]) == 2
  # Invalid candidates are never picked, even with the top score.
  pick = experts.select_expert(scores[:1], valid[:1].at[0, 1:3].set(False),
                               key=rng)
  assert int(pick[0]) == 0
  # Explicit priorities replace the key.
  pick = experts.select_expert(scores[:1], valid[:1],
                               priority=jnp.array([0.0, 0.1, 0.9, 1.0]))
  assert int(pick[0]) == 2
  with pytest.raises(ValueError, match="tie_break"):
    experts.select_expert(scores, valid, tie_break="first")
  with pytest.raises(ValueError, match="key"):
    experts.select_expert(scores, valid)
  with pytest.raises(ValueError, match="costs"):
    experts.select_expert(scores, valid, tie_break="cost")
