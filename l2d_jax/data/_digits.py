"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set).

``sklearn.datasets.load_digits`` ships 1,797 real images of the digits 0..9
inside the scikit-learn package (no download): 8x8 grey-level images whose
pixels count the "on" cells of a 4x4 block of the 32x32 bitmap, so each pixel
is an integer in 0..16.

References:
  Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI Machine
  Learning Repository, 1998.
"""

from __future__ import annotations

import numpy as np

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGITS_MAX_PIXEL = 16


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """Loads scikit-learn's bundled 8x8 digits as images in [0, 1].

  Returns:
    ``(images, labels)``: ``float32 [1797, 8, 8, 1]`` (pixel counts 0..16
    divided by 16, so values lie in [0, 1]) and ``int32 [1797]`` digits in
    0..9, in scikit-learn's order.

  Raises:
    ImportError: scikit-learn is not installed.
    ValueError: the bundled data is not the expected 1,797 images of 8x8
      integer pixels in 0..16 with labels 0..9 (a changed scikit-learn).

  Example:
    >>> from l2d_jax import data
    >>> images, labels = data.load_digits()
    >>> images.shape, images.dtype, labels.shape, labels.dtype
    ((1797, 8, 8, 1), dtype('float32'), (1797,), dtype('int32'))
  """
  try:
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(
        "load_digits needs scikit-learn (pip install scikit-learn; it is a "
        "dependency of l2d_jax).") from err
  bunch = datasets.load_digits()
  pixels = np.asarray(bunch.images)
  labels = np.asarray(bunch.target)
  if pixels.ndim != 3 or pixels.shape[1:] != (8, 8):
    raise ValueError(f"scikit-learn digits: images must be [N, 8, 8], got "
                     f"{pixels.shape}.")
  if labels.shape != (pixels.shape[0],):
    raise ValueError(f"scikit-learn digits: {labels.shape} labels for "
                     f"{pixels.shape[0]} images.")
  if (np.any(pixels != np.round(pixels)) or pixels.min() < 0
      or pixels.max() > DIGITS_MAX_PIXEL):
    raise ValueError("scikit-learn digits: pixels must be integers in "
                     f"0..{DIGITS_MAX_PIXEL}.")
  if labels.min() < 0 or labels.max() > 9:
    raise ValueError("scikit-learn digits: labels must lie in 0..9.")
  images = (pixels.astype(np.float32) / DIGITS_MAX_PIXEL)[..., None]
  return images, labels.astype(np.int32)
