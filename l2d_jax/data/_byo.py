"""Bring your own data: a small directory format for any annotated pool.

A directory holds:

- ``labels.npy``: ``[N]`` integer true labels in ``[0, K)`` (required).
- ``annotations.csv``: header ``image,annotator,answer``; one row per human
  answer: ``image`` an integer index into the N images, ``annotator`` any
  string id, ``answer`` an integer label (required; may have no rows).
- ``probs.npy``: ``[N, K]`` model probabilities, rows summing to 1 within
  1e-3 (optional).
- ``meta.json``: optional object with ``name`` (str), ``class_names`` (K
  strings), ``expert_names`` (every annotator id, in expert-id order) and
  ``files`` (see below).
- ``extras.npz``: optional further ``[N, ...]`` arrays (no pickled objects).

K is taken from ``probs.npy`` or ``meta.json``'s ``class_names`` (one of the
two must be present). Arrays are read with ``allow_pickle=False``.
:func:`save_byo` writes any :class:`AnnotatedDataset` in this format, so a
loaded data set can be converted once and shared.

Integrity: :func:`save_byo` writes the whole directory next to its target
and renames it into place, so a crash leaves the previous directory (or
none), never a mix; and it records in ``meta.json``'s ``files`` the size, the
SHA-256 digest and the number of rows of every data file, e.g.
``"files": {"annotations.csv": {"bytes": 51, "sha256": "9f2c...", "rows":
3}, ...}``. :func:`load_byo` then refuses a directory whose files do not
match (truncated, corrupted or edited since). The format stays writable by
hand: without ``meta.json``, or without its ``files`` entry, the files are
read unchecked (remove ``files`` after editing a saved directory by hand).

Example::

  labels.npy         array([3, 8, 8])
  annotations.csv    image,annotator,answer
                     0,alice,3
                     0,bob,5
                     2,alice,8
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import io
import json
import os
import pathlib
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from l2d_jax.data import _common

_COLUMNS = ("image", "annotator", "answer")
# Data files in reading order; meta.json's "files" may list exactly these.
_DATA_FILES = ("labels.npy", "annotations.csv", "probs.npy", "extras.npz")
_META = "meta.json"


# ---------------------------------------------------------------------------
# Checksums.


def _digest(path: pathlib.Path) -> tuple[int, str]:
  """``(size in bytes, hex SHA-256)`` of a file."""
  with open(path, "rb") as handle:
    digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return os.fstat(handle.fileno()).st_size, digest


def _recorded_files(meta: Mapping[str, Any],
                    meta_path: pathlib.Path) -> dict[str, dict] | None:
  """The checked ``files`` entry of ``meta.json`` (None when absent)."""
  files = meta.get("files")
  if files is None:
    return None
  if not isinstance(files, dict):
    raise _common.DataFileError(meta_path, "'files' must be an object of file "
                                "name -> {bytes, sha256, rows}.")
  for name, entry in files.items():
    if name not in _DATA_FILES:
      raise _common.DataFileError(meta_path, f"'files' lists {name!r}, which "
                                  f"is not one of {_DATA_FILES}.")
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    ok = (isinstance(digest, str) and len(digest) == 64
          and all(c in "0123456789abcdef" for c in digest))
    for key in ("bytes", "rows"):
      value = entry.get(key, 0) if isinstance(entry, dict) else None
      ok = ok and isinstance(value, int) and not isinstance(
          value, bool) and value >= 0
    if not ok:
      raise _common.DataFileError(
          meta_path, f"'files'[{name!r}] must be an object with 'bytes' (int"
          " >= 0), 'sha256' (64 lowercase hex digits) and optionally 'rows' "
          f"(int >= 0), got {str(entry)[:120]}.")
  return files


def _verify_files(directory: pathlib.Path, files: Mapping[str, dict],
                  meta_path: pathlib.Path) -> None:
  """Checks presence, size and SHA-256 of every data file against meta.json."""
  hint = (f"the file was truncated, corrupted or changed after save_byo; if "
          f"you edited it on purpose, delete 'files' from {meta_path}.")
  for name in _DATA_FILES:
    path = directory / name
    entry = files.get(name)
    if entry is None:
      if path.exists():
        raise _common.DataFileError(
            path, f"present but not listed in 'files' of {meta_path}, so it "
            "cannot be checked; delete it, or delete 'files' from meta.json "
            "to read the directory unchecked.")
      continue
    if not path.is_file():
      raise FileNotFoundError(f"{path}: listed in 'files' of {meta_path} but "
                              "missing.")
    size, digest = _digest(path)
    if size != entry["bytes"]:
      raise _common.DataFileError(
          path, f"holds {size} bytes but {meta_path} records {entry['bytes']}; "
          + hint)
    if digest != entry["sha256"]:
      raise _common.DataFileError(
          path, f"SHA-256 {digest[:16]}... differs from the "
          f"{entry['sha256'][:16]}... recorded in {meta_path}; " + hint)


def _check_rows(files: Mapping[str, dict] | None, name: str, rows: int,
                path: pathlib.Path, meta_path: pathlib.Path) -> None:
  recorded = None if files is None else files.get(name, {}).get("rows")
  if recorded is not None and recorded != rows:
    raise _common.DataFileError(path, f"holds {rows} rows but {meta_path} "
                                f"records {recorded}.")


# ---------------------------------------------------------------------------
# Loading.


def load_byo(
    directory: _common.PathLike,
    *,
    duplicates: str = "first",
) -> _common.AnnotatedDataset:
  """Loads a data set in the bring-your-own format (see module doc).

  When ``meta.json`` has a ``files`` entry (as :func:`save_byo` writes it),
  every data file must be listed there and match its recorded size, SHA-256
  digest and row count before anything is parsed. A directory written by
  hand, without ``meta.json`` or without ``files``, is read unchecked.

  Args:
    directory: the data set directory.
    duplicates: ``"first"`` (default), ``"last"``, ``"all"`` or ``"error"``
      for several answers of one annotator on one image.

  Returns:
    ``AnnotatedDataset``; expert ids follow ``meta.json``'s ``expert_names``
    when given, else the sorted annotator ids (integers numerically).

  Raises:
    FileNotFoundError: ``labels.npy`` or ``annotations.csv`` is missing, or a
      file listed in ``meta.json``'s ``files`` is.
    DataFileError: (a ``ValueError``) a file that differs from its recorded
      size, checksum or row count, a data file not listed in ``files``, or
      an unreadable, truncated, pickled or non-UTF-8 file; each names the
      file.
    ValueError: malformed rows (naming file and line), labels or answers out
      of range, images outside ``[0, N)``, probabilities not summing to 1, or
      an inconsistent ``meta.json``.
  """
  directory = pathlib.Path(directory)
  meta: dict = {}
  meta_path = directory / _META
  if meta_path.exists():
    meta = _common.read_json(meta_path, _META)
    if not isinstance(meta, dict):
      raise _common.DataFileError(meta_path, "expected a JSON object.")
  files = _recorded_files(meta, meta_path)
  if files is not None:
    _verify_files(directory, files, meta_path)
  labels_path = directory / "labels.npy"
  labels = _common.load_npy(labels_path, "labels file")
  if labels.ndim != 1:
    raise _common.DataFileError(labels_path, "labels must be [N], got shape "
                                f"{labels.shape}.")
  num_images = labels.shape[0]
  _check_rows(files, "labels.npy", num_images, labels_path, meta_path)

  probs = None
  probs_path = directory / "probs.npy"
  if probs_path.exists():
    raw = _common.load_npy(probs_path, "probabilities file")
    if raw.ndim != 2 or raw.shape[0] != num_images:
      raise _common.DataFileError(probs_path, "probabilities must be [N, K] "
                                  f"with N={num_images}, got shape "
                                  f"{raw.shape}.")
    probs = _common.normalize_probs(raw, source=str(probs_path))
  class_names = meta.get("class_names")
  if class_names is not None:
    if not (isinstance(class_names, list) and all(
        isinstance(c, str) for c in class_names)):
      raise _common.DataFileError(meta_path, "'class_names' must be a list of "
                                  "strings.")
    class_names = tuple(class_names)
    if probs is not None and probs.shape[1] != len(class_names):
      raise _common.DataFileError(
          meta_path, f"{len(class_names)} class names but {probs_path} has "
          f"{probs.shape[1]} classes.")
  elif probs is not None:
    class_names = tuple(str(k) for k in range(probs.shape[1]))
  else:
    raise ValueError(f"{directory}: the number of classes is unknown; add "
                     "probs.npy or 'class_names' in meta.json.")
  num_classes = len(class_names)
  labels = _common.check_label_array(labels, num_images=num_images,
                                     num_classes=num_classes,
                                     source=str(labels_path))
  expert_order = meta.get("expert_names")
  if expert_order is not None and not (isinstance(expert_order, list) and all(
      isinstance(e, str) for e in expert_order)):
    raise _common.DataFileError(meta_path, "'expert_names' must be a list of "
                                "strings.")

  allowed = None if expert_order is None else frozenset(expert_order)
  ann_path = directory / "annotations.csv"
  columns, lines = _common.read_csv(ann_path, required=_COLUMNS,
                                    what="annotations file")
  _check_rows(files, "annotations.csv", len(lines), ann_path, meta_path)
  image = _common.int_column(columns["image"], lines, path=ann_path,
                             column="image")
  answer = _common.int_column(columns["answer"], lines, path=ann_path,
                              column="answer")
  bad = (image < 0) | (image >= num_images)
  if np.any(bad):
    k = int(np.argmax(bad))
    raise _common.row_error(ann_path, lines[k], f"image {image[k]} is not in "
                            f"the pool of {num_images} images.")
  bad = (answer < 0) | (answer >= num_classes)
  if np.any(bad):
    k = int(np.argmax(bad))
    raise _common.row_error(ann_path, lines[k], f"answer {answer[k]} is not a "
                            f"label in [0, {num_classes}).")
  annotator = _common.strip_all(columns["annotator"])
  if "" in annotator:
    raise _common.row_error(ann_path, lines[annotator.index("")],
                            "empty 'annotator'.")
  if allowed is not None:
    for who, line in zip(annotator, lines.tolist()):
      if who not in allowed:
        raise _common.row_error(ann_path, line, f"annotator {who!r} is not in "
                                f"'expert_names' of {meta_path}.")
  annotations, names = _common.build_annotations(
      image, annotator, answer,
      num_images=num_images, num_classes=num_classes,
      expert_order=expert_order, duplicates=duplicates, source=str(ann_path))

  extras = {}
  extras_path = directory / "extras.npz"
  if extras_path.exists():
    extras = _common.load_npz(extras_path, "extras file")
  return _common.AnnotatedDataset(
      probs=probs, labels=labels, annotations=annotations,
      class_names=class_names, expert_names=names,
      name=str(meta.get("name", directory.name)), extras=extras)


# ---------------------------------------------------------------------------
# Saving.


def _write_file(path: pathlib.Path, write: Callable[[BinaryIO], object]) -> None:
  """Creates ``path``, lets ``write`` fill it and flushes it to disk."""
  with open(path, "xb") as handle:
    write(handle)
    handle.flush()
    os.fsync(handle.fileno())


def _fsync_directory(path: pathlib.Path) -> None:
  """Makes renames inside ``path`` durable (a no-op where unsupported)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
  """Atomically swaps two directories (Linux ``renameat2``); False if unable."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError, TypeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                   rename_exchange) == 0


def _replace_directory(new: pathlib.Path, target: pathlib.Path) -> None:
  """Puts the complete directory ``new`` at ``target``, replacing it.

  An existing ``target`` is swapped atomically where the system can; else it
  is renamed aside first, so that a crash in between leaves no ``target``
  but never a partial one. ``new`` is gone afterwards.
  """
  if not os.path.lexists(target):
    os.rename(new, target)
  elif _exchange(new, target):
    shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old one.
  else:
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.rename(target, old)
    try:
      os.rename(new, target)
    except BaseException:
      os.rename(old, target)
      raise
    shutil.rmtree(old, ignore_errors=True)
  _fsync_directory(target.parent)


def _check_target(directory: pathlib.Path) -> None:
  if os.path.lexists(directory) and not directory.is_dir():
    raise FileExistsError(f"{directory} exists and is not a directory.")
  if directory.is_dir():
    other = sorted(p.name for p in directory.iterdir()
                   if p.name not in (*_DATA_FILES, _META))
    if other:
      raise FileExistsError(
          f"{directory} holds files that are not part of a bring-your-own "
          f"data set ({other[:5]}); save_byo replaces the whole directory, so "
          "choose a new directory or one written by save_byo.")


def _write_annotations(handle: BinaryIO, dataset: _common.AnnotatedDataset
                       ) -> int:
  image, expert, answer = dataset.annotations.to_long()
  text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
  writer = csv.writer(text)
  writer.writerow(_COLUMNS)
  writer.writerows(zip(image.tolist(),
                       map(dataset.expert_names.__getitem__, expert.tolist()),
                       answer.tolist()))
  text.flush()
  text.detach()
  return len(image)


def save_byo(
    dataset: _common.AnnotatedDataset,
    directory: _common.PathLike,
) -> pathlib.Path:
  """Writes ``dataset`` in the bring-your-own format (see module doc).

  Masked-out answers are not written. ``load_byo`` on the result gives back
  the same probabilities (renormalised float32), labels, answers, class and
  expert names.

  The files are written to a temporary directory next to ``directory``
  (``.<name>.<random>.tmp``), flushed to disk and renamed into place; an
  existing ``directory`` is swapped out and deleted. A crash or kill leaves
  either the previous complete directory or, for a kill during the final
  swap on systems without an atomic directory exchange, none (the new and
  the old copies then sit in hidden ``.<name>.*`` siblings); never a
  partially written one. ``meta.json`` records the size, SHA-256 digest and
  row count of every data file, which :func:`load_byo` verifies.

  Args:
    dataset: the data set to write.
    directory: target directory; created, or replaced as a whole if it
      exists and holds only files of this format.

  Returns:
    The directory as a ``Path``.

  Raises:
    FileExistsError: ``directory`` is a file, or holds other files.
    ValueError: an ``extras`` array of Python objects (not storable without
      pickle).

  Example:
    >>> save_byo(load_cifar10s(data_dir), "/tmp/cifar10s_byo")  # doctest: +SKIP
    >>> load_byo("/tmp/cifar10s_byo").num_experts  # doctest: +SKIP
    248
  """
  directory = pathlib.Path(directory)
  target = pathlib.Path(os.path.abspath(directory))  # also for "." or "a/.."
  _check_target(target)
  extras = {key: np.asarray(value) for key, value in dataset.extras.items()}
  for key, value in extras.items():
    if value.dtype.hasobject:
      raise ValueError(f"`dataset.extras[{key!r}]` holds Python objects "
                       "(dtype object), which cannot be saved without pickle.")
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent,
                                      prefix=f".{target.name}.", suffix=".tmp"))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates it private (0700).
    rows = {"labels.npy": int(dataset.labels.shape[0])}
    labels = np.asarray(dataset.labels, np.int64)
    _write_file(tmp / "labels.npy",
                lambda f: np.save(f, labels, allow_pickle=False))
    if dataset.probs is not None:
      probs = np.asarray(dataset.probs, np.float32)
      _write_file(tmp / "probs.npy",
                  lambda f: np.save(f, probs, allow_pickle=False))
      rows["probs.npy"] = int(probs.shape[0])
    counted = []
    _write_file(tmp / "annotations.csv",
                lambda f: counted.append(_write_annotations(f, dataset)))
    rows["annotations.csv"] = counted[0]
    if extras:
      _write_file(tmp / "extras.npz", lambda f: np.savez(f, **extras))
    files = {}
    for name in _DATA_FILES:
      if (tmp / name).exists():
        size, digest = _digest(tmp / name)
        files[name] = {"bytes": size, "sha256": digest}
        if name in rows:
          files[name]["rows"] = rows[name]
    meta = {"name": dataset.name, "class_names": list(dataset.class_names),
            "expert_names": list(dataset.expert_names), "files": files}
    text = json.dumps(meta, indent=1) + "\n"
    _write_file(tmp / _META, lambda f: f.write(text.encode("utf-8")))
    _fsync_directory(tmp)
    _replace_directory(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory
