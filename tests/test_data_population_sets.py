"""Loaders of the L2D-Pop data sets (issue 8): digits, Fashion-MNIST, GTSRB."""

import numpy as np

from l2d_jax import data


def test_load_digits_shapes_range_and_class_counts():
  images, labels = data.load_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
  assert labels.shape == (1797,) and labels.dtype == np.int32
  assert images.min() == 0.0 and images.max() == 1.0
  # Pixels are counts 0..16 divided by 16: exact multiples of 1/16.
  np.testing.assert_array_equal(images * 16, np.round(images * 16))
  np.testing.assert_array_equal(
      np.bincount(labels, minlength=10),
      [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_load_digits_matches_sklearn():
  from sklearn import datasets
  bunch = datasets.load_digits()
  images, labels = data.load_digits()
  np.testing.assert_array_equal(images[..., 0] * 16, bunch.images)
  np.testing.assert_array_equal(labels, bunch.target)
