"""The small LeNet-style CNN used in L2D experiments on 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from l2d_jax.models._checks import check_images
from l2d_jax.models._checks import check_num_heads


def _pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


class SmallCNN(nnx.Module):
  """LeNet-5-style CNN with class logits and deferral logits.

  Architecture (NHWC, VALID convolutions, ReLU):
  ``conv 5x5 -> 6, maxpool 2 -> conv 5x5 -> 16, maxpool 2 -> flatten ->
  fc 120 -> fc 84 -> fc (num_classes + num_experts)``. This is the small
  network of the PyTorch CIFAR-10 tutorial that L2D papers use as their
  cheap CIFAR-10 classifier (e.g. the CNN baselines accompanying Mozannar &
  Sontag 2020 and Verma et al. 2023). On 32x32x3 inputs with 10 classes and
  no experts it has 62,006 parameters; each expert adds 85 (84 weights and a
  bias).

  Args:
    num_classes: number of classes K.
    num_experts: number of deferral outputs J (0: plain classifier).
    in_channels: input channels (3 for RGB, 1 for grey-scale).
    image_size: input height and width (int or pair); 32 for CIFAR, 28 for
      MNIST. Fixes the size of the first fully connected layer.
    rngs: random streams for initialisation.

  Raises:
    ValueError: bad sizes, or images too small for two conv/pool blocks.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = SmallCNN(10, num_experts=2, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((4, 32, 32, 3))).shape
    (4, 12)
  """

  def __init__(
      self,
      num_classes: int,
      *,
      num_experts: int = 0,
      in_channels: int = 3,
      image_size: int | Sequence[int] = 32,
      rngs: nnx.Rngs,
  ):
    check_num_heads(num_classes, num_experts)
    if in_channels < 1:
      raise ValueError(f"`in_channels` must be >= 1, got {in_channels}.")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(
        image_size)
    fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if fh < 1 or fw < 1:
      raise ValueError(
          f"`image_size` {(h, w)} is too small for SmallCNN (needs >= 16).")
    self.num_classes = num_classes
    self.num_experts = num_experts
    self.in_channels = in_channels
    self.image_size = (h, w)
    self.conv1 = nnx.Conv(in_channels, 6, (5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
    self.fc1 = nnx.Linear(16 * fh * fw, 120, rngs=rngs)
    self.fc2 = nnx.Linear(120, 84, rngs=rngs)
    self.head = nnx.Linear(84, num_classes + num_experts, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Computes logits.

    Args:
      x: images, ``[batch, height, width, in_channels]`` (NHWC).

    Returns:
      ``[batch, num_classes + num_experts]`` logits: classes, then deferral.

    Raises:
      ValueError: ``x`` is not NHWC with the configured channels and size.
    """
    check_images(x, self.in_channels, "SmallCNN", image_size=self.image_size)
    x = _pool(nnx.relu(self.conv1(x)))
    x = _pool(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    x = nnx.relu(self.fc2(x))
    return self.head(x)
