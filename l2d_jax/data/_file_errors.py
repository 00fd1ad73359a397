"""The error every data loader raises for a file it cannot read, and path helpers.

A file that cannot be read as its format requires raises
:class:`DataFileError` (a ``ValueError``) whose message starts with the file
and, where there is one, the line; a missing file raises ``FileNotFoundError``
naming the path (:func:`existing_file`).
"""

from __future__ import annotations

import os
import pathlib

PathLike = str | os.PathLike


class DataFileError(ValueError):
  """A data file that cannot be read: unreadable, corrupt or malformed.

  The message starts with the file's path (and ``line N`` where the problem
  has a line). A subclass of ``ValueError``, so ``except ValueError`` still
  catches it.

  Attributes:
    path: the file (a string, as given).
    line: 1-based line number of the problem, or None.
    problem: the message without the path and line.
  """

  def __init__(self, path: PathLike, problem: str, line: int | None = None):
    self.path = str(path)
    self.line = None if line is None else int(line)
    self.problem = problem
    where = self.path if line is None else f"{self.path}, line {self.line}"
    super().__init__(f"{where}: {problem}")

  def __reduce__(self):
    return type(self), (self.path, self.problem, self.line)


def existing_file(path: PathLike, what: str = "file") -> pathlib.Path:
  """Returns ``path`` as a ``Path``; raises ``FileNotFoundError`` if missing."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{what} not found: {path}")
  return path


def row_error(path: PathLike, line: int, problem: str) -> DataFileError:
  """A ``DataFileError`` that names the file, the line number and the problem."""
  return DataFileError(path, problem, line)

