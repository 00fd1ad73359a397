"""Atomic result writing shared by the experiments."""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from l2d_jax import _atomic


def _clean(obj: Any) -> Any:
  """Converts numpy types to JSON ones; non-finite floats become None."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _clean(obj.tolist())
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating, float)):
    f = float(obj)
    return f if math.isfinite(f) else None
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temp file + rename)."""
  data = json.dumps(_clean(obj), indent=2, allow_nan=False).encode()
  _atomic.atomic_write(pathlib.Path(path), lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes text atomically."""
  _atomic.atomic_write(pathlib.Path(path), lambda f: f.write(text.encode()))


def save_figure(fig, path: str | os.PathLike) -> None:
  """Saves a matplotlib figure as PNG atomically."""
  _atomic.atomic_write(pathlib.Path(path),
                lambda f: fig.savefig(f, format="png", dpi=120,
                                      bbox_inches="tight"))
