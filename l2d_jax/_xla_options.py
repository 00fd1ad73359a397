"""Whether this jaxlib accepts some XLA compile options, probed once.

CPU-specific and experimental XLA options come and go between jaxlib
versions, and an unknown option is a compile error. ``supported`` compiles a
tiny function with the options once per (platform, options) and process; on
failure it issues one ``RuntimeWarning`` and answers ``False``, so callers fall
back to XLA's defaults instead of failing.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

# (platform, options) -> whether this jaxlib compiles with them.
_PROBED: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}
_LOCK = threading.Lock()


def options_key(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
  """A hashable, order-free key of ``options``."""
  return tuple(sorted((k, str(v)) for k, v in options.items()))


def supported(device: jax.Device, options: Mapping[str, Any], *, what: str,
              hint: str = "", stacklevel: int = 3) -> bool:
  """Compiles a tiny function with ``options`` on ``device`` once.

  Args:
    device: a device of the platform the options are for.
    options: XLA compile options.
    what: whose options they are, for the warning (e.g. "the trainer's
      default").
    hint: a sentence appended to the warning.
    stacklevel: passed to ``warnings.warn``.

  Returns:
    Whether this jaxlib compiles with ``options`` (the answer is cached).
  """
  key = (device.platform, options_key(options))
  with _LOCK:
    if key in _PROBED:
      return _PROBED[key]
    try:
      x = jax.device_put(np.zeros(2, np.float32), device)
      jax.jit(lambda v: v + 1).lower(x).compile(dict(options))
      _PROBED[key] = True
    except Exception as e:  # pylint: disable=broad-exception-caught
      # XLA rejects unknown options with an error whose type varies across
      # jaxlib versions; any failure means "do not use them".
      _PROBED[key] = False
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
      warnings.warn(
          f"this jaxlib ({jax.__version__}) does not accept {what} "
          f"{device.platform} compile options {sorted(options)} "
          f"({first_line[:200]}); compiling with XLA's defaults instead."
          + (f" {hint}" if hint else ""),
          RuntimeWarning, stacklevel=stacklevel + 1)
    return _PROBED[key]
