"""The small LeNet-style CNN used in L2D experiments on 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from l2d_jax.models._checks import check_images
from l2d_jax.models._checks import check_num_heads


def _pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


def _s2d_selector(k: int) -> np.ndarray:
  """``S[a, i, d, o] = 1`` iff kernel tap ``a == 2 i + d - o`` (k odd)."""
  kb = (k + 2) // 2
  sel = np.zeros((k, kb, 2, 2), np.float32)
  for i in range(kb):
    for d in range(2):
      for o in range(2):
        if 0 <= 2 * i + d - o < k:
          sel[2 * i + d - o, i, d, o] = 1.0
  return sel


def _s2d_applies(h: int, w: int, k: int) -> bool:
  return not (h % 2 or w % 2 or (h - k + 1) % 2 or (w - k + 1) % 2)


def conv_relu_pool_s2d(x: jax.Array, kernel: jax.Array,
                       bias: jax.Array) -> jax.Array:
  """``maxpool2x2(relu(conv_valid(x, kernel) + bias))`` via space-to-depth.

  Splitting ``x`` into 2x2 pixel blocks (``[B, H/2, W/2, 4C]``) turns a k x k
  VALID convolution (k odd) into a ``(k+1)/2`` square one whose ``4 C_out``
  outputs are the convolution at the four positions of each pooling window;
  the max-pool becomes a max over four channel groups. The big kernel is a
  fixed linear map of ``kernel``, so parameters and gradients are those of
  the plain layer. On XLA's CPU backend this is 2-4x faster than a 5x5
  convolution with 3-6 input channels followed by ``reduce_window``
  (``benchmarks/train_step.py``).

  Args:
    x: ``[B, H, W, C]`` with even ``H``, ``W`` and ``H - k + 1``.
    kernel: ``[k, k, C, C_out]`` (HWIO).
    bias: ``[C_out]``.

  Returns:
    ``[B, (H - k + 1) / 2, (W - k + 1) / 2, C_out]``.
  """
  k, _, ci, co = kernel.shape
  bsz, h, w, _ = x.shape
  if not _s2d_applies(h, w, k):
    raise ValueError(f"space-to-depth needs even sizes, got {x.shape}, k={k}.")
  xb = x.reshape(bsz, h // 2, 2, w // 2, 2, ci).transpose(0, 1, 3, 2, 4, 5)
  xb = xb.reshape(bsz, h // 2, w // 2, 4 * ci)
  sel = jnp.asarray(_s2d_selector(k), kernel.dtype)
  kb = sel.shape[1]
  # [i, j, dy, dx, c, oy, ox, o]: tap (2i+dy-oy, 2j+dx-ox) of kernel, or 0.
  wb = jnp.einsum("aipk,bjql,abcd->ijpqckld", sel, sel, kernel).reshape(
      kb, kb, 4 * ci, 4 * co)
  y = jax.lax.conv_general_dilated(xb, wb, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = jnp.maximum(jnp.maximum(y[..., :co], y[..., co:2 * co]),
                  jnp.maximum(y[..., 2 * co:3 * co], y[..., 3 * co:]))
  return jax.nn.relu(y + bias)


def _block(conv: nnx.Conv, x: jax.Array) -> jax.Array:
  """conv -> ReLU -> 2x2 max-pool, space-to-depth when the sizes allow."""
  k = conv.kernel.shape[0]
  if _s2d_applies(x.shape[1], x.shape[2], k):
    return conv_relu_pool_s2d(x, conv.kernel[...], conv.bias[...])
  return _pool(nnx.relu(conv(x)))


class SmallCNN(nnx.Module):
  """LeNet-5-style CNN with class logits and deferral logits.

  Architecture (NHWC, VALID convolutions, ReLU):
  ``conv 5x5 -> 6, maxpool 2 -> conv 5x5 -> 16, maxpool 2 -> flatten ->
  fc 120 -> fc 84 -> fc (num_classes + num_experts)``. This is the small
  network of the PyTorch CIFAR-10 tutorial that L2D papers use as their
  cheap CIFAR-10 classifier (e.g. the CNN baselines accompanying Mozannar &
  Sontag 2020 and Verma et al. 2023). On 32x32x3 inputs with 10 classes and
  no experts it has 62,006 parameters; each expert adds 85 (84 weights and a
  bias). When the sizes allow (32x32 and 28x28 inputs do), each conv + ReLU +
  pool block runs as a space-to-depth convolution (``conv_relu_pool_s2d``):
  the same function and parameters, 2-4x faster on CPU.

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
    x = _block(self.conv1, x)
    x = _block(self.conv2, x)
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    x = nnx.relu(self.fc2(x))
    return self.head(x)
