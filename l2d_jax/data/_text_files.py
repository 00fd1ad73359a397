"""UTF-8 text, JSON and CSV files, and integers that must fit in int64.

- text (CSV, JSON) is decoded as strict UTF-8 (:func:`open_text`,
  :func:`read_text`, :func:`read_json`, :func:`read_csv`,
  :func:`read_numeric_csv`), from a file or from the only ``.csv`` member of
  a ``.zip`` archive (read through :mod:`l2d_jax.data._archives`' guards);
- integers must fit in int64 (:func:`parse_int`, :func:`int_column`,
  :func:`integer_array`).

A file that cannot be read raises :class:`~l2d_jax.data.DataFileError` naming
the file and, where there is one, the line.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import operator
import pathlib
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from l2d_jax.data._archives import open_zip
from l2d_jax.data._archives import read_zip_member
from l2d_jax.data._file_errors import DataFileError
from l2d_jax.data._file_errors import PathLike
from l2d_jax.data._file_errors import existing_file
from l2d_jax.data._file_errors import row_error

_INT64_BOUND = 2.0 ** 63  # Exactly representable; int64 holds [-2**63, 2**63).


def utf8_error(path: PathLike, data: bytes) -> DataFileError:
  """The error for bytes that are not UTF-8, with the line of the first bad byte.

  Args:
    path: the file, for the message.
    data: the file's bytes (known not to decode).
  """
  try:
    data.decode("utf-8")
  except UnicodeDecodeError as err:
    line = data.count(b"\n", 0, err.start) + 1
    return DataFileError(
        path, f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
        f"{err.start}: {err.reason}); binary file, or text in another "
        "encoding? Save it as UTF-8.", line)
  return DataFileError(path, "not UTF-8 text.")


def decode_text(path: PathLike, data: bytes) -> str:
  """``data.decode("utf-8")``; a ``DataFileError`` naming the file and line."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    raise utf8_error(path, data) from None


@contextlib.contextmanager
def utf8_errors(path: pathlib.Path) -> Iterator[None]:
  """Turns a ``UnicodeDecodeError`` raised inside into a ``DataFileError``.

  Text files are decoded while they stream; only on a failure is the whole
  file read again, to report the line of the first byte that is not UTF-8.
  """
  try:
    yield
  except UnicodeDecodeError:
    raise utf8_error(path, _raw_text_bytes(path)) from None


def _only_csv_member(path: pathlib.Path,
                     archive: zipfile.ZipFile) -> zipfile.ZipInfo:
  members = [m for m in archive.infolist()
             if m.filename.lower().endswith(".csv")
             and not m.filename.startswith("__MACOSX")]
  if len(members) != 1:
    raise DataFileError(path, "expected exactly one .csv file in the archive, "
                        f"found {[m.filename for m in members]}.")
  return members[0]


def _raw_text_bytes(path: pathlib.Path) -> bytes:
  """The bytes of a text file, or of the only ``.csv`` member of a ``.zip``."""
  if path.suffix.lower() != ".zip":
    return path.read_bytes()
  with open_zip(path) as archive:
    return read_zip_member(path, archive, _only_csv_member(path, archive))


def open_text(path: pathlib.Path) -> io.TextIOBase:
  """Opens a UTF-8 text file, or the only ``.csv`` member of a ``.zip`` archive.

  Read inside :func:`utf8_errors` so that a file that is not UTF-8 raises a
  ``DataFileError`` naming it.

  Raises:
    DataFileError: a damaged archive, no single CSV member, or a refused
      member (see :func:`check_zip_member`).
  """
  if path.suffix.lower() != ".zip":
    return open(path, newline="", encoding="utf-8")
  data = _raw_text_bytes(path)
  return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")


def read_text(path: PathLike, what: str = "text file") -> str:
  """The whole UTF-8 text of a file (or of the only CSV member of a ``.zip``).

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: not UTF-8 (naming the line), or a damaged archive.
  """
  path = existing_file(path, what)
  return decode_text(path, _raw_text_bytes(path))


def read_json(path: PathLike, what: str = "JSON file") -> Any:
  """Reads a UTF-8 JSON file.

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: not UTF-8, a syntax error (naming the line), nesting too
      deep for the parser, or a number too long to convert.
  """
  import json  # Local: only two loaders need it.
  text = read_text(path, what)
  try:
    return json.loads(text)
  except json.JSONDecodeError as err:
    raise row_error(path, err.lineno, f"invalid JSON ({err.msg}).") from None
  except RecursionError:
    raise DataFileError(path, "JSON nested too deeply to read.") from None
  except ValueError as err:  # e.g. an integer of more than 4300 digits.
    raise DataFileError(path, f"invalid JSON ({err}).") from None


