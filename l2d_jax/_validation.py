"""Small shared argument checks with clear error messages.

Checks on shapes and dtypes run at trace time (they only read static
information). Checks on values (ranges, NaN, rows summing to one) need concrete
arrays: they run when the argument is concrete (numpy or a committed
``jax.Array`` outside of a trace) and are skipped for tracers, so that library
functions stay jit-able. Scripts and loaders call them on concrete data before
entering jitted code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
  return not isinstance(x, jax.core.Tracer)


def check_ndim(x: Any, ndim: int, name: str, shape_doc: str) -> None:
  """Raises ``ValueError`` unless ``x`` has ``ndim`` dimensions."""
  if jnp.ndim(x) != ndim:
    raise ValueError(
        f"`{name}` must have shape {shape_doc} ({ndim} dims), got shape "
        f"{tuple(jnp.shape(x))}."
    )


def check_integer(x: Any, name: str) -> None:
  """Raises ``TypeError`` unless ``x`` has an integer dtype."""
  if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
    raise TypeError(
        f"`{name}` must have an integer dtype, got {jnp.result_type(x)}."
    )


def check_floating(x: Any, name: str) -> None:
  """Raises ``TypeError`` unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise TypeError(
        f"`{name}` must have a floating dtype, got {jnp.result_type(x)}."
    )


def check_probabilities(
    probs: Any, name: str = "probs", *, atol: float = 1e-3, axis: int = -1
) -> None:
  """Checks a ``[..., K]`` array of probability rows (values when concrete).

  The row-sum tolerance is ``max(atol, 4 * eps)`` of the dtype, so that a
  softmax computed in bfloat16 (eps 2**-7; its rows sum to 1 within about
  0.7 eps) or float16 is accepted. Sums are taken in float64.

  Raises:
    ValueError: NaN/inf, values outside [0, 1], or rows whose sum differs from
      1 by more than the tolerance.
  """
  check_floating(probs, name)
  if jnp.ndim(probs) < 1 or jnp.shape(probs)[axis] < 1:
    raise ValueError(f"`{name}` must have a non-empty class axis, got shape "
                     f"{tuple(jnp.shape(probs))}.")
  if not is_concrete(probs):
    return
  check_unit_interval(probs, name)
  tol = max(atol, 4 * float(jnp.finfo(jnp.result_type(probs)).eps))
  p = np.asarray(probs, dtype=np.float64)
  sums = p.sum(axis=axis)
  if sums.size and np.max(np.abs(sums - 1.0)) > tol:
    bad = int(np.argmax(np.abs(sums - 1.0)))
    raise ValueError(
        f"rows of `{name}` must sum to 1 (tolerance {tol:.3g}); row {bad} "
        f"sums to {sums.reshape(-1)[bad]:.6g}."
    )


def check_labels(labels: Any, num_classes: int, name: str = "labels") -> None:
  """Checks integer labels in ``[0, num_classes)`` (values when concrete)."""
  check_index_range(labels, num_classes, name)


def check_alpha(alpha: Any, name: str = "alpha") -> None:
  """Checks miscoverage levels in the open interval (0, 1)."""
  if not is_concrete(alpha):
    return
  a = np.asarray(alpha, dtype=np.float64)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"`{name}` contains NaN or inf.")
  if a.size and (a.min() <= 0.0 or a.max() >= 1.0):
    raise ValueError(
        f"`{name}` must lie in the open interval (0, 1), got values in "
        f"[{a.min():.6g}, {a.max():.6g}]."
    )


def check_finite(x: Any, name: str) -> None:
  """Raises ``ValueError`` if a concrete ``x`` contains NaN or inf."""
  if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"`{name}` contains NaN or inf.")


