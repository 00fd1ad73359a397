"""Cross-fitted accuracy: alpha chosen on one half of the test points, scored on the other."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def cross_fitted_accuracy(group_accuracy: ArrayLike) -> jax.Array | np.ndarray:
  """Accuracy at an alpha chosen on the other half of the test points.

  Choosing alpha_opt on the same points it is scored on is optimistic. Here,
  per split, alpha is chosen where group 0's accuracy is highest and scored
  on group 1, then the other way round, and the two scores are averaged.
  Ties in the choice go to the first alpha.

  Args:
    group_accuracy: ``[..., 2, A]`` accuracy of each group at each alpha
      (``DeferralSweep.group_accuracy``).

  Returns:
    ``[...]`` cross-fitted accuracy (e.g. ``[P, S]``; report its mean and
    standard deviation over splits). A NumPy input gives a NumPy result in
    its dtype (so float64 shares stay exact).

  Example:
    >>> import jax.numpy as jnp
    >>> acc = jnp.array([[0.8, 0.9, 0.7],    # group 0 peaks at alpha 1
    ...                  [0.85, 0.8, 0.95]])  # group 1 peaks at alpha 2
    >>> print(cross_fitted_accuracy(acc))  # (0.8 + 0.7) / 2
    0.75
  """
  # NumPy in, NumPy out (e.g. float64 shares of counts, exact in JSON).
  xp = np if isinstance(group_accuracy, np.ndarray) else jnp
  acc = xp.asarray(group_accuracy)
  if acc.ndim < 2 or acc.shape[-2] != 2:
    raise ValueError(f"`group_accuracy` must have shape [..., 2, A], got "
                     f"{acc.shape}.")
  pick0 = xp.argmax(acc[..., 0, :], axis=-1)
  pick1 = xp.argmax(acc[..., 1, :], axis=-1)
  on1 = xp.take_along_axis(acc[..., 1, :], pick0[..., None], axis=-1)[..., 0]
  on0 = xp.take_along_axis(acc[..., 0, :], pick1[..., None], axis=-1)[..., 0]
  return (on0 + on1) / 2
