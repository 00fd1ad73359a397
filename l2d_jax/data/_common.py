"""Shared pieces of the real-data loaders: the data set container and file readers.

Every loader returns (or builds) an :class:`AnnotatedDataset`: model
probabilities, true labels and per-image human annotations over one pool of
images. Every loader reads its files through the helpers below, which use the
standard library and numpy only (no pandas, never pickle):

- text (CSV, JSON) is decoded as strict UTF-8 (:func:`open_text`,
  :func:`read_text`, :func:`read_json`, :func:`read_csv`,
  :func:`read_numeric_csv`);
- ``.npy``/``.npz`` arrays are checked to be complete before they are
  allocated (:func:`load_npy`, :func:`load_npz`);
- zip members are refused when encrypted or when they would inflate beyond
  :data:`MAX_ZIP_MEMBER_BYTES` or :data:`MAX_ZIP_RATIO`, and are never read
  past their declared size (:func:`read_zip_member`);
- integers must fit in int64 (:func:`parse_int`, :func:`int_column`,
  :func:`integer_array`).

A file that cannot be read as its format requires raises
:class:`DataFileError` (a ``ValueError``) whose message starts with the file
and, where there is one, the line; content that is readable but invalid
(labels out of range, probabilities not summing to 1) raises ``ValueError``
naming the file; a missing file raises ``FileNotFoundError`` naming the path.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import io
import itertools
import math
import numbers
import operator
import os
import pathlib
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from l2d_jax import _validation
from l2d_jax.experts._annotations import Annotations

PathLike = str | os.PathLike

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
    "ship", "truck")

DUPLICATE_POLICIES: tuple[str, ...] = ("first", "last", "all", "error")


@dataclasses.dataclass(frozen=True, eq=False)
class AnnotatedDataset:
  """A pool of N images with model probabilities, true labels and annotations.

  Attributes:
    probs: ``[N, K]`` float32 model probabilities (rows sum to 1), or None when
      the data set ships no model (e.g. CIFAR-10S; pair it with
      ``load_model_probs``).
    labels: ``[N]`` int32 true labels in ``[0, K)``.
    annotations: ``Annotations`` over the same N images; images may have no
      annotation at all (their mask row is all False).
    class_names: K class names; index = label.
    expert_names: J expert (annotator) names as in the source file; index =
      expert id used in ``annotations.annotator``.
    name: short name of the data set.
    extras: further per-image arrays of the source (e.g. CIFAR-10N's
      ``aggre_label``), each ``[N]``.
  """

  probs: np.ndarray | None
  labels: np.ndarray
  annotations: Annotations
  class_names: tuple[str, ...]
  expert_names: tuple[str, ...]
  name: str
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    labels = self.labels
    _validation.check_ndim(labels, 1, "labels", "[num_images]")
    num_images = labels.shape[0]
    num_classes = len(self.class_names)
    _validation.check_labels(labels, num_classes, "labels")
    if self.annotations.num_images != num_images:
      raise ValueError(
          f"`annotations` cover {self.annotations.num_images} images but "
          f"`labels` has {num_images}.")
    if self.annotations.num_classes != num_classes:
      raise ValueError(
          f"`annotations` have {self.annotations.num_classes} classes but "
          f"`class_names` has {num_classes}.")
    if self.annotations.num_experts != len(self.expert_names):
      raise ValueError(
          f"`annotations` have {self.annotations.num_experts} experts but "
          f"`expert_names` has {len(self.expert_names)}.")
    if self.probs is not None:
      if tuple(self.probs.shape) != (num_images, num_classes):
        raise ValueError(
            f"`probs` must have shape [num_images, num_classes]=[{num_images}, "
            f"{num_classes}], got {tuple(self.probs.shape)}.")
      _validation.check_probabilities(self.probs, "probs")
    for key, value in self.extras.items():
      if np.shape(value)[:1] != (num_images,):
        raise ValueError(f"extras[{key!r}] must have leading dimension "
                         f"{num_images}, got shape {np.shape(value)}.")

  @property
  def num_images(self) -> int:
    """Number of images N."""
    return int(self.labels.shape[0])

  @property
  def num_classes(self) -> int:
    """Number of classes K."""
    return len(self.class_names)

  @property
  def num_experts(self) -> int:
    """Number of experts J."""
    return len(self.expert_names)


# ---------------------------------------------------------------------------
# Arguments.


def check_int(value: Any, name: str, *, minimum: int | None = 0) -> int:
  """``value`` as an ``int``: Python or numpy integers, never bools or floats.

  Raises:
    TypeError: not an integer (naming the argument).
    ValueError: below ``minimum``.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, numbers.Integral):
    raise TypeError(f"`{name}` must be an int, got {type(value).__name__} "
                    f"{value!r}.")
  if minimum is not None and value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return int(value)


