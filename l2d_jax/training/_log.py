"""JSON-lines metrics log, rewritten atomically."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any


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
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      for record in records:
        f.write(json.dumps(dict(record), sort_keys=True) + "\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads a JSON-lines file (one record per non-empty line)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
