"""Input checks shared by the models (static shapes only, jit-safe)."""

from __future__ import annotations

from collections.abc import Sequence

import jax


def check_images(x: jax.Array, channels: int, name: str, *,
                 image_size: Sequence[int] | None = None) -> None:
  """Raises ``ValueError`` unless ``x`` is an NHWC batch with ``channels``."""
  shape = tuple(x.shape)
  if len(shape) != 4:
    raise ValueError(
        f"{name} expects NHWC images of shape [batch, height, width, "
        f"{channels}], got shape {shape} ({len(shape)} dims).")
  if shape[-1] != channels:
    raise ValueError(
        f"{name} expects {channels} input channels in the last axis (NHWC), "
        f"got shape {shape}. NCHW inputs must be transposed to NHWC.")
  if image_size is not None and tuple(shape[1:3]) != tuple(image_size):
    raise ValueError(
        f"{name} was built for {tuple(image_size)} images, got spatial size "
        f"{tuple(shape[1:3])} (input shape {shape}).")


def check_num_heads(num_classes: int, num_experts: int) -> None:
  """Raises ``ValueError`` unless ``num_classes >= 1``, ``num_experts >= 0``."""
  if num_classes < 1:
    raise ValueError(f"`num_classes` must be >= 1, got {num_classes}.")
  if num_experts < 0:
    raise ValueError(f"`num_experts` must be >= 0, got {num_experts}.")
