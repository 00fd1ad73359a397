"""One data-parallel, resumable optax trainer for every L2D method."""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from l2d_jax.distributed import _runtime as _dist
from l2d_jax.training._batching import DeviceEpochs
from l2d_jax.training._batching import epoch_indices
from l2d_jax.training._checkpoint import CheckpointStore
from l2d_jax.training._log import write_jsonl
from l2d_jax.training._mesh import DATA_AXIS
from l2d_jax.training._mesh import check_batch
from l2d_jax.training._mesh import data_mesh
from l2d_jax.training._mesh import num_data_shards
from l2d_jax.training._mesh import process_local
from l2d_jax.training._mesh import replicate
from l2d_jax.training._mesh import shard_batch

Batch = Mapping[str, Any]
LossFn = Callable[[nnx.Module, dict[str, jax.Array]],
                  tuple[jax.Array, Mapping[str, jax.Array]]]
OutputFn = Callable[[nnx.Module, dict[str, jax.Array]],
                    Mapping[str, jax.Array]]


# Experimental XLA CPU option: run dots and reductions through YNNPACK but not
# convolutions, whose YNNPACK path is slow for small-channel convs (SmallCNN:
# 62.9 -> 39.2 ms per step; WRN-16-4: 582 -> 495 ms; benchmarks/train_step.py).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


# (platform, options) -> whether this jaxlib compiles with them.
_PROBED: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}


def _options_supported(device: jax.Device, options: Mapping[str, str]
                       ) -> bool:
  """Compiles a tiny function with ``options`` once per platform."""
  probe_key = (device.platform, tuple(sorted(options.items())))
  if probe_key not in _PROBED:
    try:
      x = jax.device_put(np.zeros(2, np.float32), device)
      jax.jit(lambda v: v + 1).lower(x).compile(dict(options))
      _PROBED[probe_key] = True
    except Exception as e:  # pylint: disable=broad-exception-caught
      # XLA rejects unknown options with an error whose type varies across
      # jaxlib versions; any failure means "do not use them".
      _PROBED[probe_key] = False
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
      warnings.warn(
          f"this jaxlib ({jax.__version__}) does not accept the trainer's "
          f"default {device.platform} compile options {sorted(options)} "
          f"({first_line[:200]}); compiling with XLA's defaults instead. "
          "Pass compiler_options={} to silence this.",
          RuntimeWarning, stacklevel=3)
  return _PROBED[probe_key]


def default_compiler_options(mesh: Mesh) -> dict[str, str]:
  """Compile options the trainer uses on ``mesh``'s platform by default.

  On CPU, :data:`CPU_COMPILER_OPTIONS`, an experimental XLA flag that an
  older or newer jaxlib may not know (an unknown option is a compile error).
  They are probed once per process by compiling a tiny function; if that
  fails, one ``RuntimeWarning`` is issued and ``{}`` (XLA's defaults) is
  returned, never an error.

  Args:
    mesh: the device mesh the trainer compiles for.

  Returns:
    A dict of XLA compile options (``{}`` off CPU or when unsupported).
  """
  here = jax.process_index()
  device = next((d for d in mesh.devices.flat if d.process_index == here),
                mesh.devices.flat[0])
  if device.platform != "cpu" or not CPU_COMPILER_OPTIONS:
    return {}
  if not _options_supported(device, CPU_COMPILER_OPTIONS):
    return {}
  return dict(CPU_COMPILER_OPTIONS)


class NonFiniteError(FloatingPointError):
  """NaN/inf in an input batch, the training loss or a monitored metric."""


def _copy(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.copy(), tree)


def _state_signature(state: Any) -> dict[str, Any]:
  """Paths, shapes and dtypes of a state, and a SHA-256 of its values."""
  digest = hashlib.sha256()
  leaves = []
  for path, x in jax.tree_util.tree_leaves_with_path(state):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    arr = np.asarray(x)
    leaves.append([jax.tree_util.keystr(path), list(arr.shape),
                   str(arr.dtype)])
    digest.update(np.ascontiguousarray(arr).tobytes())
  return {"leaves": leaves, "values_sha256": digest.hexdigest()}


