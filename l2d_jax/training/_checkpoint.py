"""Orbax checkpoint layout of the trainer, and loading trained models.

Layout of ``checkpoint_dir``::

  checkpoint_dir/
    ckpt/<epoch>/state   model + optimizer state (nnx.State, StandardSave)
    ckpt/<epoch>/best    best model state so far (only when monitoring)
    ckpt/<epoch>/meta    JSON: epoch, step, history, early-stopping status
    best/<epoch>/model   the best model state (kept: 1), for inference
    metrics.jsonl        one JSON record per completed epoch

``<epoch>`` is the number of completed epochs. Saves are synchronous, so a
checkpoint directory that orbax has finalised is complete.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


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

    Raises:
      FileExistsError: ``resume=False`` and the directory is not empty.
      FileNotFoundError: ``resume=True`` and there is no checkpoint.
      CheckpointError: checkpoint files exist but hold no usable step.
    """
    if resume not in (True, False, "auto"):
      raise ValueError(
          f"`resume` must be True, False or 'auto', got {resume!r}.")
    if resume is False:
      if _has_entries(self.root):
        raise FileExistsError(
            f"checkpoint directory {self.root} is not empty; refusing to "
            "start from scratch over a previous run. Pass resume=True (or "
            "'auto') to continue it, or use an empty directory.")
      self._open()
      return None
    if not _has_entries(self.ckpt_dir):
      if resume == "auto":
        self._open()
        return None
      raise FileNotFoundError(
          f"resume=True but {self.ckpt_dir} holds no checkpoint. Use "
          "resume='auto' to start fresh when nothing was saved yet.")
    try:
      self._open()
      step = self._ckpt.latest_step()
    except Exception as e:  # orbax raises many types on malformed trees.
      raise CheckpointError(
          f"cannot read checkpoints in {self.ckpt_dir}: {e}") from e
    if step is None:
      raise CheckpointError(
          f"{self.ckpt_dir} is not empty but contains no finalised orbax "
          f"checkpoint (found {sorted(p.name for p in self.ckpt_dir.iterdir())}"
          "); refusing to start over. Inspect or remove it.")
    return step

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
    """The latest saved training step, or ``None``."""
    return None if self._ckpt is None else self._ckpt.latest_step()

  def drop_best_after(self, step: int) -> None:
    """Deletes exported best models newer than ``step`` (they get replayed)."""
    for s in self._best.all_steps():
      if s > step:
        self._best.delete(s)

  def save(self, step: int, state: Any, best: Any | None,
           meta: dict[str, Any]) -> None:
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(meta)}
    if best is not None:
      items["best"] = ocp.args.StandardSave(best)
    self._ckpt.save(step, args=ocp.args.Composite(**items), force=True)
    self._ckpt.wait_until_finished()

  def save_best(self, step: int, model_state: Any) -> None:
    for s in self._best.all_steps():
      if s >= step:
        self._best.delete(s)
    self._best.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(model_state)), force=True)
    self._best.wait_until_finished()

  def close(self) -> None:
    for mgr in (self._ckpt, self._best):
      if mgr is not None:
        mgr.close()
    self._ckpt = self._best = None


def load_checkpoint(model: nnx.Module, checkpoint_dir: str | os.PathLike[str],
                    *, best: bool = True, step: int | None = None) -> int:
  """Loads trained weights from a trainer's checkpoint directory, in place.

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
    CheckpointError: unreadable or mismatched checkpoint.

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
  mgr = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False))
  try:
    step = mgr.latest_step() if step is None else step
    if step is None or step not in mgr.all_steps():
      raise FileNotFoundError(f"no checkpoint step {step} in {directory}.")
    model_state = nnx.state(model)
    try:
      if best:
        out = mgr.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(_abstract(model_state))))["model"]
      else:
        # The training state is the pair (model, optimizer) and the
        # optimizer cannot be rebuilt without its optax transformation:
        # read the raw tree and keep the model half.
        raw = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]["0"]
        pure = nnx.restore_int_paths(_strip_values(raw))
        nnx.replace_by_pure_dict(model_state, pure)
        out = jax.device_put(model_state, _shardings(nnx.state(model)))
      nnx.update(model, out)
    except Exception as e:
      raise CheckpointError(
          f"cannot load {directory / str(step)} into the given model: "
          f"{type(e).__name__}: {e}") from e
  finally:
    mgr.close()
  return step
