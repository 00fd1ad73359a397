"""Orbax checkpoint layout of the trainer, integrity checks, loading models.

Layout of ``checkpoint_dir``::

  checkpoint_dir/
    ckpt/<epoch>/state   model + optimizer state (nnx.State, StandardSave)
    ckpt/<epoch>/best    best model state so far (only when monitoring)
    ckpt/<epoch>/meta    JSON: epoch, step, history, early-stopping status
    ckpt/<epoch>/_L2D_CHECKSUMS.json   size and sha256 of every file above
    best/<epoch>/model   the best model state (kept: 1), for inference
    best/<epoch>/_L2D_CHECKSUMS.json
    corrupt/             checkpoints that failed their check, moved aside
    metrics.jsonl        one JSON record per completed epoch

``<epoch>`` is the number of completed epochs. Saves are synchronous; once
orbax has finalised a step directory, the size and SHA-256 of each of its
files are written (atomically) to ``_L2D_CHECKSUMS.json`` inside it.

Several processes (``jax.distributed``) share one directory: every process
calls save and restore (orbax's multi-process protocol writes each array
once and finalises the step on process 0); process 0 alone writes the
checksums and moves corrupt steps aside, and the processes wait for each
other (a barrier) before anyone reads what it wrote. A step is finalised by
an atomic rename only after every process has written its part, so killing
any process mid-save leaves the previous step as the newest intact one.

Restoring verifies these checksums first. A training checkpoint that fails
(overwritten bytes, truncated, missing or extra files) is never restored: the
trainer warns, moves it to ``corrupt/`` and resumes from the newest intact
earlier step (it replays the lost epochs), or raises :class:`CheckpointError`
naming every step when none is intact. Checkpoints written before checksums
existed (no ``_L2D_CHECKSUMS.json``) are restored as they are, with one
warning per directory that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from l2d_jax.distributed import _runtime as _dist

CHECKSUM_FILE = "_L2D_CHECKSUMS.json"
_CHUNK = 1 << 20
_OK, _UNVERIFIED, _CORRUPT = "ok", "unverified", "corrupt"
# Directories already warned about (one warning per process and directory).
_WARNED_UNVERIFIED: set[str] = set()


class CheckpointError(RuntimeError):
  """A checkpoint directory is missing, corrupt or does not fit the model."""


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _strip_values(tree: Any) -> Any:
  """Removes the ``{'value': leaf}`` layers of a raw restored ``nnx.State``."""
  if isinstance(tree, dict):
    if set(tree) == {"value"} and not isinstance(tree["value"], dict):
      return tree["value"]
    return {k: _strip_values(v) for k, v in tree.items()}
  return tree


def _shardings(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.sharding, tree)


def _has_entries(path: pathlib.Path) -> bool:
  return path.is_dir() and any(path.iterdir())


# ------------------------------------------------------------ checksums ----


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _data_files(step_dir: pathlib.Path) -> list[str]:
  """Relative POSIX paths of every file of a step, except the checksums."""
  out = []
  for parent, _, names in os.walk(step_dir):
    for name in names:
      rel = pathlib.Path(parent, name).relative_to(step_dir).as_posix()
      if not rel.startswith(CHECKSUM_FILE):  # also its temporary file
        out.append(rel)
  return sorted(out)


def _fsync_dir(path: pathlib.Path) -> None:
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


def write_checksums(step_dir: str | os.PathLike[str]) -> None:
  """Records the size and SHA-256 of every file of a finalised step.

  Written to a temporary file, flushed and renamed, so the checksum file is
  either absent or complete. Call only after the save has finished.
  """
  step_dir = pathlib.Path(step_dir)
  files = {}
  for rel in _data_files(step_dir):
    path = step_dir / rel
    files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
  record = {"format": 1, "algorithm": "sha256", "files": files}
  tmp = step_dir / (CHECKSUM_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, step_dir / CHECKSUM_FILE)
  _fsync_dir(step_dir)


def verify_checksums(step_dir: str | os.PathLike[str]) -> tuple[str, str]:
  """Checks a step directory against its checksum file.

  Returns:
    ``(status, detail)``: ``('ok', '')``; ``('unverified', '')`` when the
    step has no checksum file (written before checksums existed, or killed
    between orbax's commit and the checksum write); or ``('corrupt',
    reason)`` naming the first files that differ.
  """
  step_dir = pathlib.Path(step_dir)
  if not step_dir.is_dir():
    return _CORRUPT, f"{step_dir} is not a directory"
  path = step_dir / CHECKSUM_FILE
  if not path.exists():
    return _UNVERIFIED, ""
  try:
    record = json.loads(path.read_text(encoding="utf-8"))
    files = record["files"]
    if record.get("algorithm") != "sha256" or not isinstance(files, dict):
      raise ValueError("unknown checksum format")
    expected = {str(rel): (int(v["size"]), str(v["sha256"]))
                for rel, v in files.items()}
  except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
          AttributeError) as e:
    return _CORRUPT, f"unreadable {CHECKSUM_FILE} ({type(e).__name__}: {e})"
  problems = []
  try:
    present = set(_data_files(step_dir))
    for rel, (size, sha) in sorted(expected.items()):
      parts = pathlib.PurePosixPath(rel).parts
      if rel.startswith("/") or ".." in parts:
        problems.append(f"{rel}: path outside the step")
      elif rel not in present:
        problems.append(f"{rel} is missing")
      elif (got := (step_dir / rel).stat().st_size) != size:
        problems.append(f"{rel} has {got} bytes, {size} were written")
      elif _sha256(step_dir / rel) != sha:
        problems.append(f"{rel} does not match its SHA-256")
    problems += [f"unexpected file {rel}"
                 for rel in sorted(present - set(expected))]
  except OSError as e:
    problems.append(f"{type(e).__name__}: {e}")
  if not problems:
    return _OK, ""
  more = len(problems) - 3
  return _CORRUPT, "; ".join(problems[:3]) + (
      f" (and {more} more)" if more > 0 else "")


def _warn_unverified(step_dir: pathlib.Path) -> None:
  key = str(step_dir.parent)
  if key in _WARNED_UNVERIFIED:
    return
  _WARNED_UNVERIFIED.add(key)
  warnings.warn(
      f"checkpoint {step_dir} has no {CHECKSUM_FILE} (written before "
      "checkpoints were checksummed, or interrupted right after orbax "
      "committed it): it cannot be verified and is restored as it is.",
      UserWarning, stacklevel=3)


def _newest_usable(directory: pathlib.Path, steps: Any
                   ) -> tuple[int | None, list[tuple[int, str]]]:
  """Newest step that is not corrupt, and the corrupt newer steps skipped."""
  skipped = []
  for step in sorted(steps, reverse=True):
    status, detail = verify_checksums(directory / str(step))
    if status == _CORRUPT:
      skipped.append((step, detail))
      continue
    if status == _UNVERIFIED:
      _warn_unverified(directory / str(step))
    return step, skipped
  return None, skipped


def _describe(directory: pathlib.Path, skipped: list[tuple[int, str]]) -> str:
  return "; ".join(f"{directory / str(s)}: {d}" for s, d in skipped)


class CheckpointStore:
  """The trainer's orbax checkpoint managers (internal).

  Args:
    directory: root directory (see the module docstring for the layout).
    max_to_keep: number of recent training checkpoints to keep.
  """

  def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int):
    if max_to_keep < 1:
      raise ValueError(f"`max_to_keep` must be >= 1, got {max_to_keep}.")
    self.root = pathlib.Path(directory).absolute()
    self._max_to_keep = max_to_keep
    self._ckpt: ocp.CheckpointManager | None = None
    self._best: ocp.CheckpointManager | None = None

  @property
  def ckpt_dir(self) -> pathlib.Path:
    return self.root / "ckpt"

  @property
  def best_dir(self) -> pathlib.Path:
    return self.root / "best"

  @property
  def corrupt_dir(self) -> pathlib.Path:
    return self.root / "corrupt"

  def _open(self) -> None:
    if self._ckpt is None:
      opts = dict(enable_async_checkpointing=False, create=True)
      self._ckpt = ocp.CheckpointManager(
          self.ckpt_dir, options=ocp.CheckpointManagerOptions(
              max_to_keep=self._max_to_keep, **opts))
      self._best = ocp.CheckpointManager(
          self.best_dir, options=ocp.CheckpointManagerOptions(
              max_to_keep=1, **opts))

  def resume_step(self, resume: bool | str) -> int | None:
    """Decides whether to restore; returns the step to restore or ``None``.

    The step is the newest one whose files match their checksums (or that
    has no checksum file, with a warning). Corrupt newer steps are moved to
    ``corrupt/`` with a warning, so that their epochs are replayed.

    Raises:
      FileExistsError: ``resume=False`` and the directory is not empty.
      FileNotFoundError: ``resume=True`` and there is no checkpoint.
      CheckpointError: checkpoint files exist but no step is intact (nothing
        is moved or changed then).
    """
    if resume not in (True, False, "auto"):
      raise ValueError(
          f"`resume` must be True, False or 'auto', got {resume!r}.")
    # Every process looks before any process creates the directories.
    root_used, ckpt_used = _has_entries(self.root), _has_entries(self.ckpt_dir)
    _dist.barrier("l2d_checkpoint_looked")
    if resume is False:
      if root_used:
        raise FileExistsError(
            f"checkpoint directory {self.root} is not empty; refusing to "
            "start from scratch over a previous run. Pass resume=True (or "
            "'auto') to continue it, or use an empty directory.")
      self._open()
      return None
    if not ckpt_used:
      if resume == "auto":
        self._open()
        return None
      raise FileNotFoundError(
          f"resume=True but {self.ckpt_dir} holds no checkpoint. Use "
          "resume='auto' to start fresh when nothing was saved yet.")
    try:
      self._open()
      steps = self._ckpt.all_steps()
    except Exception as e:  # orbax raises many types on malformed trees.
      raise CheckpointError(
          f"cannot read checkpoints in {self.ckpt_dir}: {e}") from e
    if not steps:
      raise CheckpointError(
          f"{self.ckpt_dir} is not empty but contains no finalised orbax "
          f"checkpoint (found {sorted(p.name for p in self.ckpt_dir.iterdir())}"
          "); refusing to start over. Inspect or remove it.")
    step, skipped = _newest_usable(self.ckpt_dir, steps)
    if step is None:
      raise CheckpointError(
          f"cannot restore checkpoint: no checkpoint in {self.ckpt_dir} is "
          f"intact ({_describe(self.ckpt_dir, skipped)}). Nothing was "
          "changed; restore the files from a backup or start a new run in "
          "an empty directory.")
    if skipped:
      moved = [self._move_aside(s) for s, _ in skipped]
      _dist.barrier("l2d_checkpoint_moved_aside")
      self._ckpt.reload()
      warnings.warn(
          f"corrupt checkpoint(s) {_describe(self.ckpt_dir, skipped)}; "
          f"moved to {', '.join(str(m) for m in moved)}. Resuming from the "
          f"previous intact checkpoint {self.ckpt_dir / str(step)} (the "
          "later epochs are trained again).", UserWarning, stacklevel=3)
    return step

  def _move_aside(self, step: int) -> pathlib.Path:
    """Moves a corrupt step to ``corrupt/`` (process 0 moves; all return)."""
    target = self.corrupt_dir / f"ckpt-{step}"
    n = 1
    while target.exists():
      target = self.corrupt_dir / f"ckpt-{step}.{n}"
      n += 1
    if jax.process_index() == 0:
      self.corrupt_dir.mkdir(parents=True, exist_ok=True)
      os.replace(self.ckpt_dir / str(step), target)
    return target

  def restore_meta(self, step: int) -> dict[str, Any]:
    """Reads the JSON metadata of ``step``.

    Raises:
      CheckpointError: missing or unreadable metadata.
    """
    try:
      return dict(self._ckpt.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    except Exception as e:
      raise CheckpointError(
          f"cannot read the metadata of checkpoint {self.ckpt_dir / str(step)}"
          f": {type(e).__name__}: {e}. The directory is corrupt; nothing was "
          "overwritten.") from e

  def restore(self, step: int, state: Any, best: Any | None) -> tuple[Any, Any]:
    """Restores ``(state, best)`` of ``step`` onto the given templates.

    ``state`` and ``best`` are concrete trees whose shapes, dtypes and
    shardings are the restore targets; ``best=None`` skips the best model.

    Raises:
      CheckpointError: missing or unreadable files, or a tree that does not
        match the model and optimiser.
    """
    items = {"state": ocp.args.StandardRestore(_abstract(state))}
    if best is not None:
      items["best"] = ocp.args.StandardRestore(_abstract(best))
    try:
      out = self._ckpt.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      raise CheckpointError(
          f"cannot restore checkpoint {self.ckpt_dir / str(step)}: "
          f"{type(e).__name__}: {e}. The directory is corrupt or was written "
          "for a different model or optimiser; nothing was overwritten.") from e
    return out["state"], out["best"] if best is not None else None

  def latest_step(self) -> int | None:
    """The newest saved training step that is intact now, or ``None``.

    Re-reads and re-hashes the files (it is meant for error messages such
    as "the last good checkpoint is ..."); a step without a checksum file
    counts as intact.
    """
    if self._ckpt is None:
      return None
    try:
      self._ckpt.reload()
      steps = self._ckpt.all_steps()
    except Exception:  # a broken directory has no good step to name.
      return None
    for step in sorted(steps, reverse=True):
      if verify_checksums(self.ckpt_dir / str(step))[0] != _CORRUPT:
        return step
    return None

  def drop_best_after(self, step: int) -> None:
    """Deletes exported best models newer than ``step`` (they get replayed)."""
    for s in self._best.all_steps():
      if s > step:
        self._best.delete(s)

  def save(self, step: int, state: Any, best: Any | None,
           meta: dict[str, Any]) -> None:
    """Saves a training checkpoint, then its checksums."""
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(meta)}
    if best is not None:
      items["best"] = ocp.args.StandardSave(best)
    self._ckpt.save(step, args=ocp.args.Composite(**items), force=True)
    self._ckpt.wait_until_finished()  # hash only what orbax has committed
    if jax.process_index() == 0:  # one writer on a shared file system
      write_checksums(self.ckpt_dir / str(step))
    _dist.barrier("l2d_checkpoint_checksummed")

  def save_best(self, step: int, model_state: Any) -> None:
    """Exports the best model (replacing newer exports), then checksums."""
    for s in self._best.all_steps():
      if s >= step:
        self._best.delete(s)
    self._best.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(model_state)), force=True)
    self._best.wait_until_finished()
    if jax.process_index() == 0:
      write_checksums(self.best_dir / str(step))
    _dist.barrier("l2d_best_checksummed")

  def close(self) -> None:
    for mgr in (self._ckpt, self._best):
      if mgr is not None:
        mgr.close()
    self._ckpt = self._best = None


def _restore_model(mgr: ocp.CheckpointManager, step: int, item: str,
                   model_state: Any) -> Any:
  return mgr.restore(step, args=ocp.args.Composite(
      **{item: ocp.args.StandardRestore(_abstract(model_state))}))[item]


def _best_copy_in_ckpt(root: pathlib.Path, best_step: int,
                       model_state: Any) -> tuple[Any, pathlib.Path] | None:
  """The best model of epoch ``best_step`` from an intact training checkpoint.

  Every training checkpoint saved after the best epoch holds the same best
  model state (``ckpt/<epoch>/best``); its metadata names that epoch.
  """
  directory = root / "ckpt"
  if not _has_entries(directory):
    return None
  mgr = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False))
  try:
    for step in sorted(mgr.all_steps(), reverse=True):
      step_dir = directory / str(step)
      status, _ = verify_checksums(step_dir)
      if status == _CORRUPT:
        continue
      try:
        meta = mgr.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        if not (meta.get("has_best") and meta.get("best_epoch") == best_step):
          continue
        out = _restore_model(mgr, step, "best", model_state)
      except Exception:  # pylint: disable=broad-except
        continue  # an unreadable copy is no fallback; try an older one.
      if status == _UNVERIFIED:
        _warn_unverified(step_dir)
      return out, step_dir / "best"
    return None
  finally:
    mgr.close()


def load_checkpoint(model: nnx.Module, checkpoint_dir: str | os.PathLike[str],
                    *, best: bool = True, step: int | None = None) -> int:
  """Loads trained weights from a trainer's checkpoint directory, in place.

  Files are checked against their checksums before anything is read. With
  ``best=True`` a corrupt ``best/<epoch>`` falls back, with a warning, to the
  identical copy of that best model kept in an intact training checkpoint
  (``ckpt/<e>/best`` with ``e >= epoch``). With ``best=False`` and no
  ``step``, a corrupt latest checkpoint falls back, with a warning, to the
  newest intact one. A corrupt explicit ``step`` is never replaced by
  another step.

  Args:
    model: a model with the same structure as the trained one (e.g. freshly
      initialised with the same constructor arguments); its variables are
      overwritten.
    checkpoint_dir: the ``checkpoint_dir`` given to the ``Trainer``.
    best: load the best model by the monitored metric (``best/``);
      ``False`` loads the model part of the latest training checkpoint.
    step: a specific step (epoch) instead of the latest one.

  Returns:
    The step (number of completed epochs) that was loaded.

  Raises:
    FileNotFoundError: no such checkpoint.
    CheckpointError: a corrupt checkpoint with no intact fallback, an
      unreadable one, or one that does not fit the model; the message names
      the step directory. The model is left unchanged.

  Example:
    >>> from flax import nnx
    >>> from l2d_jax.models import MLP
    >>> model = MLP(2, (16,), 3, rngs=nnx.Rngs(0))
    >>> epoch = load_checkpoint(model, "runs/mlp")  # doctest: +SKIP
  """
  root = pathlib.Path(checkpoint_dir).absolute()
  directory = root / ("best" if best else "ckpt")
  if not _has_entries(directory):
    raise FileNotFoundError(f"no checkpoint in {directory}.")
  try:
    mgr = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False))
    steps = list(mgr.all_steps())
  except Exception as e:
    raise CheckpointError(
        f"cannot read checkpoints in {directory}: {type(e).__name__}: {e}"
    ) from e
  model_state = nnx.state(model)
  where = directory
  try:
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint step {step} in {directory}.")
      chosen = step
      status, detail = verify_checksums(directory / str(step))
      skipped = [(step, detail)] if status == _CORRUPT else []
      if status == _UNVERIFIED:
        _warn_unverified(directory / str(step))
    else:
      if not steps:
        raise FileNotFoundError(f"no finalised checkpoint in {directory}.")
      chosen, skipped = _newest_usable(directory, steps)
    where = directory / str(skipped[0][0] if skipped else chosen)
    out = None
    if skipped and best:
      # The same best model is kept in the training checkpoints.
      bad = skipped[0][0]
      found = _best_copy_in_ckpt(root, bad, model_state)
      if found is not None:
        out, source = found
        warnings.warn(
            f"corrupt checkpoint {_describe(directory, skipped[:1])}; loaded "
            f"the identical copy of that best model in {source}.",
            UserWarning, stacklevel=2)
        chosen = bad
    if out is None:
      if chosen is None or (skipped and step is not None):
        raise CheckpointError(
            f"cannot load checkpoint {where}: it is corrupt and no intact "
            f"copy was found ({_describe(directory, skipped)}).")
      if skipped:
        warnings.warn(
            f"corrupt checkpoint(s) {_describe(directory, skipped)}; loading "
            f"the newest intact one, {directory / str(chosen)}.",
            UserWarning, stacklevel=2)
      where = directory / str(chosen)
      if best:
        out = _restore_model(mgr, chosen, "model", model_state)
      else:
        # The training state is the pair (model, optimizer) and the
        # optimizer cannot be rebuilt without its optax transformation:
        # read the raw tree and keep the model half.
        raw = mgr.restore(chosen, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]["0"]
        pure = nnx.restore_int_paths(_strip_values(raw))
        target = jax.tree.map(lambda x: x, model_state)
        nnx.replace_by_pure_dict(target, pure)
        out = jax.device_put(target, _shardings(model_state))
    nnx.update(model, out)
  except (FileNotFoundError, CheckpointError):
    raise
  except Exception as e:
    raise CheckpointError(
        f"cannot load {where} into the given model: "
        f"{type(e).__name__}: {e}") from e
  finally:
    try:
      mgr.close()
    except Exception:  # pylint: disable=broad-except
      pass  # closing cannot change what was (not) loaded.
  return chosen