def integer_array(values: Any, *, source: str, what: str) -> np.ndarray:
  """An int64 copy of integers, or of whole floats within the int64 range.

  Raises:
    DataFileError: a dtype that is neither integer nor float, or a value that
      is NaN, infinite, fractional or too large for int64 (naming the first).
  """
  a = np.asarray(values)
  if np.issubdtype(a.dtype, np.unsignedinteger) and a.size and (
      a.max() >= np.uint64(2 ** 63)):
    bad = np.unravel_index(int(np.argmax(a >= np.uint64(2 ** 63))), a.shape)
    raise DataFileError(source, f"{what} at index {tuple(map(int, bad))} is "
                        f"{a[bad].item()}, beyond the 64-bit integer range.")
  if np.issubdtype(a.dtype, np.integer):
    return a.astype(np.int64)
  if not np.issubdtype(a.dtype, np.floating):
    raise DataFileError(source, f"{what} must be numbers, got dtype {a.dtype}.")
  with np.errstate(invalid="ignore"):
    ok = np.isfinite(a) & (a == np.round(a)) & (np.abs(a) < _INT64_BOUND)
  if not np.all(ok):
    bad = np.unravel_index(int(np.argmin(ok)), a.shape)
    raise DataFileError(source, f"{what} must be whole numbers within the "
                        f"64-bit integer range; index {tuple(map(int, bad))} "
                        f"holds {a[bad].item()!r}.")
  return a.astype(np.int64)


# ---------------------------------------------------------------------------
# CSV parsing.


def read_csv(
    path: PathLike,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    what: str = "CSV file",
) -> tuple[dict[str, tuple[str, ...]], np.ndarray]:
  """Reads the named columns of a CSV file with a header, column-wise.

  Args:
    path: the CSV file, or a ``.zip`` archive holding exactly one CSV file.
    required: column names that the header must contain.
    optional: further columns to return when present.
    what: how the file is called in error messages.

  Returns:
    ``(columns, lines)``: ``columns`` maps each requested column present in
    the header to a tuple of its raw string fields, one per non-empty data
    row; ``lines`` is the ``[rows]`` int64 line number of each row in the file
    (the header being line 1), for error messages.

  Raises:
    FileNotFoundError: the file does not exist.
    DataFileError: empty file, text that is not UTF-8, missing required
      columns, unreadable CSV or archive, or a row whose number of fields
      differs from the header's (naming the file and the line).
  """
  path = existing_file(path, what)
  with utf8_errors(path):
    with open_text(path) as handle:
      reader = csv.reader(handle)
      try:
        header = next(reader)
      except StopIteration:
        raise DataFileError(path, "empty file, expected a header with columns "
                            f"{list(required)}.") from None
      except csv.Error as err:
        raise row_error(path, 1, f"unreadable header ({err}).") from None
      header = [h.strip().lstrip("\ufeff") for h in header]
      position = {name: i for i, name in enumerate(header)}
      missing = [c for c in required if c not in position]
      if missing:
        raise DataFileError(path, f"missing required column(s) {missing}; "
                            f"header is {header}.")
      names = list(required) + [c for c in optional if c in position]
      getter = operator.itemgetter(*[position[c] for c in names])
      width = len(header)
      with _gc_paused():
        fast = _read_simple_rows(reader, getter, width)
    with _gc_paused():
      if fast is not None:
        records, lines = fast
      else:
        with open_text(path) as handle:
          reader = csv.reader(handle)
          next(reader)
          records, lines = _read_rows_checked(reader, getter, header, path)
    if len(names) == 1:
      records = [(r,) for r in records]
    values = list(zip(*records)) if records else [()] * len(names)
    del records
  return dict(zip(names, values)), lines


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
  """Pauses the cyclic garbage collector while millions of tuples are built.

  The rows hold only strings (no reference cycles); without the pause the
  collector rescans the growing lists and doubles the reading time.
  """
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _read_simple_rows(
    reader: Any, getter: Any, width: int, chunk: int = 1 << 16
) -> tuple[list, np.ndarray] | None:
  """Fast path: every record is one non-blank line of ``width`` fields.

  Returns ``(records, lines)``, or None as soon as the file is not that simple
  (a blank line, a bad row, a quoted line break or a CSV error), in which
  case the caller re-reads it row by row to report exact line numbers.
  """
  records: list = []
  lines = []
  next_line = reader.line_num + 1
  try:
    while True:
      rows = list(itertools.islice(reader, chunk))
      if not rows:
        break
      end_line = reader.line_num
      if end_line - next_line + 1 != len(rows) or set(map(len, rows)) != {
          width}:
        return None
      records.extend(map(getter, rows))
      lines.append(np.arange(next_line, end_line + 1, dtype=np.int64))
      next_line = end_line + 1
  except csv.Error:
    return None
  lines = np.concatenate(lines) if lines else np.zeros(0, np.int64)
  return records, lines


def _read_rows_checked(
    reader: Any, getter: Any, header: list[str], path: pathlib.Path
) -> tuple[list, np.ndarray]:
  """Row-by-row reading with exact line numbers and errors."""
  width = len(header)
  records, lines = [], []
  try:
    for fields in reader:
      if len(fields) != width:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
          continue
        raise row_error(path, reader.line_num,
                        f"expected {width} fields (header {header}), got "
                        f"{len(fields)}.")
      records.append(getter(fields))
      lines.append(reader.line_num)
  except csv.Error as err:
    raise row_error(path, reader.line_num, f"malformed CSV ({err}).") from None
  return records, np.asarray(lines, np.int64)


