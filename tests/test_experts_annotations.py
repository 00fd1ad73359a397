"""Annotation data model, confusion matrices, segregativity and selection."""

import warnings

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


def test_confusion_drops_out_of_range_pairs_under_jit():
  ann, labels, (image, annot, answer) = _random_annotations()
  bad = labels.copy()
  bad[0] = 4  # = K: would land in the next expert's first row.
  conf = np.asarray(jax.jit(experts.confusion_matrices)(ann, bad))
  keep = image != 0
  want = np.zeros((6, 4, 4), int)
  np.add.at(want, (annot[keep], labels[image][keep], answer[keep]), 1)
  np.testing.assert_array_equal(conf, want)
  # An answer or expert id out of range in a real slot is dropped too.
  broken = ann.replace(answer=ann.answer.at[1, 0].set(7),
                       annotator=ann.annotator.at[2, 0].set(6))
  conf = np.asarray(jax.jit(experts.confusion_matrices)(broken, labels))
  assert conf.sum() == np.asarray(ann.mask).sum() - 2
  with pytest.raises(ValueError, match="annotator"):
    experts.confusion_matrices(broken, labels)
  with pytest.raises(ValueError, match="answer"):
    experts.confusion_matrices(
        ann.replace(answer=ann.answer.at[1, 0].set(7)), labels)
  with pytest.raises(ValueError, match="labels"):
    experts.confusion_matrices(ann, bad)


def test_numpy_integer_sizes_are_accepted():
  ann = experts.Annotations.from_long(
      np.array([0, 1]), np.array([0, 1]), np.array([1, 0]),
      num_images=np.int64(2), num_experts=np.int64(2),
      num_classes=np.int64(2))
  assert type(ann.num_experts) is int and type(ann.num_classes) is int
  np.testing.assert_array_equal(
      experts.confusion_matrices(ann, np.array([1, 0])).sum(), 2)


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
  with pytest.raises(TypeError, match="n_shots"):
    experts.subsample_n_shots(rng, ann, labels, n_shots=1.5)
  # NumPy integers are ints.
  again = experts.subsample_n_shots(rng, ann, labels, n_shots=np.int64(3))
  np.testing.assert_array_equal(again.mask, sub.mask)


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


def test_warn_unusable_experts_skips_experts_removed_on_purpose():
  ann = experts.Annotations.from_long(np.array([0]), np.array([0]),
                                      np.array([0]), num_images=1,
                                      num_experts=3, num_classes=2)
  with pytest.warns(UserWarning, match="2 of 3 experts"):
    unusable = experts.warn_unusable_experts(ann)
  np.testing.assert_array_equal(unusable, [False, True, True])
  with pytest.warns(UserWarning, match="1 of 3 experts"):
    experts.warn_unusable_experts(ann, removed=np.array([False, True, False]))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    unusable = experts.warn_unusable_experts(
        ann, removed=np.array([False, True, True]))
  assert not unusable.any()
  with pytest.raises(ValueError, match="removed"):
    experts.warn_unusable_experts(ann, removed=np.array([True]))


def test_keep_bottom_fraction_then_warn_is_silent():
  # keep_bottom_fraction removes experts on purpose: no warning about them.
  ann, labels, _ = _random_annotations(n=100, j=10, per_image=5)
  kept_ann, kept = experts.keep_bottom_fraction(ann, labels, f_kept=0.3)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    experts.warn_unusable_experts(kept_ann, removed=~kept)


def test_keep_bottom_fraction_refuses_to_keep_no_expert():
  ann, labels, _ = _random_annotations(n=100, j=10, per_image=5)
  with pytest.raises(ValueError, match="f_kept.*0 of the 10 experts"):
    experts.keep_bottom_fraction(ann, labels, f_kept=0.01)
  # 0.05 * 10 = 0.5 rounds to 0 (banker's rounding): refused; 0.06 keeps one.
  with pytest.raises(ValueError, match="f_kept"):
    experts.keep_bottom_fraction(ann, labels, f_kept=0.05)
  _, kept = experts.keep_bottom_fraction(ann, labels, f_kept=0.06)
  assert kept.sum() == 1
  with pytest.raises(ValueError, match="f_kept"):
    experts.keep_bottom_fraction(ann, labels, f_kept=float("nan"))


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


def test_segregativity_refuses_negative_and_nan_counts():
  conf = np.ones((2, 3, 3))
  conf[1, 0, 2] = -2  # would give 1.5 on {0, 1, 2}
  mask = np.array([True, True, True])
  with pytest.raises(ValueError, match="confusion.*negative"):
    experts.segregativity(conf, mask)
  conf_nan = np.ones((2, 3, 3))
  conf_nan[0, 1, 1] = np.nan  # was hidden as -1
  with pytest.raises(ValueError, match="confusion.*NaN"):
    experts.segregativity(conf_nan, mask)
  # Under jit, where values cannot be checked: NaN for that expert only.
  got = np.asarray(jax.jit(experts.segregativity)(conf, mask))
  assert np.isnan(got[1]) and got[0] == pytest.approx(1 / 3)
  got = np.asarray(jax.jit(experts.segregativity)(conf_nan, mask))
  assert np.isnan(got[0]) and got[1] == pytest.approx(1 / 3)


def test_segregativity_bad_input():
  with pytest.raises(ValueError, match="confusion"):
    experts.segregativity(np.ones((3, 3)), np.ones(3, bool))
  with pytest.raises(ValueError, match="set_mask"):
    experts.segregativity(np.ones((2, 3, 3)), np.ones(4, bool))
  with pytest.raises(TypeError, match="set_mask"):
    experts.segregativity(np.ones((2, 3, 3)), np.ones(3))