# ---------------------------------------------------------------------------
# Errors, text, zip archives, arrays and JSON.

# Largest inflated size of one zip member that a loader reads. The real
# CIFAR-10 JPEG zips hold members of at most 1.2 kB (and a 1.8 MB index), the
# CIFAR-N .npz files members of 0.4 MB and the decoded-image cache of the
# 50,000 training images one member of 154 MB.
MAX_ZIP_MEMBER_BYTES: int = 1 << 30
# Largest inflated/compressed size ratio of a zip member bigger than
# ``_RATIO_FLOOR`` bytes: deflate reaches ~1000 on constant data (a zip
# bomb), real CSV and label files stay below 20.
MAX_ZIP_RATIO: int = 200
_RATIO_FLOOR = 16 << 20
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_INT64_BOUND = 2.0 ** 63  # Exactly representable; int64 holds [-2**63, 2**63).
# What reading a damaged file can raise besides DataFileError.
_READ_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile,
                zipfile.LargeZipFile, zlib.error, RuntimeError,
                NotImplementedError, OverflowError, MemoryError)


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


def open_zip(path: pathlib.Path) -> zipfile.ZipFile:
  """Opens an existing zip archive; ``DataFileError`` if it is not one."""
  try:
    return zipfile.ZipFile(path)
  except _READ_ERRORS as err:
    raise DataFileError(path, f"not a valid zip archive ({err}).") from None


def check_zip_member(
    path: PathLike,
    info: zipfile.ZipInfo,
    *,
    max_bytes: int | None = None,
) -> int:
  """Refuses encrypted members and members that would inflate too far.

  Args:
    path: the archive, for messages.
    info: the member.
    max_bytes: a tighter bound than :data:`MAX_ZIP_MEMBER_BYTES` for this
      member (e.g. one JPEG image).

  Returns:
    The number of bytes the member may inflate to (its declared size).

  Raises:
    DataFileError: encrypted member, declared size above the bound, or an
      inflated/compressed ratio above :data:`MAX_ZIP_RATIO`.
  """
  name = info.filename
  limit = MAX_ZIP_MEMBER_BYTES if max_bytes is None else min(
      int(max_bytes), MAX_ZIP_MEMBER_BYTES)
  if info.flag_bits & 0x1:
    raise DataFileError(path, f"member {name!r} is encrypted; only unencrypted "
                        "archives can be read.")
  size = info.file_size
  if size > limit:
    raise DataFileError(
        path, f"member {name!r} inflates to {size} bytes, more than the limit "
        f"of {limit} bytes for it (l2d_jax.data.MAX_ZIP_MEMBER_BYTES).")
  ratio = size / max(info.compress_size, 1)
  if size > _RATIO_FLOOR and ratio > MAX_ZIP_RATIO:
    raise DataFileError(
        path, f"member {name!r} inflates {ratio:.0f}-fold ({info.compress_size}"
        f" -> {size} bytes), more than l2d_jax.data.MAX_ZIP_RATIO = "
        f"{MAX_ZIP_RATIO}; refusing a possible zip bomb.")
  return size


