"""Atomic file replacement shared by the few places that write files."""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike[str],
                 write: Callable[[BinaryIO], object]) -> None:
  """Replaces ``path`` with what ``write(f)`` writes to a binary file ``f``.

  The data goes to a temporary file in the same folder, is flushed to disk and
  renamed over ``path``, so a reader (or a killed run) sees either the old file
  or the complete new one, never a partial file. Parent folders are created.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                             suffix=".tmp")
  try:
    # mkstemp creates 0600 files; give the result the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