def _nonfinite(batch: Batch) -> list[str]:
  bad = []
  for name, value in batch.items():
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
      bad.append(f"`{name}` ({arr.size - int(np.isfinite(arr).sum())} "
                 "NaN/inf values)")
  return bad


def _pad(batch: Batch, size: int) -> dict[str, np.ndarray]:
  """Pads every entry to ``size`` rows by repeating its last row."""
  out = {}
  for name, value in batch.items():
    arr = np.asarray(value)
    extra = size - arr.shape[0]
    out[name] = (np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)])
                 if extra else arr)
  return out


def _checked_objective(loss_fn: LossFn):
  """``loss_fn`` with trace-time checks of what it returns."""

  def objective(model, batch):
    loss, aux = loss_fn(model, batch)
    if jnp.shape(loss) != ():
      raise ValueError("loss_fn must return a scalar loss, got shape "
                       f"{jnp.shape(loss)}.")
    if not isinstance(aux, Mapping):
      raise TypeError("loss_fn must return (loss, dict_of_scalars), got aux "
                      f"of type {type(aux).__name__}.")
    for k, v in aux.items():
      if jnp.shape(v) != ():
        raise ValueError(f"aux metric `{k}` must be a scalar, got shape "
                         f"{jnp.shape(v)}.")
    return loss, dict(aux)

  return objective


def grad_step(graphdef: nnx.GraphDef, loss_fn: LossFn, state: nnx.State,
              batch: dict[str, jax.Array]
              ) -> tuple[nnx.State, jax.Array, dict[str, jax.Array]]:
  """One optimiser step on the split ``(model, nnx.Optimizer)`` state.

  A pure function of arrays (``nnx.merge`` only at trace time), so it can be
  jitted, scanned over batches and vmapped over seeds.

  Returns:
    ``(new_state, loss, aux)``.
  """
  model, optimizer = nnx.merge(graphdef, state)
  model.train()
  (loss, aux), grads = nnx.value_and_grad(
      _checked_objective(loss_fn), has_aux=True)(model, batch)
  optimizer.update(model, grads)
  return nnx.state((model, optimizer)), loss, aux


def new_accumulator(aux: Mapping[str, Any]) -> dict[str, Any]:
  """Zeroed on-device metric sums and the first-non-finite-step marker."""
  return {"loss": jnp.zeros((), jnp.float32),
          "aux": {k: jnp.zeros((), jnp.float32) for k in aux},
          "bad_step": jnp.full((), -1, jnp.int32),
          "bad_loss": jnp.zeros((), jnp.float32)}


def accumulate(acc: dict[str, Any], loss: jax.Array,
               aux: Mapping[str, jax.Array], step: jax.Array
               ) -> dict[str, Any]:
  """Adds one step's loss and aux to ``acc``; remembers the first bad step."""
  first = (acc["bad_step"] < 0) & ~jnp.isfinite(loss)
  return {"loss": acc["loss"] + loss.astype(jnp.float32),
          "aux": {k: acc["aux"][k] + jnp.asarray(v, jnp.float32)
                  for k, v in aux.items()},
          "bad_step": jnp.where(first, step, acc["bad_step"]),
          "bad_loss": jnp.where(first, loss.astype(jnp.float32),
                                acc["bad_loss"])}