def read_zip_member(
    path: PathLike,
    archive: zipfile.ZipFile,
    member: str | zipfile.ZipInfo,
    *,
    max_bytes: int | None = None,
) -> bytes:
  """Reads one member after :func:`check_zip_member`, never past its bound.

  Raises:
    DataFileError: a refused member (see :func:`check_zip_member`), a member
      that inflates beyond its declared size, or a damaged member (bad CRC,
      corrupt deflate stream), naming the archive and the member.
  """
  info = member if isinstance(member, zipfile.ZipInfo) else archive.getinfo(
      member)
  size = check_zip_member(path, info, max_bytes=max_bytes)
  try:
    with archive.open(info) as handle:
      data = handle.read(size + 1)  # Stops one byte past the declared size.
  except _READ_ERRORS as err:
    raise DataFileError(path, f"cannot read member {info.filename!r} ({err})."
                        ) from None
  if len(data) != size:
    raise DataFileError(path, f"member {info.filename!r} inflates to "
                        f"{'more' if len(data) > size else 'fewer'} bytes than "
                        f"the {size} its header declares.")
  return data


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


def _npy_header(handle: Any, size: int, source: str) -> tuple[tuple, np.dtype]:
  """Reads and checks a ``.npy`` header; leaves ``handle`` at the data.

  Args:
    handle: binary file positioned at the start of the array.
    size: bytes from that start to the end of the array's file or member.
    source: name for messages.

  Returns:
    ``(shape, dtype)``.

  Raises:
    DataFileError: empty, not ``.npy``, an object (pickle) dtype, or a data
      size that differs from what the header declares (truncated or padded).
  """
  head = handle.read(8)
  if not head:
    raise DataFileError(source, "empty file, expected a .npy array.")
  if head.startswith(_ZIP_MAGIC):
    raise DataFileError(source, "is a zip (.npz) archive, expected one .npy "
                        "array.")
  if not head.startswith(_NPY_MAGIC) or len(head) < 8:
    raise DataFileError(source, "not a .npy array (no NumPy header); pickled "
                        "and other formats are not read.")
  major = head[6]
  if major not in (1, 2, 3):
    raise DataFileError(source, f"unsupported .npy format version {major}.")
  # Version 3 differs from 2 only by UTF-8 field names, which do not change
  # the sizes checked here (the array itself is read by numpy).
  read_header = (np.lib.format.read_array_header_1_0 if major == 1 else
                 np.lib.format.read_array_header_2_0)
  try:
    shape, _, dtype = read_header(handle)
  except _READ_ERRORS as err:
    raise DataFileError(source, f"corrupt .npy header ({err}).") from None
  if dtype.hasobject:
    raise DataFileError(source, f"holds Python objects (dtype {dtype}), which "
                        "cannot be read without pickle.")
  expected = math.prod(shape) * dtype.itemsize
  available = size - handle.tell()
  if available != expected:
    state = "truncated" if available < expected else "longer than declared"
    raise DataFileError(
        source, f"{state}: the header declares shape {shape} of {dtype} "
        f"({expected} bytes of data) but {available} bytes follow it.")
  return shape, dtype


def load_npy(path: PathLike, what: str = "array file") -> np.ndarray:
  """Reads a ``.npy`` array without pickle, after checking it is complete.

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: empty, truncated or padded file, a ``.npz`` archive, a
      pickled or object array, or any other unreadable content.
  """
  path = existing_file(path, what)
  try:
    with open(path, "rb") as handle:
      _npy_header(handle, os.fstat(handle.fileno()).st_size, str(path))
      handle.seek(0)
      return np.load(handle, allow_pickle=False)
  except DataFileError:
    raise
  except _READ_ERRORS as err:
    raise DataFileError(path, f"unreadable .npy array ({err}).") from None