def parse_int(
    value: str,
    *,
    path: PathLike,
    line: int,
    column: str,
    allow_float: bool = False,
) -> int:
  """Parses an integer field (``"12"``, or ``"12.0"`` when ``allow_float``).

  Raises:
    DataFileError: not an integer, or outside the 64-bit integer range,
      naming the file, the line and the column.
  """
  text = value.strip()
  number: int | None = None
  try:
    number = int(text)
  except ValueError:
    if allow_float:
      try:
        real = float(text)
      except ValueError:
        real = float("nan")
      if np.isfinite(real) and real == int(real):
        number = int(real)
  if number is not None:
    if -_INT64_BOUND <= number < _INT64_BOUND:
      return number
    raise row_error(path, line, f"column {column!r} holds {value.strip()[:40]!r},"
                    " outside the 64-bit integer range.")
  kind = "an integer" + (" (possibly written as a float)" if allow_float else "")
  raise row_error(path, line, f"column {column!r} must be {kind}, got "
                  f"{value[:60]!r}.")


def take(values: Sequence[str], index: np.ndarray) -> list[str]:
  """``[values[k] for k in index]`` at C speed."""
  if len(index) == 0:
    return []
  if len(index) == 1:
    return [values[int(index[0])]]
  return list(operator.itemgetter(*index.tolist())(values))


def strip_all(values: Sequence[str]) -> list[str]:
  """``[v.strip() for v in values]``, stripping each distinct value once."""
  stripped = {v: v.strip() for v in set(values)}
  return list(map(stripped.__getitem__, values))


def int_column(
    values: Sequence[str],
    lines: np.ndarray,
    *,
    path: PathLike,
    column: str,
    allow_float: bool = False,
) -> np.ndarray:
  """Parses a column of integer fields at once (int64).

  Args:
    values: the raw fields.
    lines: ``[len(values)]`` their line numbers.
    path: file name for messages.
    column: column name for messages.
    allow_float: accept integral floats such as ``"1128.0"``.

  Returns:
    ``[len(values)]`` int64 array.

  Raises:
    DataFileError: naming the file, the line and the column of the first
      field that is not an integer or lies outside the 64-bit range.
  """
  try:
    if allow_float:
      number = np.asarray(values, dtype=np.float64)
      if np.all(np.isfinite(number) & (number == np.round(number))
                & (np.abs(number) < _INT64_BOUND)):
        return number.astype(np.int64)
    else:
      return np.asarray(values, dtype=np.int64)
  except (ValueError, OverflowError):
    pass
  for value, line in zip(values, lines.tolist()):
    parse_int(value, path=path, line=line, column=column,
              allow_float=allow_float)
  raise DataFileError(path, f"column {column!r} must hold integers.")


def read_numeric_csv(
    path: PathLike,
    *,
    num_cols: int,
    what: str = "CSV file",
) -> np.ndarray:
  """Reads a headerless all-numeric CSV file as a ``[rows, num_cols]`` array.

  A fast ``np.loadtxt`` pass; on failure the file is scanned again with the
  ``csv`` module to report the first bad line.

  Raises:
    FileNotFoundError: the file does not exist.
    DataFileError: text that is not UTF-8, a row with the wrong number of
      fields, a non-numeric or non-finite value (naming the file and the
      line), or an empty file.
  """
  path = existing_file(path, what)
  empty = DataFileError(path, f"empty file, expected rows of {num_cols} "
                        "numbers.")
  with utf8_errors(path):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "empty input file" is raised below.
        with open(path, newline="", encoding="utf-8") as handle:
          data = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except UnicodeDecodeError:
      raise
    except ValueError:
      data = None
    if data is not None and data.shape[1:] == (num_cols,) and np.all(
        np.isfinite(data)):
      if data.shape[0] == 0:
        raise empty
      return data
    if data is not None and data.size == 0:
      raise empty
    with open(path, newline="", encoding="utf-8") as handle:
      reader = csv.reader(handle)
      try:
        for fields in reader:
          line = reader.line_num
          if not fields:
            continue
          if len(fields) != num_cols:
            raise row_error(path, line, f"expected {num_cols} comma-separated "
                            f"numbers, got {len(fields)} fields.")
          for col, text in enumerate(fields):
            try:
              number = float(text)
            except ValueError:
              raise row_error(path, line, f"column {col} is not a number: "
                              f"{text[:60]!r}.") from None
            if not np.isfinite(number):
              raise row_error(path, line, f"column {col} is not finite: "
                              f"{text[:60]!r}.")
      except csv.Error as err:
        raise row_error(path, reader.line_num, f"malformed CSV ({err})."
                        ) from None
  raise DataFileError(path, f"could not be read as a numeric table with "
                      f"{num_cols} columns.")