def check_same_leading(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """Checks that two arrays agree on their leading (batch) dimension."""
  sa, sb = jnp.shape(a), jnp.shape(b)
  if not sa or not sb or sa[0] != sb[0]:
    raise ValueError(
        f"`{name_a}` and `{name_b}` must share their leading dimension, got "
        f"shapes {tuple(sa)} and {tuple(sb)}."
    )


def _kept(x: np.ndarray, where: Any) -> np.ndarray:
  """Entries of ``x`` on the leading positions kept by ``where`` (numpy)."""
  if where is None:
    return x
  w = np.asarray(where, dtype=bool)
  w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
  return x[np.broadcast_to(w, x.shape)]


def check_index_range(
    x: Any, upper: int, name: str, *, where: Any = None
) -> None:
  """Checks integers in ``[0, upper)`` (values when concrete).

  Like ``check_labels`` but only the entries whose leading positions are kept
  by the boolean ``where`` (a prefix of ``x``'s shape) are checked, so padded
  rows may hold placeholders such as -1.
  """
  check_integer(x, name)
  if not is_concrete(x) or (where is not None and not is_concrete(where)):
    return
  v = _kept(np.asarray(x), where)
  if v.size and (v.min() < 0 or v.max() >= upper):
    raise ValueError(
        f"`{name}` must lie in [0, {upper}), got values in [{v.min()}, "
        f"{v.max()}]."
    )


def check_unit_interval(x: Any, name: str, *, where: Any = None) -> None:
  """Checks finite values in [0, 1] (when concrete; ``where`` as above)."""
  if not is_concrete(x) or (where is not None and not is_concrete(where)):
    return
  v = _kept(np.asarray(x, dtype=np.float64), where)
  if not np.all(np.isfinite(v)):
    raise ValueError(f"`{name}` contains NaN or inf.")
  if v.size and (v.min() < 0.0 or v.max() > 1.0):
    raise ValueError(
        f"`{name}` must lie in [0, 1], got values in [{v.min():.6g}, "
        f"{v.max():.6g}]."
    )


def check_mask(where: Any, size: int, name: str = "where") -> None:
  """Checks an optional boolean ``[size]`` example mask (trace time)."""
  if where is None:
    return
  if tuple(jnp.shape(where)) != (size,):
    raise ValueError(f"`{name}` must have shape [N]=({size},), got "
                     f"{tuple(jnp.shape(where))}.")
  if jnp.result_type(where) != jnp.bool_:
    raise TypeError(f"`{name}` must be boolean, got {jnp.result_type(where)}.")


def check_num_experts(logits: Any, num_experts: int) -> int:
  """Validates ``num_experts`` against ``logits [..., K + J]``; returns K.

  ``num_experts`` may be a Python or NumPy integer (see ``check_static_int``).
  """
  num_experts = check_static_int(num_experts, "num_experts", minimum=1)
  check_floating(logits, "logits")
  if jnp.ndim(logits) < 1:
    raise ValueError("`logits` must have shape [..., K + J], got a scalar.")
  num_classes = jnp.shape(logits)[-1] - num_experts
  if num_classes < 1:
    raise ValueError(
        f"`logits` must have shape [..., K + J] with K >= 1 classes and "
        f"J={num_experts} experts, i.e. a last axis of at least "
        f"{num_experts + 1}, got shape {tuple(jnp.shape(logits))}.")
  return num_classes


def check_static_int(value: Any, name: str, *, minimum: int = 0) -> int:
  """Checks a static integer option (Python or NumPy int, not bool).

  Returns:
    ``value`` as a Python ``int`` (hashable and usable as a shape).

  Raises:
    TypeError: ``value`` is a bool, a float, an array or a tracer.
    ValueError: ``value < minimum``.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise TypeError(f"`{name}` must be an int (static), got "
                    f"{type(value).__name__}.")
  value = int(value)
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return value


def check_key(key: Any) -> None:
  """A single ``jax.random`` key: typed, or legacy ``uint32[2]`` (trace time)."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if jnp.ndim(key) != 0:
      raise ValueError(
          f"`key` must be a single jax.random key (shape ()), got a key array "
          f"of shape {tuple(jnp.shape(key))}; use jax.vmap over keys.")
    return
  if dtype == np.uint32 and tuple(jnp.shape(key)) == (2,):
    return
  what = (type(key).__name__ if dtype is None else
          f"{type(key).__name__} of dtype {dtype} and shape "
          f"{tuple(jnp.shape(key))}")
  raise TypeError(f"`key` must be a jax.random key (e.g. jax.random.key(0)), "
                  f"got {what}; int seeds belong at the command line.")
