"""Parameter counting."""

from __future__ import annotations

import math

import jax
from flax import nnx


def count_params(model: nnx.Module) -> int:
  """Counts the scalars in a model's ``nnx.Param`` variables.

  Works on abstract models too (``nnx.eval_shape``), so large networks can
  be counted without allocating them.

  Args:
    model: an NNX module.

  Returns:
    The number of trainable parameters (BatchNorm statistics excluded).

  Example:
    >>> from flax import nnx
    >>> from l2d_jax.models import MLP
    >>> count_params(MLP(2, (3,), 2, rngs=nnx.Rngs(0)))
    17
  """
  params = nnx.state(model, nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))
