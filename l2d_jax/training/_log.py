"""JSON-lines metrics log, rewritten atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from l2d_jax import _atomic


def write_jsonl(path: str | os.PathLike[str],
                records: Sequence[Mapping[str, Any]]) -> None:
  """Atomically replaces ``path`` with one JSON object per line.

  The file is written to a temporary file in the same directory, flushed to
  disk and renamed over ``path``, so readers (and a killed run) only ever
  see a complete log.

  Args:
    path: destination file; parent directories are created.
    records: JSON-serialisable mappings.
  """
  data = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
  _atomic.atomic_write(path, lambda f: f.write(data.encode()))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads a JSON-lines file (one record per non-empty line)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
