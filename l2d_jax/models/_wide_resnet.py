"""Wide residual network (Zagoruyko & Komodakis, 2016) with deferral logits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from l2d_jax.models._checks import check_images
from l2d_jax.models._checks import check_num_heads

# He-normal over fan-out, as in the reference implementation.
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_norm(features: int, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # PyTorch momentum 0.1 is flax momentum 0.9.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype: Any,
          rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride,
                  padding=((kernel // 2, kernel // 2),) * 2, use_bias=False,
                  kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs)


class _Block(nnx.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3."""

  def __init__(self, cin: int, cout: int, stride: int, *, dropout: float,
               dtype: Any, rngs: nnx.Rngs):
    self.bn1 = _batch_norm(cin, dtype, rngs)
    self.conv1 = _conv(cin, cout, 3, stride, dtype, rngs)
    self.bn2 = _batch_norm(cout, dtype, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
    self.conv2 = _conv(cout, cout, 3, 1, dtype, rngs)
    # 1x1 projection when the shape changes, applied to the activated input.
    self.shortcut = (_conv(cin, cout, 1, stride, dtype, rngs)
                     if cin != cout or stride != 1 else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    o = nnx.relu(self.bn1(x))
    residual = x if self.shortcut is None else self.shortcut(o)
    o = nnx.relu(self.bn2(self.conv1(o)))
    if self.dropout is not None:
      o = self.dropout(o)
    return residual + self.conv2(o)


class WideResNet(nnx.Module):
  """WRN-depth-k for 32x32 images, with class logits and deferral logits.

  Pre-activation wide ResNet: a 3x3 stem conv with 16 channels, three groups
  of ``(depth - 4) / 6`` basic blocks with ``16k, 32k, 64k`` channels (strides
  1, 2, 2), then BatchNorm-ReLU, global average pooling and one linear layer
  producing ``num_classes + num_experts`` logits (classes first, then one
  deferral logit per expert). Convolutions have no bias and He (fan-out)
  initialisation; BatchNorm uses momentum 0.9 (PyTorch 0.1) and eps 1e-5.

  Parameter counts (``nnx.Param`` leaves, 10 classes, no experts):
  WRN-28-10 has 36,479,194 (the "36.5M" of the paper), WRN-28-2 1,467,610,
  WRN-16-4 2,748,890. BatchNorm running statistics are ``nnx.BatchStat``
  and not counted.

  BatchNorm and dropout follow the module mode: ``model.train()`` (default)
  normalises with batch statistics and updates the running averages;
  ``model.eval()`` uses the running averages and disables dropout.

  Args:
    depth: total depth; ``depth - 4`` must be a positive multiple of 6
      (10, 16, 22, 28, 40, ...).
    widen_factor: width multiplier k.
    num_classes: number of classes K.
    num_experts: number of deferral outputs J (0: plain classifier).
    dropout: dropout rate between the two convolutions of each block.
    in_channels: input channels.
    dtype: computation dtype (e.g. ``jnp.bfloat16`` on GPU); parameters stay
      float32 and the logits are returned in float32.
    rngs: random streams for initialisation (and dropout).

  Raises:
    ValueError: an invalid depth, width, dropout rate or head size.

  Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = WideResNet(10, 1, 10, num_experts=1, rngs=nnx.Rngs(0))
    >>> model.eval()
    >>> model(jnp.zeros((2, 32, 32, 3))).shape
    (2, 11)

  References:
    Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016.
  """

  def __init__(
      self,
      depth: int = 28,
      widen_factor: int = 10,
      num_classes: int = 10,
      *,
      num_experts: int = 0,
      dropout: float = 0.0,
      in_channels: int = 3,
      dtype: Any = None,
      rngs: nnx.Rngs,
  ):
    check_num_heads(num_classes, num_experts)
    if depth < 10 or (depth - 4) % 6 != 0:
      raise ValueError(
          f"WideResNet `depth` must satisfy depth = 6n + 4 with n >= 1 "
          f"(10, 16, 22, 28, ...), got {depth}.")
    if widen_factor < 1:
      raise ValueError(f"`widen_factor` must be >= 1, got {widen_factor}.")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"`dropout` must lie in [0, 1), got {dropout}.")
    self.depth = depth
    self.widen_factor = widen_factor
    self.num_classes = num_classes
    self.num_experts = num_experts
    self.in_channels = in_channels
    n = (depth - 4) // 6
    widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    self.stem = _conv(in_channels, widths[0], 3, 1, dtype, rngs)
    blocks = []
    for group, stride in zip(range(3), (1, 2, 2)):
      for i in range(n):
        cin = widths[group] if i == 0 else widths[group + 1]
        blocks.append(_Block(cin, widths[group + 1], stride if i == 0 else 1,
                             dropout=dropout, dtype=dtype, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.bn = _batch_norm(widths[3], dtype, rngs)
    self.head = nnx.Linear(widths[3], num_classes + num_experts, dtype=dtype,
                           rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Computes logits.

    Args:
      x: images, ``[batch, height, width, in_channels]`` (NHWC).

    Returns:
      ``[batch, num_classes + num_experts]`` float32 logits.

    Raises:
      ValueError: ``x`` is not a 4-D NHWC batch with ``in_channels``.
    """
    check_images(x, self.in_channels, "WideResNet")
    x = self.stem(x)
    for block in self.blocks:
      x = block(x)
    x = nnx.relu(self.bn(x))
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x).astype(jnp.float32)