class Trainer:
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
          "state": _state_signature(state),
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
    # The loss is traced once, by this inner jit; the host step and every
    # on-device epoch call it and reuse its trace.
    self._inner_step = jax.jit(self._train_step_impl)
    self._train_step = jax.jit(
        self._host_step,
        in_shardings=(self._replicated, self._replicated, self._sharded,
                      self._replicated),
        out_shardings=(self._replicated, self._replicated),
        donate_argnums=(0, 1), compiler_options=self._compiler_options or None)
    self._epoch_fns: dict[Any, Callable[..., Any]] = {}
    self._placed: tuple[DeviceEpochs, dict[str, jax.Array]] | None = None
    self._output_fns: dict[Any, Callable[..., Any]] = {}

  # ---------------------------------------------------------------- steps --

  def _train_step_impl(self, state, batch):
    self.trace_count += 1  # Python side effect: runs once per trace.
    return grad_step(self._graphdef, self._loss_fn, state, batch)

  def _host_step(self, state, acc, batch, step):
    state, loss, aux = self._inner_step(state, batch)
    return state, accumulate(acc, loss, aux, step)

  def _new_acc(self, batch_like: Mapping[str, Any]) -> dict[str, Any]:
    _, _, aux = self._inner_step.eval_shape(self._state, dict(batch_like))
    return replicate(new_accumulator(aux), self._replicated)

  def _epoch_fn(self, data: DeviceEpochs) -> Callable[..., Any]:
    """The jitted on-device epoch for data of this size and order."""
    cache_key = (data.num_examples, data.batch_size, data.shuffle)
    if cache_key not in self._epoch_fns:
      n, size, shuffle = cache_key
      sharded = self._sharded

      def epoch(state, acc, arrays, key, step0):
        idx = epoch_indices(key, n, size, shuffle=shuffle)

        def body(carry, xs):
          state, acc = carry
          i, rows = xs
          batch = jax.lax.with_sharding_constraint(
              {k: v[rows] for k, v in arrays.items()}, sharded)
          state, loss, aux = self._inner_step(state, batch)
          return (state, accumulate(acc, loss, aux, step0 + i + 1)), None

        steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
        (state, acc), _ = jax.lax.scan(body, (state, acc), (steps, idx))
        return state, acc

      self._epoch_fns[cache_key] = jax.jit(
          epoch, out_shardings=(self._replicated, self._replicated),
          donate_argnums=(0, 1),
          compiler_options=self._compiler_options or None)
    return self._epoch_fns[cache_key]

  def _output_fn(self, fn: OutputFn) -> Callable[..., Any]:
    if fn not in self._output_fns:
      graphdef = self._graphdef

      def run(state, batch):
        model, _ = nnx.merge(graphdef, state)
        model.eval()
        out = fn(model, batch)
        if not isinstance(out, Mapping):
          raise TypeError("the evaluation function must return a dict of "
                          f"per-example arrays, got {type(out).__name__}.")
        size = next(iter(batch.values())).shape[0]
        for k, v in out.items():
          if jax.numpy.ndim(v) < 1 or jax.numpy.shape(v)[0] != size:
            raise ValueError(
                f"output `{k}` must be per-example with leading axis {size}, "
                f"got shape {jax.numpy.shape(v)}; return values before "
                "averaging over the batch.")
        return dict(out)

      # Several processes: every process gets all outputs.
      out_sharding = (self._sharded if self._sharded.is_fully_addressable
                      else self._replicated)
      self._output_fns[fn] = jax.jit(
          run, in_shardings=(self._replicated, self._sharded),
          out_shardings=out_sharding,
          compiler_options=self._compiler_options or None)
    return self._output_fns[fn]

  def _outputs(self, batches: Iterable[Batch], fn: OutputFn
               ) -> Iterator[dict[str, np.ndarray]]:
    run = self._output_fn(fn)
    padded_size = 0
    for i, batch in enumerate(batches):
      size = check_batch(batch, 1, where=f"evaluation batch {i}")
      if self._check_inputs and (bad := _nonfinite(batch)):
        raise NonFiniteError(
            f"evaluation batch {i} contains NaN/inf in {', '.join(bad)}.")
      # One padded size for all batches, so a short last batch does not
      # trigger a second compilation.
      padded_size = max(padded_size,
                        -(-size // self.num_shards) * self.num_shards)
      out = run(self._state, shard_batch(_pad(batch, padded_size),
                                         self.mesh))
      yield {k: np.asarray(v)[:size] for k, v in jax.device_get(out).items()}

  def evaluate(self, batches: Iterable[Batch], metrics_fn: OutputFn
               ) -> dict[str, float]:
    """Averages per-example metrics over batches, in eval mode.

    Batches of any size are padded to a multiple of the device count and
    the padding is dropped before averaging. ``metrics_fn`` is compiled once
    per function object: pass the same (module-level) function every time.

    Args:
      batches: iterable of host batches (dicts of arrays).
      metrics_fn: ``metrics_fn(model, batch) -> {name: [batch] array}``
        (e.g. per-example correctness or loss), traced under ``jax.jit``.

    Returns:
      ``{name: mean over all examples}`` as Python floats.

    Raises:
      ValueError: no batches, or outputs that are not per-example.
      NonFiniteError: NaN/inf in a batch (when ``check_inputs``).
    """
    sums: dict[str, float] = {}
    count = 0
    for out in self._outputs(batches, metrics_fn):
      for k, v in out.items():
        if v.ndim != 1:
          raise ValueError(f"metric `{k}` must have shape [batch], got "
                           f"[batch, ...] with shape {v.shape}.")
        sums[k] = sums.get(k, 0.0) + float(np.sum(v, dtype=np.float64))
      count += len(next(iter(out.values()))) if out else 0
    if count == 0:
      raise ValueError("evaluate() got no batches (or no outputs).")
    return {k: s / count for k, s in sums.items()}

  def predict(self, batches: Iterable[Batch], output_fn: OutputFn
              ) -> dict[str, np.ndarray]:
    """Collects per-example outputs (e.g. logits) over batches, in eval mode.

    Args:
      batches: iterable of host batches (dicts of arrays).
      output_fn: ``output_fn(model, batch) -> {name: [batch, ...] array}``.

    Returns:
      ``{name: [num_examples, ...] numpy array}``, in batch order.

    Raises:
      ValueError: no batches.
    """
    parts: dict[str, list[np.ndarray]] = {}
    for out in self._outputs(batches, output_fn):
      for k, v in out.items():
        parts.setdefault(k, []).append(v)
    if not parts:
      raise ValueError("predict() got no batches (or no outputs).")
    return {k: np.concatenate(v) for k, v in parts.items()}

  # ---------------------------------------------------------------- state --

  @property
  def model(self) -> nnx.Module:
    """A copy of the current model (safe to keep: never donated)."""
    model, _ = nnx.merge(self._graphdef, self._state)
    nnx.update(model, _copy(process_local(nnx.state(model))))
    return model

  def _model_state(self) -> nnx.State:
    return self._state[0]

  def _set_model_state(self, model_state: nnx.State) -> None:
    model, optimizer = nnx.merge(self._graphdef, self._state)
    nnx.update(model, _copy(model_state))
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
    nnx.update(self._user_model, _copy(process_local(self._model_state())))
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
        if self._check_inputs and (bad := _nonfinite(batch)):
          if acc is not None:
            self._check_window(acc, epoch, start_step)  # earlier bad loss
          raise NonFiniteError(
              f"{where}: the input batch contains NaN/inf in "
              f"{', '.join(bad)}. Training stopped; " + self._last_good())
        batch = shard_batch(batch, self.mesh)
        if acc is None:
          acc = self._new_acc(batch)
        self._state, acc = self._train_step(self._state, acc, batch,
                                            np.int32(step))
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
    arrays = self._placed[1]
    like = {k: jax.ShapeDtypeStruct((data.batch_size,) + v.shape[1:],
                                    v.dtype, sharding=self._sharded)
            for k, v in arrays.items()}
    start_step = self.step
    self._state, acc = self._epoch_fn(data)(
        self._state, self._new_acc(like), arrays, data.epoch_key(epoch),
        np.int32(start_step))
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
      self._best_state = _copy(self._model_state())
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
