"""One data-parallel, resumable optax trainer for every L2D method."""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from l2d_jax.distributed import _runtime as _dist
from l2d_jax.training import _programs
from l2d_jax.training._batching import DeviceEpochs
from l2d_jax.training._checkpoint import CheckpointStore
from l2d_jax.training._evaluation import Evaluation
from l2d_jax.training._log import write_jsonl
from l2d_jax.training._mesh import DATA_AXIS
from l2d_jax.training._mesh import check_batch
from l2d_jax.training._mesh import data_mesh
from l2d_jax.training._mesh import num_data_shards
from l2d_jax.training._mesh import process_local
from l2d_jax.training._mesh import replicate
from l2d_jax.training._mesh import shard_batch
from l2d_jax.training._programs import default_compiler_options
from l2d_jax.training._steps import Batch
from l2d_jax.training._steps import LossFn
from l2d_jax.training._steps import NonFiniteError
from l2d_jax.training._steps import copy_tree
from l2d_jax.training._steps import new_accumulator
from l2d_jax.training._steps import nonfinite_entries
from l2d_jax.training._steps import state_signature


class Trainer(Evaluation):
  """Trains an NNX model with optax, data-parallel over a device mesh.

  The model and the ``nnx.Optimizer`` are split into one ``nnx.State``,
  replicated on every device (``P()``); each batch is split along its
  leading axis over the mesh's ``'data'`` axis (``P('data')``), and
  ``jax.jit`` inserts the gradient all-reduce.

  The same code runs on one process or many (``l2d_jax.distributed``): the
  default mesh spans ``jax.devices()``, every device of every process; each
  process passes the same global batches and feeds only the rows of its own
  devices (``jax.make_array_from_process_local_data``); checkpoints are
  written by every process into one shared directory (orbax's multi-process
  protocol; process 0 writes the checksums, the metrics log and the progress
  bars). At construction the processes exchange a hash of the model and
  optimiser state (structure and values) and of the trainer's options, and
  stop with a ``ValueError`` if they disagree. The jitted step donates the
  state, so the trainer owns its arrays: read results through
  :attr:`model` (a copy) or the model passed in, which :meth:`fit` updates
  in place when it returns.

  Two ways to feed an epoch: a function ``epoch -> host batches`` (one
  jitted step per batch, dispatched asynchronously; losses are summed on
  the device and read every ``sync_every`` steps), or :class:`DeviceEpochs`
  when the data fits in device memory (the whole epoch is one compiled
  ``lax.scan`` over batches gathered on the device, shuffled by key). Both
  call the same compiled step, so for the same batch order they give the
  same parameters.

  Compiled programs are kept per process and keyed by the model/optimiser
  structure (``nnx.GraphDef``, which holds the optax object), the loss (or
  evaluation) function, the mesh and the compile options: a new trainer of
  the same architecture with the same ``tx`` and ``loss_fn`` objects (e.g.
  the next seed) reuses them instead of compiling. ``trace_count`` counts
  the loss traces this trainer's calls caused.

  Determinism and resumption: the state saved each epoch holds parameters,
  BatchNorm statistics, optimiser state and the model's ``nnx.Rngs``
  counters (dropout). If ``train_batches(epoch)`` is a pure function of the
  epoch (and a seed), e.g. :class:`EpochBatches`, a run that is killed and
  resumed replays the lost epochs with the same batches and random numbers
  and ends with the same parameters as an uninterrupted run. Randomness used
  by a loss must come from the model's ``nnx.Rngs`` or from the batches.

  Args:
    model: the NNX module to train. Its mode is set by the trainer:
      ``model.train()`` in the train step, ``model.eval()`` in evaluation.
    tx: an optax transformation (see :func:`sgd_cosine`,
      :func:`adam_cosine`), applied to the ``nnx.Param`` variables.
    loss_fn: ``loss_fn(model, batch) -> (loss, aux)``: a scalar loss and a
      dict of scalar metrics, traced once under ``jax.jit``; ``batch`` is a
      dict of ``jax.Array`` with the same keys as the host batches.
    mesh: a mesh with a ``'data'`` axis (default: :func:`data_mesh` over
      ``jax.devices()``, all processes' devices). Batch sizes (global, over
      all processes) must be multiples of its size.
    checkpoint_dir: directory for orbax checkpoints and ``metrics.jsonl``
      (``None``: no checkpoints, no resumption).
    save_every: save a training checkpoint every this many epochs (the last
      epoch and an early stop are always saved).
    max_to_keep: training checkpoints kept (the best model is kept apart).
    log_path: JSON-lines metrics log (default
      ``checkpoint_dir/metrics.jsonl``; ``None`` without a checkpoint dir).
    check_inputs: check every host batch for NaN/inf with numpy before the
      step (cheap next to a forward pass; disable for maximum throughput).
    progress: show ``tqdm`` progress bars.
    compiler_options: XLA compile options for the train and eval steps.
      Default: ``default_compiler_options(mesh)``, which on CPU keeps XLA's
      YNNPACK library out of convolutions (measured 1.6-2.5x faster conv
      train steps here; see ``benchmarks/train_step.py``) when this jaxlib
      accepts the option (probed once; else XLA's defaults with one
      warning); ``{}`` for XLA's defaults.
    sync_every: with host batches, the host reads the on-device loss sums
      (and checks them for NaN/inf) every this many steps and at the end of
      each epoch; in between, steps are queued without waiting.

  Raises:
    ValueError: a mesh without a ``'data'`` axis, bad options, or (several
      processes) processes that disagree on the model, optimiser or options.

  Example:
    >>> import numpy as np, optax
    >>> from flax import nnx
    >>> from l2d_jax.models import MLP
    >>> from l2d_jax.training import EpochBatches, Trainer, data_mesh
    >>> def loss_fn(model, batch):
    ...   logits = model(batch["x"])
    ...   loss = optax.softmax_cross_entropy_with_integer_labels(
    ...       logits, batch["y"]).mean()
    ...   return loss, {}
    >>> data = {"x": np.random.rand(64, 2).astype(np.float32),
    ...         "y": np.random.randint(0, 2, 64)}
    >>> trainer = Trainer(MLP(2, (8,), 2, rngs=nnx.Rngs(0)),
    ...                   optax.sgd(0.1), loss_fn, mesh=data_mesh(1),
    ...                   progress=False)
    >>> history = trainer.fit(
    ...     lambda e: EpochBatches(data, 16, seed=0, epoch=e), 2)
    >>> [r["epoch"] for r in history]
    [1, 2]
  """

  def __init__(
      self,
      model: nnx.Module,
      tx: optax.GradientTransformation,
      loss_fn: LossFn,
      *,
      mesh: Mesh | None = None,
      checkpoint_dir: str | os.PathLike[str] | None = None,
      save_every: int = 1,
      max_to_keep: int = 2,
      log_path: str | os.PathLike[str] | None = None,
      check_inputs: bool = True,
      progress: bool = True,
      compiler_options: Mapping[str, str] | None = None,
      sync_every: int = 100,
  ):
    if save_every < 1:
      raise ValueError(f"`save_every` must be >= 1, got {save_every}.")
    if sync_every < 1:
      raise ValueError(f"`sync_every` must be >= 1, got {sync_every}.")
    self._sync_every = int(sync_every)
    self.mesh = data_mesh() if mesh is None else mesh
    self.num_shards = num_data_shards(self.mesh)
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P(DATA_AXIS))
    self._user_model = model
    self._loss_fn = loss_fn
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    self._graphdef, state = nnx.split((model, optimizer))
    if jax.process_count() > 1:
      # Replicas are fed by each process: they must start identical.
      _dist.check_same_config({
          "state": state_signature(state),
          "mesh": dict(self.mesh.shape),
          "loss_fn": getattr(loss_fn, "__qualname__", repr(type(loss_fn))),
          "options": [save_every, max_to_keep, sync_every, check_inputs,
                      checkpoint_dir is None],
      }, what="model, optimiser state and trainer options")
    # A copy: the step donates its input, the caller's arrays must survive.
    self._state = replicate(state, self._replicated)
    self._store = (None if checkpoint_dir is None else
                   CheckpointStore(checkpoint_dir, max_to_keep=max_to_keep))
    if log_path is None and checkpoint_dir is not None:
      log_path = pathlib.Path(checkpoint_dir) / "metrics.jsonl"
    self.log_path = None if log_path is None else pathlib.Path(log_path)
    self._save_every = save_every
    self._check_inputs = check_inputs
    self._main = jax.process_index() == 0
    self._progress = progress and self._main
    self._started = False
    self.trace_count = 0
    self.epoch = 0
    self.step = 0
    self.history: list[dict[str, Any]] = []
    self._es = dict(best_value=None, best_epoch=None, bad_epochs=0,
                    stopped=False, monitor=None, mode=None)
    self._best_state = None
    if compiler_options is None:
      compiler_options = default_compiler_options(self.mesh)
    self._compiler_options = dict(compiler_options)
    # Programs come from a process-wide cache keyed by the graphdef, the
    # loss and the options: a trainer of the same model structure, optimiser
    # object and loss reuses what an earlier one compiled.
    self._programs = (self._graphdef, self._loss_fn, self._replicated,
                      self._sharded, self._compiler_options)
    self._train_step = _programs.host_step(*self._programs)
    self._epoch_fns: dict[Any, Callable[..., Any]] = {}
    self._placed: tuple[DeviceEpochs, dict[str, jax.Array]] | None = None
    self._output_fns: dict[Any, Callable[..., Any]] = {}
    self._aux_names: dict[Any, tuple[str, ...]] = {}

  # ---------------------------------------------------------------- steps --

  def _counted(self, fn: Callable[..., Any], *args: Any) -> Any:
    """Calls a program, adding the loss traces it caused to trace_count."""
    before = _programs.traces()
    try:
      return fn(*args)
    finally:
      self.trace_count += _programs.traces() - before

  def _aux(self, batch_like: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the loss's aux metrics on batches shaped like ``batch_like``.

    Found once per batch shape by tracing the step abstractly; the compiled
    step reuses that trace.
    """
    shapes = tuple((k, tuple(v.shape), str(v.dtype))
                   for k, v in batch_like.items())
    if shapes not in self._aux_names:
      inner = _programs.inner_step(self._graphdef, self._loss_fn)
      _, _, aux = self._counted(inner.eval_shape, self._state,
                                dict(batch_like))
      self._aux_names[shapes] = tuple(aux)
    return self._aux_names[shapes]

  def _new_acc(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Zeroed metric sums for host steps on batches shaped like ``batch``."""
    zeros = new_accumulator(dict.fromkeys(self._aux(batch)))
    return replicate(zeros, self._replicated)

  def _epoch_fn(self, data: DeviceEpochs, arrays: Mapping[str, jax.Array]
                ) -> Callable[..., Any]:
    """The jitted on-device epoch for data of this size and order."""
    cache_key = (data.num_examples, data.batch_size, data.shuffle)
    if cache_key not in self._epoch_fns:
      like = {k: jax.ShapeDtypeStruct((data.batch_size,) + v.shape[1:],
                                      v.dtype, sharding=self._sharded)
              for k, v in arrays.items()}
      self._epoch_fns[cache_key] = _programs.device_epoch(
          *self._programs, num_examples=data.num_examples,
          batch_size=data.batch_size, shuffle=data.shuffle,
          aux_names=self._aux(like))
    return self._epoch_fns[cache_key]

  # ---------------------------------------------------------------- state --

  @property
  def model(self) -> nnx.Module:
    """A copy of the current model (safe to keep: never donated)."""
    model, _ = nnx.merge(self._graphdef, self._state)
    nnx.update(model, copy_tree(process_local(nnx.state(model))))
    return model

  def _model_state(self) -> nnx.State:
    return self._state[0]

  def _set_model_state(self, model_state: nnx.State) -> None:
    model, optimizer = nnx.merge(self._graphdef, self._state)
    nnx.update(model, copy_tree(model_state))
    self._state = nnx.state((model, optimizer))

  def _meta(self) -> dict[str, Any]:
    return dict(epoch=self.epoch, step=self.step, history=self.history,
                has_best=self._best_state is not None, **self._es)

  def _save(self) -> None:
    self._store.save(self.epoch, self._state, self._best_state, self._meta())

  def _restore(self, resume: bool | str, monitor: str | None,
               mode: str) -> None:
    step = self._store.resume_step(resume)
    if step is None:
      return
    meta = self._store.restore_meta(step)
    if meta.get("monitor") != monitor or (
        monitor is not None and meta.get("mode") != mode):
      raise ValueError(
          f"the checkpoint in {self._store.root} monitored "
          f"{meta.get('monitor')!r} ({meta.get('mode')}), this run "
          f"{monitor!r} ({mode}); resume with the same early-stopping "
          "settings.")
    state, best = self._store.restore(
        step, self._state,
        self._model_state() if meta.get("has_best") else None)
    self._state = jax.device_put(state, self._replicated)
    self._best_state = best
    self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
    self.history = list(meta["history"])
    self._es.update({k: meta[k] for k in self._es})
    # Exported best models newer than this checkpoint are replayed.
    self._store.drop_best_after(step)
    if best is not None and self._es["best_epoch"] is not None:
      self._store.save_best(int(self._es["best_epoch"]), best)

  # ------------------------------------------------------------------ fit --

  def fit(
      self,
      train_batches: Callable[[int], Iterable[Batch]] | DeviceEpochs,
      num_epochs: int,
      *,
      eval_fn: Callable[[], Mapping[str, float]] | None = None,
      monitor: str | None = None,
      mode: str = "max",
      patience: int | None = None,
      restore_best: bool = True,
      resume: bool | str = False,
      on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
  ) -> list[dict[str, Any]]:
    """Trains until ``num_epochs`` epochs are done or early stopping.

    Each epoch runs the jitted step on every batch of
    ``train_batches(epoch)``, then ``eval_fn()``, updates early stopping,
    appends a record to ``history`` and the JSON-lines log, saves a
    checkpoint (every ``save_every`` epochs) and calls ``on_epoch_end``.

    Args:
      train_batches: ``epoch -> iterable of host batches`` (dicts of numpy
        arrays with a common leading axis, a multiple of the device count).
        Must be a pure function of the epoch for exact resumption, and
        should give equal-sized batches so the step compiles once. Or a
        :class:`DeviceEpochs`: the data stays on the device and each epoch
        runs as one compiled program (its order depends only on the key and
        the epoch, so resumption is exact too).
      num_epochs: total epochs of the run (counting epochs already done
        when resuming).
      eval_fn: called after each epoch, returns ``{name: float}`` (usually
        ``lambda: trainer.evaluate(val_batches, metrics_fn)``).
      monitor: key of ``eval_fn``'s dict for early stopping / best model.
      mode: ``'max'`` or ``'min'``: whether larger ``monitor`` is better.
      patience: stop after this many epochs without strict improvement
        ("look-ahead"); ``None`` never stops early.
      restore_best: load the best model state (by ``monitor``) into the
        trainer and ``model`` at the end. The optimiser state is the last.
      resume: ``False``: start fresh; the checkpoint directory must be
        missing or empty (a previous run is never overwritten). ``True``:
        continue from the latest checkpoint; raises if there is none.
        ``'auto'``: continue if ``checkpoint_dir/ckpt`` has anything in it,
        else start fresh.
      on_epoch_end: ``callback(record)`` after the epoch's checkpoint.

    Returns:
      The history: one record per completed epoch with ``epoch``, ``step``,
      ``seconds``, ``train/loss``, ``train/<aux>`` (epoch means) and
      ``eval/<name>``.

    Raises:
      NonFiniteError: NaN/inf in a batch (``check_inputs``), a non-finite
        loss or monitored value; the message names the first bad step (the
        loss is checked every ``sync_every`` steps and before every
        checkpoint). No checkpoint
        is written after the last good one, and this trainer's state is then
        unusable: resume from the checkpoint.
      FileExistsError, FileNotFoundError, CheckpointError: see ``resume``.
      ValueError: bad arguments, empty epochs, or batches whose size is not
        a multiple of the device count.
    """
    if mode not in ("max", "min"):
      raise ValueError(f"`mode` must be 'max' or 'min', got {mode!r}.")
    if monitor is not None and eval_fn is None:
      raise ValueError("`monitor` needs an `eval_fn`.")
    if patience is not None and (monitor is None or patience < 1):
      raise ValueError("`patience` needs a `monitor` and must be >= 1.")
    if resume is not False and self._store is None:
      raise ValueError("`resume` needs a `checkpoint_dir`.")
    if not self._started:
      if self._store is not None:
        self._restore(resume, monitor, mode)
      self._es.update(monitor=monitor, mode=mode)
      self._started = True
    if self.log_path is not None and self._main:
      write_jsonl(self.log_path, self.history)

    epochs = tqdm(total=num_epochs, initial=self.epoch, desc="epochs",
                  disable=not self._progress)
    try:
      while self.epoch < num_epochs and not self._es["stopped"]:
        record = self._run_epoch(train_batches, eval_fn, monitor, mode,
                                 patience)
        epochs.update(1)
        epochs.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                            if k.startswith(("train/loss", "eval/"))})
        last = self.epoch >= num_epochs or self._es["stopped"]
        if self._store is not None and (
            last or self.epoch % self._save_every == 0):
          self._save()
        if on_epoch_end is not None:
          on_epoch_end(record)
    finally:
      epochs.close()
    if restore_best and self._best_state is not None:
      self._set_model_state(self._best_state)
    nnx.update(self._user_model, copy_tree(process_local(self._model_state())))
    return list(self.history)

  def _run_epoch(self, train_batches, eval_fn, monitor, mode, patience):
    epoch = self.epoch
    start = time.perf_counter()
    if isinstance(train_batches, DeviceEpochs):
      steps, sums = self._device_epoch(train_batches, epoch)
    else:
      steps, sums = self._host_epoch(train_batches(epoch), epoch)
    record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step,
                              "train/loss": sums["loss"] / steps}
    record.update({f"train/{k}": v / steps for k, v in sums["aux"].items()})
    return self._finish_epoch(record, epoch, start, eval_fn, monitor, mode,
                              patience)

  # -------------------------------------------------------- epoch runners --

  def _check_window(self, acc, epoch: int, start_step: int) -> None:
    """Raises if a step since the start of the epoch had a non-finite loss."""
    bad_step, bad_loss = jax.device_get((acc["bad_step"], acc["bad_loss"]))
    if bad_step >= 0:
      raise NonFiniteError(
          f"non-finite loss ({float(bad_loss)}) at step {int(bad_step)} "
          f"(epoch index {epoch}, batch {int(bad_step) - start_step - 1}). "
          "Training stopped; " + self._last_good())

  def _finish(self, acc, epoch: int, start_step: int
              ) -> tuple[int, dict[str, Any]]:
    self._check_window(acc, epoch, start_step)
    sums = jax.device_get({"loss": acc["loss"], "aux": acc["aux"]})
    return self.step - start_step, {
        "loss": float(sums["loss"]),
        "aux": {k: float(v) for k, v in sums["aux"].items()}}

  def _host_epoch(self, batches, epoch: int) -> tuple[int, dict[str, Any]]:
    """One epoch of host batches; metrics are fetched every sync_every steps.

    Steps are dispatched without waiting: the losses and aux metrics are
    summed on the device, and the host reads them (and the first step with a
    non-finite loss) only every ``sync_every`` steps and at the end of the
    epoch, so the device queue stays full. A bad state is never saved: the
    epoch's checkpoint comes after the final check.
    """
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}", leave=False,
               disable=not self._progress)
    start_step = self.step
    acc = None
    try:
      for index, batch in enumerate(bar):
        step = self.step + 1
        where = f"step {step} (epoch index {epoch}, batch {index})"
        check_batch(batch, self.num_shards, where=where)
        if self._check_inputs and (bad := nonfinite_entries(batch)):
          if acc is not None:
            self._check_window(acc, epoch, start_step)  # earlier bad loss
          raise NonFiniteError(
              f"{where}: the input batch contains NaN/inf in "
              f"{', '.join(bad)}. Training stopped; " + self._last_good())
        batch = shard_batch(batch, self.mesh)
        if acc is None:
          acc = self._new_acc(batch)
        self._state, acc = self._counted(self._train_step, self._state, acc,
                                         batch, np.int32(step))
        self.step = step
        if (step - start_step) % self._sync_every == 0:
          self._check_window(acc, epoch, start_step)
          if self._progress:
            mean = float(acc["loss"]) / (step - start_step)
            bar.set_postfix(loss=f"{mean:.4g}")
      if acc is None:
        raise ValueError(f"train_batches({epoch}) yielded no batches.")
      return self._finish(acc, epoch, start_step)
    finally:
      bar.close()

  def _device_epoch(self, data: DeviceEpochs, epoch: int
                    ) -> tuple[int, dict[str, Any]]:
    """One epoch as one compiled ``lax.scan`` over on-device batches."""
    if self._placed is None or self._placed[0] is not data:
      if data.batch_size % self.num_shards:
        raise ValueError(
            f"DeviceEpochs batch size {data.batch_size} is not divisible by "
            f"the {self.num_shards} devices of the data mesh.")
      self._placed = (data, replicate(
          {k: np.asarray(v) for k, v in data.arrays.items()},
          self._replicated))
    start_step = self.step
    arrays = self._placed[1]
    self._state, acc = self._counted(
        self._epoch_fn(data, arrays), self._state, arrays,
        data.epoch_key(epoch), np.int32(start_step))
    self.step = start_step + len(data)
    return self._finish(acc, epoch, start_step)

  def _finish_epoch(self, record, epoch, start, eval_fn, monitor, mode,
                    patience):
    if eval_fn is not None:
      metrics = {k: float(v) for k, v in eval_fn().items()}
      record.update({f"eval/{k}": v for k, v in metrics.items()})
      if monitor is not None:
        self._update_early_stopping(metrics, monitor, mode, patience,
                                    epoch + 1)
    record["seconds"] = time.perf_counter() - start
    self.epoch = epoch + 1
    self.history.append(record)
    if self.log_path is not None and self._main:
      write_jsonl(self.log_path, self.history)
    return record

  def _update_early_stopping(self, metrics, monitor, mode, patience, epoch):
    if monitor not in metrics:
      raise KeyError(f"monitor {monitor!r} is not among the eval metrics "
                     f"{sorted(metrics)}.")
    value = metrics[monitor]
    if not math.isfinite(value):
      raise NonFiniteError(f"monitored metric {monitor!r} is {value} after "
                           f"epoch {epoch}. " + self._last_good())
    best = self._es["best_value"]
    if best is None or (value > best if mode == "max" else value < best):
      self._es.update(best_value=value, best_epoch=epoch, bad_epochs=0)
      self._best_state = copy_tree(self._model_state())
      if self._store is not None:
        self._store.save_best(epoch, self._best_state)
    else:
      self._es["bad_epochs"] += 1
      if patience is not None and self._es["bad_epochs"] >= patience:
        self._es["stopped"] = True

  def _last_good(self) -> str:
    if self._store is None:
      return "no checkpoint directory was given."
    step = self._store.latest_step()
    if step is None:
      return f"no checkpoint was saved yet in {self._store.root}."
    return (f"the last good checkpoint (epoch {step}) in {self._store.root} "
            "is kept; resume from it with resume=True.")

  def close(self) -> None:
    """Closes the checkpoint managers."""
    if self._store is not None:
      self._store.close()

  def __enter__(self) -> Trainer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