def load_npz(
    path: PathLike,
    what: str = "array archive",
    *,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """Reads the arrays of a ``.npz`` archive without pickle.

  Each member is checked like a zip member (:func:`check_zip_member`) and like
  a ``.npy`` file before its array is allocated.

  Args:
    path: the archive.
    what: how the file is called if it is missing.
    names: read only these arrays (missing ones are left out); default all.

  Returns:
    ``{name: array}`` in archive order (names without ``.npy``).

  Raises:
    FileNotFoundError: the file is missing.
    DataFileError: not a zip archive, a member that is not a ``.npy`` array,
      an encrypted, oversized, truncated or damaged member (naming it).
  """
  path = existing_file(path, what)
  arrays = {}
  with open_zip(path) as archive:
    for info in archive.infolist():
      if info.is_dir() or (names is not None
                           and info.filename[:-4] not in names):
        continue
      name = info.filename
      if not name.endswith(".npy"):
        raise DataFileError(path, f"member {name!r} is not a .npy array.")
      size = check_zip_member(path, info)
      source = f"{path}[{name[:-4]}]"
      try:
        with archive.open(info) as handle:
          _npy_header(handle, size, source)
        with archive.open(info) as handle:
          arrays[name[:-4]] = np.lib.format.read_array(handle,
                                                       allow_pickle=False)
      except DataFileError:
        raise
      except _READ_ERRORS as err:
        raise DataFileError(path, f"cannot read member {name!r} ({err})."
                            ) from None
  return arrays


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


# ---------------------------------------------------------------------------
# Probabilities.


def normalize_probs(
    probs: np.ndarray,
    *,
    source: str,
    atol: float = 1e-3,
) -> np.ndarray:
  """Checks rows of probabilities and renormalises them to sum exactly to 1.

  Args:
    probs: ``[N, K]`` probabilities.
    source: file or array name for error messages.
    atol: largest accepted deviation of a row sum from 1.

  Returns:
    ``[N, K]`` float32 rows that sum to 1.

  Raises:
    ValueError: NaN/inf, negative values, or a row sum off by more than
      ``atol`` (naming the first bad row, 0-based).
  """
  p = np.asarray(probs, dtype=np.float64)
  if p.ndim != 2:
    raise ValueError(f"{source}: probabilities must be [N, K], got shape "
                     f"{p.shape}.")
  if not np.all(np.isfinite(p)):
    bad = int(np.argwhere(~np.isfinite(p))[0, 0])
    raise ValueError(f"{source}: probabilities contain NaN or inf (row {bad}).")
  if p.size and p.min() < 0.0:
    bad = int(np.argwhere(p < 0.0)[0, 0])
    raise ValueError(f"{source}: negative probability in row {bad}.")
  with np.errstate(over="ignore"):
    sums = p.sum(axis=1)
  off = np.abs(sums - 1.0)
  if off.size and off.max() > atol:
    bad = int(np.argmax(off))
    raise ValueError(
        f"{source}: probability rows must sum to 1 (tolerance {atol}); row "
        f"{bad} sums to {sums[bad]:.6g}.")
  return (p / sums[:, None]).astype(np.float32)


def normalize_scores(scores: np.ndarray, *, source: str) -> np.ndarray:
  """Divides non-negative class scores by their row sums (float32).

  Raises:
    ValueError: NaN/inf, negative values, or a row summing to 0 or to more
      than the largest float (naming the row, 0-based).
  """
  s = np.asarray(scores, dtype=np.float64)
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{source}: class scores contain NaN or inf.")
  if s.size and s.min() < 0.0:
    bad = int(np.argwhere(s < 0.0)[0, 0])
    raise ValueError(f"{source}: negative class score in row {bad}.")
  with np.errstate(over="ignore"):
    sums = s.sum(axis=1)
  if sums.size and sums.min() <= 0.0:
    raise ValueError(f"{source}: class scores of row {int(np.argmin(sums))} "
                     "sum to 0; cannot normalise.")
  if not np.all(np.isfinite(sums)):
    bad = int(np.argmin(np.isfinite(sums)))
    raise ValueError(f"{source}: class scores of row {bad} overflow when "
                     "summed; cannot normalise.")
  return (s / sums[:, None]).astype(np.float32)


def check_label_array(
    labels: np.ndarray,
    *,
    num_images: int,
    num_classes: int,
    source: str,
) -> np.ndarray:
  """Returns ``labels`` as ``[num_images]`` int32 after range checks.

  Float arrays are accepted when every value is integral (e.g. a label column
  written as ``3.0``).

  Raises:
    ValueError: wrong shape, non-integral values or labels out of range.
  """
  y = np.asarray(labels)
  if y.shape != (num_images,):
    raise ValueError(f"{source}: labels must have shape [{num_images}], got "
                     f"{y.shape}.")
  if np.issubdtype(y.dtype, np.floating):
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
      raise ValueError(f"{source}: labels must be integers.")
  elif not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{source}: labels must be integers, got dtype {y.dtype}.")
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    bad = int(np.argmax((y < 0) | (y >= num_classes)))
    raise ValueError(
        f"{source}: labels must lie in [0, {num_classes}); image {bad} has "
        f"label {y[bad]}.")
  return y.astype(np.int32)


# ---------------------------------------------------------------------------
# From one row per answer to padded annotations.


def _id_sort_key(name: str) -> tuple[int, int, str]:
  try:
    return (0, int(name), "")
  except ValueError:
    return (1, 0, name)


def sort_expert_names(names: Iterable[str]) -> tuple[str, ...]:
  """Unique names, integers in numeric order first, then other strings."""
  return tuple(sorted(set(names), key=_id_sort_key))


def resolve_duplicates(
    image: np.ndarray,
    expert: np.ndarray,
    *,
    duplicates: str,
    source: str,
) -> np.ndarray:
  """Indices of the answers to keep when an expert answered an image twice.

  Args:
    image: ``[n]`` image index of each answer, in source order.
    expert: ``[n]`` expert id of each answer.
    duplicates: ``"first"`` keeps the earliest answer of each (image,
      expert) pair, ``"last"`` the latest, ``"all"`` keeps every answer and
      ``"error"`` raises.
    source: file name for messages.

  Returns:
    Sorted ``[n_kept]`` indices into the inputs.

  Raises:
    ValueError: unknown policy, or a duplicate under ``"error"``.
  """
  if duplicates not in DUPLICATE_POLICIES:
    raise ValueError(f"`duplicates` must be one of {DUPLICATE_POLICIES}, got "
                     f"{duplicates!r}.")
  n = image.shape[0]
  if duplicates == "all" or n == 0:
    return np.arange(n)
  key = image.astype(np.int64) * (int(expert.max()) + 1) + expert
  if duplicates == "last":
    _, rev_first = np.unique(key[::-1], return_index=True)
    keep = n - 1 - rev_first
  else:
    _, keep = np.unique(key, return_index=True)
  if duplicates == "error" and keep.size < n:
    dup = np.setdiff1d(np.arange(n), keep)[0]
    raise ValueError(
        f"{source}: expert {int(expert[dup])} answered image "
        f"{int(image[dup])} more than once (pass duplicates='first', 'last' "
        "or 'all').")
  return np.sort(keep)


def build_annotations(
    image: np.ndarray,
    annotator: Sequence[str],
    answer: np.ndarray,
    *,
    num_images: int,
    num_classes: int,
    roster: Sequence[str] | None = None,
    expert_order: Sequence[str] | None = None,
    duplicates: str = "first",
    source: str,
) -> tuple[Annotations, tuple[str, ...]]:
  """Builds padded ``Annotations`` from one row per answer with named experts.

  Expert ids are assigned in :func:`sort_expert_names` order (or in
  ``expert_order``) over the experts that have at least one usable answer.
  Experts of ``roster`` (everyone seen in the source, e.g. before attention
  checks or a noise filter were applied) without any usable answer are
  excluded with a warning, following ``l2d_jax.experts.warn_unusable_experts``.

  Args:
    image: ``[n]`` image index of each answer.
    annotator: ``n`` annotator names.
    answer: ``[n]`` answered labels.
    num_images: size of the image pool N.
    num_classes: number of classes K.
    roster: all annotator names of the source; defaults to ``annotator``.
    expert_order: optional ordered list of every allowed annotator name; it
      fixes the expert ids and is also the roster.
    duplicates: policy for several answers of one expert on one image (see
      :func:`resolve_duplicates`).
    source: file name for messages.

  Returns:
    ``(annotations, expert_names)``.

  Raises:
    ValueError: images or answers out of range, or duplicates under
      ``"error"``.
  """
  image = np.asarray(image, dtype=np.int64).reshape(-1)
  answer = np.asarray(answer, dtype=np.int64).reshape(-1)
  annotator = list(annotator)
  if not image.shape[0] == len(annotator) == answer.shape[0]:
    raise ValueError(f"{source}: image, annotator and answer columns differ in "
                     "length.")
  if image.size and (image.min() < 0 or image.max() >= num_images):
    bad = int(np.argmax((image < 0) | (image >= num_images)))
    raise ValueError(f"{source}: annotation for image {image[bad]}, which is "
                     f"not in the pool of {num_images} images.")
  if answer.size and (answer.min() < 0 or answer.max() >= num_classes):
    bad = int(np.argmax((answer < 0) | (answer >= num_classes)))
    raise ValueError(f"{source}: answer {answer[bad]} is not a label in "
                     f"[0, {num_classes}).")
  names = sort_expert_names(annotator)
  if expert_order is not None:
    order = list(expert_order)
    if len(set(order)) != len(order):
      raise ValueError(f"{source}: expert names must be unique.")
    unknown = set(names) - set(order)
    if unknown:
      raise ValueError(f"{source}: annotators {sorted(unknown)[:3]} are not in "
                       "the list of experts.")
    present = set(names)
    names = tuple(name for name in order if name in present)
    roster = order
  if roster is not None:
    unusable = set(roster) - set(names)
    if unusable:
      warnings.warn(
          f"{source}: {len(unusable)} of {len(set(roster))} annotators have "
          "no usable answers and are excluded (e.g. "
          f"{sorted(unusable, key=_id_sort_key)[:3]}).", stacklevel=3)
  index = {name: j for j, name in enumerate(names)}
  expert = np.fromiter(map(index.__getitem__, annotator), dtype=np.int64,
                       count=len(annotator))
  keep = resolve_duplicates(image, expert, duplicates=duplicates,
                            source=source)
  annotations = Annotations.from_long(
      image[keep].astype(np.int32), expert[keep].astype(np.int32),
      answer[keep].astype(np.int32), num_images=num_images,
      num_experts=len(names), num_classes=num_classes)
  return annotations, names


def labels_from_answers(
    image: np.ndarray,
    truth: np.ndarray,
    *,
    num_images: int,
    labels: np.ndarray | None,
    source: str,
) -> np.ndarray:
  """Per-image true labels from a per-answer truth column.

  Args:
    image: ``[n]`` image index of each answer.
    truth: ``[n]`` true label recorded with each answer.
    num_images: N.
    labels: optional ``[N]`` labels of the whole pool; when given, the truth
      column must agree with it.
    source: file name for messages.

  Returns:
    ``[N]`` int32 labels.

  Raises:
    ValueError: one image with two different true labels, a disagreement
      with ``labels``, or (without ``labels``) images with no answer.
  """
  image = np.asarray(image, dtype=np.int64)
  truth = np.asarray(truth, dtype=np.int64)
  out = np.full(num_images, -1, np.int64)
  out[image] = truth
  clash = out[image] != truth
  if np.any(clash):
    bad = int(image[np.argmax(clash)])
    raise ValueError(f"{source}: image {bad} is recorded with two different "
                     "true labels.")
  if labels is not None:
    ref = np.asarray(labels)
    wrong = ref[image] != truth
    if np.any(wrong):
      k = int(np.argmax(wrong))
      raise ValueError(
          f"{source}: true label {truth[k]} of image {image[k]} disagrees with "
          f"the given labels ({ref[image[k]]}); {int(wrong.sum())} answers "
          "disagree.")
    return ref.astype(np.int32)
  missing = np.flatnonzero(out < 0)
  if missing.size:
    raise ValueError(
        f"{source}: {missing.size} of {num_images} images have no answer, so "
        f"their true label is unknown (e.g. image {missing[0]}); pass "
        "`labels` for the whole pool.")
  return out.astype(np.int32)
