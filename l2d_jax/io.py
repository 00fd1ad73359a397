"""Writing result files atomically: a reader never sees half a file.

Every helper writes to a temporary file in the target's folder, flushes it
to disk and renames it over the target, so a reader -- or a run killed
mid-write and restarted -- finds either the old file or the complete new
one. Parent folders are created.

- ``atomic_write(path, write)``: the general form; ``write(f)`` fills a
  binary file object.
- ``write_json(path, obj)``: ``obj`` as indented JSON (``to_json``: numpy
  and JAX values to Python, NaN/inf to ``null``, floats rounded to 12
  significant digits so that 0.9059999999999999 reads 0.906).
- ``write_text(path, text)``: UTF-8 text.
- ``save_figure(fig, path)``: a matplotlib figure as PNG.

Example:
  >>> import json, pathlib, tempfile
  >>> import numpy as np
  >>> path = pathlib.Path(tempfile.mkdtemp()) / "out" / "results.json"
  >>> write_json(path, {"accuracy": np.float64(0.9059999999999999),
  ...                   "per_seed": np.array([1, 2])})
  >>> json.loads(path.read_text())
  {'accuracy': 0.906, 'per_seed': [1, 2]}
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from l2d_jax._atomic import atomic_write

__all__ = [
    # Any file
    "atomic_write",
    # JSON, text, figures
    "write_json",
    "write_text",
    "save_figure",
    # JSON values
    "to_json",
    "round_floats",
    "SIGNIFICANT_DIGITS",
]

SIGNIFICANT_DIGITS = 12


def round_floats(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
  """``x`` rounded to ``digits`` significant digits.

  Args:
    x: a float.
    digits: significant digits kept.

  Returns:
    The rounded float.

  Example:
    >>> round_floats(0.9059999999999999)
    0.906
  """
  return float(f"{x:.{digits}g}")


def _clean(obj: Any, digits: int | None) -> Any:
  """JSON-ready copy: numpy/jax types to Python, non-finite floats to None."""
  if isinstance(obj, dict):
    return {str(k): _clean(v, digits) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v, digits) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    f = float(obj)
    if not math.isfinite(f):
      return None
    if isinstance(obj, np.floating) and obj.dtype.itemsize < 8:
      # float32 0.1 is 0.10000000149011612 as a double: keep its own digits.
      f = float(np.format_float_scientific(obj, unique=True))
    return round_floats(f, digits) if digits else f
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
    a = np.asarray(obj)
    if a.dtype.kind == "f" and a.dtype.itemsize < 8:
      return _clean(list(a) if a.ndim else a[()], digits)
    return _clean(a.tolist(), digits)
  return obj


def to_json(obj: Any, *, digits: int | None = SIGNIFICANT_DIGITS) -> str:
  """``obj`` as indented JSON; floats rounded to ``digits`` significant digits.

  Integers are never changed; NaN and inf become ``null``; numpy and JAX
  arrays become lists (float32 values keep their own shortest digits);
  dict keys become strings; paths become strings.

  Args:
    obj: nested dicts, lists, tuples, numbers, strings, arrays.
    digits: significant digits of floats; None keeps every digit.

  Returns:
    The JSON text, ending with a newline.

  Raises:
    TypeError: a value JSON cannot hold (e.g. a set).

  Example:
    >>> print(to_json({"a": [np.float32(0.1), float("nan")]}), end="")
    {
      "a": [
        0.1,
        null
      ]
    }
  """
  return json.dumps(_clean(obj, digits), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any, *,
               digits: int | None = SIGNIFICANT_DIGITS) -> None:
  """Writes ``obj`` as JSON (:func:`to_json`) to ``path`` atomically.

  Args:
    path: the file; parent folders are created.
    obj: the value (see :func:`to_json`).
    digits: significant digits of floats; None keeps every digit.
  """
  data = to_json(obj, digits=digits).encode("utf-8")
  atomic_write(pathlib.Path(path), lambda f: f.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically.

  Args:
    path: the file; parent folders are created.
    text: the text.
  """
  data = text.encode("utf-8")
  atomic_write(pathlib.Path(path), lambda f: f.write(data))


def save_figure(fig: Any, path: str | os.PathLike[str], *,
                dpi: int = 120) -> None:
  """Saves a matplotlib figure to ``path`` as PNG atomically.

  Args:
    fig: a ``matplotlib.figure.Figure``.
    path: the file; parent folders are created.
    dpi: resolution (the figure is cropped to its contents).
  """
  atomic_write(pathlib.Path(path),
               lambda f: fig.savefig(f, format="png", dpi=dpi,
                                     bbox_inches="tight"))
