"""Keyed JAX augmentation (FixMatch weak / strong views): shapes, dtypes, keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l2d_jax import data
from l2d_jax.data import _augment


def _images(dtype, b=4, h=8, w=8, c=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (b, h, w, c))
  if dtype == np.uint8:
    return jnp.asarray(x, jnp.uint8)
  return jnp.asarray(x / 255.0, dtype)


@pytest.mark.parametrize("dtype, channels",
                         [(np.uint8, 3), (np.float32, 1), (jnp.bfloat16, 3)])
def test_weak_and_strong_keep_shape_dtype_and_are_keyed(dtype, channels):
  x = _images(dtype, c=channels)
  for fn in (data.weak_augment, data.strong_augment):
    a = fn(jax.random.key(0), x)
    b = fn(jax.random.key(0), x)
    c = fn(jax.random.key(1), x)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(a, np.float32),
                                  np.asarray(b, np.float32))
    assert not np.array_equal(np.asarray(a, np.float32),
                              np.asarray(c, np.float32))
    if dtype != np.uint8:
      v = np.asarray(a, np.float32)
      assert v.min() >= 0.0 and v.max() <= 1.0


def test_weak_is_a_padded_crop_possibly_flipped():
  x = _images(np.uint8, b=16, h=5, w=5, c=1)
  out = np.asarray(jax.jit(lambda k, x: data.weak_augment(k, x, pad=1))(
      jax.random.key(3), x))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  flips = 0
  for i in range(16):
    candidates = []
    for dy in range(3):
      for dx in range(3):
        crop = padded[i, dy:dy + 5, dx:dx + 5]
        candidates += [(crop, False), (crop[:, ::-1], True)]
    matches = [f for crop, f in candidates if np.array_equal(crop, out[i])]
    assert matches, f"image {i} is not a crop of its padded image"
    flips += all(matches)
  assert 0 < flips < 16  # both flipped and unflipped images occur
  # pad=0 and no flip is the identity.
  same = data.weak_augment(jax.random.key(0), x, pad=0, flip=False)
  np.testing.assert_array_equal(same, x)


def test_strong_identity_settings_and_each_op_keep_range():
  x = _images(np.uint8)
  same = data.strong_augment(jax.random.key(0), x, num_ops=0, cutout=0.0)
  np.testing.assert_array_equal(same, x)
  xf = _images(np.float32)
  same = data.strong_augment(jax.random.key(0), xf, ops=("identity",),
                             cutout=0.0)
  np.testing.assert_allclose(same, xf, atol=1e-6)
  for op in data.RANDAUGMENT_OPS:
    out = data.strong_augment(jax.random.key(2), x, ops=(op,), num_ops=1,
                              cutout=0.0)
    assert out.shape == x.shape and out.dtype == jnp.uint8, op


def test_strong_value_range_for_normalised_floats():
  x = _images(np.float32) * 2.0 - 1.0  # pixels in [-1, 1]
  out = np.asarray(data.strong_augment(jax.random.key(0), x,
                                       value_range=(-1.0, 1.0)))
  assert out.min() >= -1.0 and out.max() <= 1.0
  # The identity op round-trips the range exactly (up to float error).
  same = data.strong_augment(jax.random.key(0), x, ops="identity",
                             cutout=0.0, value_range=(-1.0, 1.0))
  np.testing.assert_allclose(same, x, atol=1e-6)


def test_pixel_ops_by_hand():
  img = jnp.array([[[0.0], [100.0]], [[200.0], [255.0]]])
  np.testing.assert_array_equal(_augment._solarize(img, 0.0), img)
  np.testing.assert_array_equal(  # threshold 128: invert 200 and 255
      _augment._solarize(img, 0.5)[..., 0], [[0.0, 100.0], [55.0, 0.0]])
  np.testing.assert_array_equal(  # 4 bits: multiples of 16
      _augment._posterize(img, 0.0)[..., 0], [[0.0, 96.0], [192.0, 240.0]])
  np.testing.assert_array_equal(_augment._posterize(img, 1.0), img)
  np.testing.assert_allclose(_augment._brightness(img, 0.5), img)
  np.testing.assert_allclose(  # [10, 137.5] stretched back to [0, 255]
      _augment._autocontrast(img * 0.5 + 10.0, 0.0), img, atol=1e-4)
  # Translation by +30% of 10 pixels = 3 columns, grey fill.
  row = jnp.arange(10.0).reshape(1, 10, 1)
  moved = _augment._translate_x(row, 1.0)[0, :, 0]
  np.testing.assert_array_equal(moved, list(range(3, 10)) + [128.0] * 3)
  np.testing.assert_array_equal(_augment._rotate(row, 0.5), row)


def test_equalize_matches_numpy_reference():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 60, (6, 6, 2)).astype(np.float32)
  got = np.asarray(_augment._equalize(jnp.asarray(img), 0.0))
  for ch in range(2):
    v = img[..., ch].astype(int)
    hist = np.bincount(v.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[hist > 0].min()
    lut = np.round((cdf - cdf_min) * 255.0 / (v.size - cdf_min))
    np.testing.assert_array_equal(got[..., ch], lut[v])
  flat = np.full((3, 3, 1), 7.0, np.float32)  # one level: unchanged
  np.testing.assert_array_equal(_augment._equalize(jnp.asarray(flat), 0.0),
                                flat)


def test_cutout_is_a_grey_square():
  x = jnp.full((32, 12, 12, 1), 255, jnp.uint8)
  out = np.asarray(data.strong_augment(jax.random.key(0), x, ops="identity",
                                       cutout=1.0))[..., 0]
  grey = out == 128
  assert ((out == 255) | grey).all()
  assert grey.any(axis=(1, 2)).mean() > 0.5
  for g in grey:
    if g.any():
      rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
      assert g[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_augment_jit_and_vmap_over_keys():
  x = _images(np.float32, b=2)
  keys = jax.random.split(jax.random.key(0), 3)
  many = jax.jit(jax.vmap(lambda k: data.strong_augment(k, x)))(keys)
  assert many.shape == (3,) + x.shape
  np.testing.assert_allclose(many[1], data.strong_augment(keys[1], x),
                             atol=1e-6)


def test_augment_bad_input():
  key = jax.random.key(0)
  x = _images(np.uint8)
  with pytest.raises(ValueError, match="images"):
    data.weak_augment(key, x[0])
  with pytest.raises(TypeError, match="images"):
    data.strong_augment(key, x.astype(jnp.int32))
  with pytest.raises(ValueError, match="pad"):
    data.weak_augment(key, x, pad=-1)
  with pytest.raises(ValueError, match="mode"):
    data.weak_augment(key, x, mode="wrap")
  with pytest.raises(ValueError, match="ops"):
    data.strong_augment(key, x, ops=("sharpen",))
  with pytest.raises(ValueError, match="cutout"):
    data.strong_augment(key, x, cutout=1.5)
  with pytest.raises(ValueError, match="value_range"):
    data.strong_augment(key, x.astype(jnp.float32), value_range=(1.0, 0.0))
  with pytest.raises(TypeError, match="key"):
    data.strong_augment(0, x)
