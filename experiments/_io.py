"""Atomic result writing shared by the experiments."""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any

import numpy as np


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


def _atomic_write(path: pathlib.Path, write) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temp file + rename)."""
  data = json.dumps(_clean(obj), indent=2, allow_nan=False).encode()
  _atomic_write(pathlib.Path(path), lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes text atomically."""
  _atomic_write(pathlib.Path(path), lambda f: f.write(text.encode()))


def save_figure(fig, path: str | os.PathLike) -> None:
  """Saves a matplotlib figure as PNG atomically."""
  _atomic_write(pathlib.Path(path),
                lambda f: fig.savefig(f, format="png", dpi=120,
                                      bbox_inches="tight"))
