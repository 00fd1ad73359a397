"""Atomic file replacement: the implementation behind ``l2d_jax.io``.

Library modules import it from here; users import ``l2d_jax.io``.
"""

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
  or the complete new one, never a partial file. Parent folders are created;
  the file gets the usual permissions (``0o666`` less the umask). If
  ``write`` raises, ``path`` is left as it was and the temporary file is
  removed.

  Args:
    path: the file to replace (or create).
    write: called once with the open binary temporary file.

  Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a" / "note.txt"
    >>> atomic_write(path, lambda f: f.write(b"done"))
    >>> path.read_text()
    'done'
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
