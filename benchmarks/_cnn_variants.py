"""Formulations of l2d_jax's SmallCNN for ``benchmarks/train_step.py``.

Each class keeps SmallCNN's parameters (so weights load into the PyTorch twin
unchanged) and computes the same function through a different graph:
``library`` is SmallCNN as is (its conv + ReLU + pool blocks run as
space-to-depth convolutions), ``plain`` is the library's formulation before
(``nnx.Conv`` + ``nnx.max_pool``), the others vary pooling, layout and
convolution. ``CNN_CLASSES`` maps the ``--cnn-variants`` names to them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from l2d_jax.models import SmallCNN


def _conv(x, w, dims=("NHWC", "HWIO", "NHWC")):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dims)


def _slice_pool(x, h_axis=1):
  """2x2/2 max-pool of axes (h_axis, h_axis + 1) as four strided slices."""
  def s(i, j):
    idx = [slice(None)] * x.ndim
    idx[h_axis], idx[h_axis + 1] = slice(i, None, 2), slice(j, None, 2)
    return x[tuple(idx)]
  return jnp.maximum(jnp.maximum(s(0, 0), s(0, 1)), jnp.maximum(s(1, 0), s(1, 1)))


def _params(layer):
  return layer.kernel[...], layer.bias[...]


def _dense_head(m, x):
  x = x.reshape(x.shape[0], -1)  # NHWC flatten, as SmallCNN
  x = jax.nn.relu(m.fc1(x))
  x = jax.nn.relu(m.fc2(x))
  return m.head(x)


def _im2col_conv(x, w):
  kh, kw, _, co = w.shape
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  patches = jnp.concatenate([x[:, i:i + ho, j:j + wo, :]
                             for i in range(kh) for j in range(kw)], axis=-1)
  return patches @ w.reshape(-1, co)


class PlainCNN(SmallCNN):
  """SmallCNN as the library wrote it before: nnx.Conv + ReLU + nnx.max_pool."""

  def __call__(self, x):
    """``[batch, 32, 32, 3]`` NHWC images -> ``[batch, K + J]`` logits."""
    for layer in (self.conv1, self.conv2):
      x = nnx.max_pool(jax.nn.relu(layer(x)), window_shape=(2, 2),
                       strides=(2, 2))
    return _dense_head(self, x)


class SlicePoolCNN(SmallCNN):
  """SmallCNN with a strided-slice max-pool applied before the ReLU."""

  def __call__(self, x):
    """``[batch, 32, 32, 3]`` NHWC images -> ``[batch, K + J]`` logits."""
    for layer in (self.conv1, self.conv2):
      w, b = _params(layer)
      x = jax.nn.relu(_slice_pool(_conv(x, w) + b))
    return _dense_head(self, x)


class NCHWCNN(SmallCNN):
  """SmallCNN with NCHW convolutions."""

  def __call__(self, x):
    """``[batch, 32, 32, 3]`` NHWC images -> ``[batch, K + J]`` logits."""
    x = x.transpose(0, 3, 1, 2)
    for layer in (self.conv1, self.conv2):
      w, b = _params(layer)
      x = jax.nn.relu(_slice_pool(_conv(x, w, ("NCHW", "HWIO", "NCHW"))
                                  + b[:, None, None], h_axis=2))
    return _dense_head(self, x.transpose(0, 2, 3, 1))


class CNHWCNN(SmallCNN):
  """SmallCNN with CNHW convolutions."""

  def __call__(self, x):
    """``[batch, 32, 32, 3]`` NHWC images -> ``[batch, K + J]`` logits."""
    x = x.transpose(3, 0, 1, 2)
    for layer in (self.conv1, self.conv2):
      w, b = _params(layer)
      x = jax.nn.relu(_slice_pool(_conv(x, w, ("CNHW", "HWIO", "CNHW"))
                                  + b[:, None, None, None], h_axis=2))
    return _dense_head(self, x.transpose(1, 2, 3, 0))


class Im2colCNN(SmallCNN):
  """SmallCNN with im2col convolutions (patches @ kernel matrix)."""

  def __call__(self, x):
    """``[batch, 32, 32, 3]`` NHWC images -> ``[batch, K + J]`` logits."""
    for layer in (self.conv1, self.conv2):
      w, b = _params(layer)
      x = jax.nn.relu(_slice_pool(_im2col_conv(x, w) + b))
    return _dense_head(self, x)


CNN_CLASSES = {"library": SmallCNN, "plain": PlainCNN,
               "slice_pool": SlicePoolCNN, "nchw": NCHWCNN,
               "cnhw": CNHWCNN, "im2col": Im2colCNN}
