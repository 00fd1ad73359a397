"""Result writing shared by the experiments.

``write_json`` / ``write_text`` / ``save_figure`` replace one file atomically
(for files a resumable run rewrites as it goes, e.g. ``progress.json``); they
are ``l2d_jax.io``'s, re-exported here with ``to_json`` and ``round_floats``.
``OutputSet`` writes a run's whole output set -- results, details, tables,
plots -- so that a run killed at any moment never leaves a new ``results.json``
beside an old ``details.json``, table or plot, nor stale temporaries::

  with _io.OutputSet(out, owns=("results.json", "details.json", "*.png")) as o:
    o.write_json("results.json", results)
    o.save_figure(fig, "accuracy.png")
  # Here `out` holds the new set; entries not matching `owns` were carried over.

Only one run may write a given output folder at a time.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import secrets
import shutil
from typing import Any, Callable, Iterable

from l2d_jax.io import SIGNIFICANT_DIGITS  # noqa: F401  (re-exported)
from l2d_jax.io import atomic_write
from l2d_jax.io import round_floats
from l2d_jax.io import save_figure
from l2d_jax.io import to_json
from l2d_jax.io import write_json
from l2d_jax.io import write_text

__all__ = [
    "OutputSet",
    "recover_output_dir",
    "round_floats",
    "save_figure",
    "to_json",
    "write_json",
    "write_text",
]

# ---------------------------------------------------------------------------
# Output sets.
#
# Siblings of `out` (all named ".<out name>.<kind>-<token>"):
#   staging  .N.tmp-T        the new set being written;
#   journal  .N.swap-T.json  written once staging is complete (the commit
#                            point): which entries of the old `out` to carry;
#   old      .N.old-T        the old `out` while the new one is swapped in.
# Commit: journal; rename out -> old; move carried entries old -> staging;
# rename staging -> out; remove old; remove journal. A run killed before the
# journal exists leaves `out` untouched (its staging is removed at the next
# start); after, the next start finishes the swap from the journal. Either way
# `out` holds one complete set.


def _sibling(out: pathlib.Path, kind: str, token: str) -> pathlib.Path:
  suffix = ".json" if kind == "swap" else ""
  return out.parent / f".{out.name}.{kind}-{token}{suffix}"


def _stale_tokens(out: pathlib.Path) -> list[str]:
  """Tokens of the siblings of ``out`` left by runs; removes half journals."""
  if not out.parent.is_dir():
    return []
  prefix = f".{out.name}."
  tokens = set()
  for entry in os.listdir(out.parent):
    if entry.startswith("." + prefix + "swap-") and entry.endswith(".tmp"):
      _remove(out.parent / entry)  # A journal whose atomic write was killed.
      continue
    if not entry.startswith(prefix):
      continue
    kind, _, token = entry[len(prefix):].partition("-")
    if kind == "swap" and token.endswith(".json"):
      token = token[:-len(".json")]
    elif kind not in ("tmp", "old"):
      continue
    if token:
      tokens.add(token)
  return sorted(tokens)


def _remove(path: pathlib.Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  elif path.exists() or path.is_symlink():
    path.unlink(missing_ok=True)


def _finish_swap(out: pathlib.Path, token: str, carry: Iterable[str]) -> None:
  """Steps after the journal; each is idempotent, so a rerun completes them."""
  staging = _sibling(out, "tmp", token)
  old = _sibling(out, "old", token)
  if staging.exists():
    if out.exists() and not old.exists():
      os.rename(out, old)
    if old.exists():
      for name in carry:
        if (old / name).exists() or (old / name).is_symlink():
          if not ((staging / name).exists() or (staging / name).is_symlink()):
            os.rename(old / name, staging / name)
    os.rename(staging, out)
  _remove(old)
  _remove(_sibling(out, "swap", token))


def recover_output_dir(out: str | os.PathLike) -> None:
  """Resolves what killed runs left beside and in ``out``.

  A swap whose journal was written is finished (the killed run's complete set
  becomes ``out``, carried entries included); an unfinished staging folder is
  removed (``out`` keeps its old set); stale ``.*.tmp`` files of atomic writes
  in ``out`` are removed. ``OutputSet`` calls this when it starts.
  """
  out = pathlib.Path(os.path.realpath(out))
  for token in _stale_tokens(out):
    journal = _sibling(out, "swap", token)
    if journal.exists():
      carry = json.loads(journal.read_text())["carry"]
      _finish_swap(out, token, carry)
    else:
      _remove(_sibling(out, "tmp", token))
      old = _sibling(out, "old", token)
      if old.exists() and not out.exists():  # Not reachable by a commit.
        os.rename(old, out)
      _remove(old)
  if out.is_dir():
    for entry in os.listdir(out):
      if entry.startswith(".") and entry.endswith(".tmp"):
        _remove(out / entry)


class OutputSet:
  """Writes a run's output set beside ``out`` and swaps it in at the end.

  Used as a context manager: leaving the block normally swaps the new set in;
  an exception leaves ``out`` as it was and removes the temporary folder; a
  run killed at any moment leaves ``out`` with either the old or the new
  complete set once the next ``OutputSet`` (or ``recover_output_dir``) for it
  has started. Entries of the old ``out`` that do not match ``owns`` --
  checkpoints, ``progress.json``, other runs' outputs, a user's notes -- are
  carried over into the new ``out`` unless the new set has an entry of the same
  name; entries that match ``owns`` are replaced (dropped if the new set lacks
  them, so no stale plot of an earlier run stays behind).

  Args:
    out: the output folder (created at the swap if missing).
    owns: glob patterns (``fnmatch``, on top-level names) of the entries this
      run writes, or a predicate on a top-level name. Required, so that a
      caller decides what survives: ``("*",)`` replaces the whole folder.
  """

  def __init__(self, out: str | os.PathLike, *,
               owns: Iterable[str] | Callable[[str], bool]):
    self.out = pathlib.Path(os.path.realpath(out))
    if callable(owns):
      self._owns = owns
    else:
      patterns = tuple(owns)
      self._owns = lambda n: any(fnmatch.fnmatchcase(n, p) for p in patterns)
    self._token = None
    self.staging = None

  def __enter__(self) -> "OutputSet":
    self.out.parent.mkdir(parents=True, exist_ok=True)
    recover_output_dir(self.out)
    self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
    self.staging = _sibling(self.out, "tmp", self._token)
    self.staging.mkdir()
    return self

  def path(self, name: str) -> pathlib.Path:
    """Where to write ``name`` (relative to ``out``) in the new set."""
    if self.staging is None:
      raise RuntimeError("use the OutputSet in a `with` block.")
    p = self.staging / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p

  def write_json(self, name: str, obj: Any, **kwargs) -> pathlib.Path:
    """Writes ``obj`` as JSON (``to_json``) into the new set."""
    p = self.path(name)
    p.write_text(to_json(obj, **kwargs))
    return self.out / name

  def write_text(self, name: str, text: str) -> pathlib.Path:
    """Writes ``text`` into the new set."""
    self.path(name).write_text(text)
    return self.out / name

  def save_figure(self, fig, name: str) -> pathlib.Path:
    """Saves a matplotlib figure as PNG into the new set."""
    fig.savefig(self.path(name), format="png", dpi=120, bbox_inches="tight")
    return self.out / name

  def commit(self) -> None:
    """Swaps the new set in (``__exit__`` calls it)."""
    carry = []
    if self.out.is_dir():
      carry = sorted(n for n in os.listdir(self.out)
                     if not self._owns(n)
                     and not (n.startswith(".") and n.endswith(".tmp")))
    _fsync_tree(self.staging)
    journal = _sibling(self.out, "swap", self._token)
    data = json.dumps({"carry": carry}).encode()
    atomic_write(journal, lambda f: f.write(data))
    try:
      _finish_swap(self.out, self._token, carry)
    except Exception:  # pylint: disable=broad-except
      try:  # E.g. a transient error: the journal lets us finish it now.
        recover_output_dir(self.out)
      except Exception:  # pylint: disable=broad-except
        pass  # The next start finishes it.
      raise
    self.staging = None

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.commit()
    elif self.staging is not None:  # Nothing was swapped: `out` is intact.
      _remove(self.staging)
      self.staging = None


def _fsync_tree(root: pathlib.Path) -> None:
  """Flushes the new files, so the swap never exposes unwritten data."""
  for d, _, files in os.walk(root):
    for f in files:
      fd = os.open(os.path.join(d, f), os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
