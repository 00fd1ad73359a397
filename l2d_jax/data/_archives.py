"""Zip archives and ``.npy``/``.npz`` arrays, read with bounds and without pickle.

- zip members are refused when encrypted or when they would inflate beyond
  :data:`MAX_ZIP_MEMBER_BYTES` or :data:`MAX_ZIP_RATIO`, and are never read
  past their declared size (:func:`check_zip_member`, :func:`read_zip_member`);
- ``.npy``/``.npz`` arrays are checked to be complete before they are
  allocated (:func:`load_npy`, :func:`load_npz`).

Every failure is a :class:`~l2d_jax.data.DataFileError` naming the file (and
the member).
"""

from __future__ import annotations

import math
import os
import pathlib
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from l2d_jax.data._file_errors import DataFileError
from l2d_jax.data._file_errors import PathLike
from l2d_jax.data._file_errors import existing_file

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
# What reading a damaged file can raise besides DataFileError.
_READ_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile,
                zipfile.LargeZipFile, zlib.error, RuntimeError,
                NotImplementedError, OverflowError, MemoryError)


def set_zip_limits(*, max_member_bytes: int | None = None,
                   max_ratio: int | None = None) -> tuple[int, int]:
  """Sets the zip-bomb guards every loader uses (``None`` keeps a limit).

  Args:
    max_member_bytes: largest inflated size of one zip member, in bytes (>= 1).
    max_ratio: largest inflated/compressed ratio of a member above 16 MiB (>= 1).

  Returns:
    The previous ``(max_member_bytes, max_ratio)``, to restore them.

  Raises:
    ValueError: a limit that is not a positive integer.
  """
  global MAX_ZIP_MEMBER_BYTES, MAX_ZIP_RATIO
  previous = (MAX_ZIP_MEMBER_BYTES, MAX_ZIP_RATIO)
  for name, value in (("max_member_bytes", max_member_bytes),
                      ("max_ratio", max_ratio)):
    if value is not None and (isinstance(value, bool) or
                              not isinstance(value, (int, np.integer))
                              or value < 1):
      raise ValueError(f"`{name}` must be a positive integer or None, got "
                       f"{value!r}.")
  if max_member_bytes is not None:
    MAX_ZIP_MEMBER_BYTES = int(max_member_bytes)
  if max_ratio is not None:
    MAX_ZIP_RATIO = int(max_ratio)
  return previous


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
