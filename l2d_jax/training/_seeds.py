"""Several seeds of a small model trained at once: ``jax.vmap`` over state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from l2d_jax.training._mesh import SEED_AXIS
from l2d_jax.training._mesh import seed_mesh
from l2d_jax.training._seed_orders import _ORDERS
from l2d_jax.training._seed_orders import _epoch_order
from l2d_jax.training._programs import default_compiler_options
from l2d_jax.training._steps import LossFn
from l2d_jax.training._steps import NonFiniteError
from l2d_jax.training._steps import OutputFn
from l2d_jax.training._steps import grad_step


def _on_host(tree: Any) -> bool:
  """Whether every leaf of ``tree`` can be moved through numpy.

  Stacking, copying and per-seed selection of small states are done on the
  host then: a jitted ``jnp.stack`` or ``jnp.where`` compiles once per
  leaf shape (about 1.5 s of CPU for the ten architectures of the MoG
  calibration sweep) to move a few kilobytes.
  """
  return all(not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
             and getattr(x, "is_fully_addressable", True)
             for x in jax.tree.leaves(tree))


def _stack(trees: Sequence[Any]) -> Any:
  if _on_host(trees):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                        *trees)
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _copy(tree: Any, sharding: NamedSharding) -> Any:
  """A copy of ``tree`` (whose buffers are about to be donated)."""
  if _on_host(tree):
    return jax.device_put(jax.device_get(tree), sharding)
  return jax.tree.map(lambda x: x.copy(), tree)


def _select(pred: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``pred`` (a scalar) else ``old``, leaf by leaf (keys too)."""

  def pick(a, b):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(
          jnp.where(pred, jax.random.key_data(a), jax.random.key_data(b)),
          impl=jax.random.key_impl(a))
    return jnp.where(pred, a, b)

  return jax.tree.map(pick, new, old)


def _host_arrays(arrays: Mapping[str, Any], num_seeds: int, name: str
                 ) -> dict[str, np.ndarray]:
  if not isinstance(arrays, Mapping) or not arrays:
    raise TypeError(f"`{name}` must be a non-empty dict of arrays "
                    "[num_seeds, num_examples, ...].")
  out = {k: np.asarray(v) for k, v in arrays.items()}
  shapes = {k: v.shape[:2] for k, v in out.items()}
  first = next(iter(shapes.values()))
  if (any(v.ndim < 2 for v in out.values()) or first[0] != num_seeds
      or any(s != first for s in shapes.values())):
    raise ValueError(
        f"`{name}` entries must share shape [num_seeds={num_seeds}, "
        f"num_examples, ...], got {({k: v.shape for k, v in out.items()})}.")
  for k, v in out.items():
    if np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all():
      raise ValueError(f"`{name}['{k}']` contains "
                       f"{v.size - int(np.isfinite(v).sum())} NaN/inf values.")
  return out




def _pad_examples(arrays: dict[str, np.ndarray], size: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Pads axis 1 to a multiple of ``size`` (repeating the last example)."""
  n = next(iter(arrays.values())).shape[1]
  total = -(-n // size) * size
  mask = np.arange(total) < n
  if total == n:
    return arrays, mask
  padded = {k: np.concatenate(
      [v, np.repeat(v[:, -1:], total - n, axis=1)], axis=1)
            for k, v in arrays.items()}
  return padded, mask


class SeedTrainer:
  """Trains one copy of a small model per seed, all seeds in one program.

  The per-seed ``(model, nnx.Optimizer)`` states are stacked along a
  leading seed axis and every epoch is one compiled function: ``jax.vmap``
  over seeds of a ``lax.scan`` over that seed's batches, then an
  evaluation on that seed's validation data and an early-stopping update.
  The batch orders are drawn on the device by each seed's key, as
  :class:`DeviceEpochs` draws them, ``sync_every`` epochs at a time in a
  separate program shared by every trainer of the process; runs with the
  same key draw them once, and recent orders are kept (up to 128 MiB), so
  trainers that reuse keys one after another (the settings and surrogates
  of one seed) draw them once too.
  With several devices the seed axis is sharded over a ``('seed',)`` mesh
  (``NamedSharding``). Each seed gives the same result as a separate
  :class:`Trainer` run on ``DeviceEpochs(train[s], batch_size, key=keys[s])``
  with ``eval_fn=lambda: trainer.evaluate(val batches, metrics_fn)``: a
  seed that stops early is frozen (its parameters, optimiser state and best
  model no longer change) while the others go on.

  Meant for small models whose steps do not fill the device (the MoG MLP of
  the calibration experiment): the seeds share each kernel launch. There is
  no checkpointing; losses and monitored values are checked for NaN/inf
  every ``sync_every`` epochs.

  Args:
    models: one NNX module per seed, all with the same structure (e.g. the
      same constructor with ``nnx.Rngs(seed)``).
    tx: optax transformation applied to the ``nnx.Param`` variables.
    loss_fn: ``loss_fn(model, batch) -> (scalar loss, {name: scalar})``, as
      for :class:`Trainer`; it sees one seed's batch.
    mesh: a mesh with a ``'seed'`` axis whose size divides the number of
      seeds (default :func:`seed_mesh`).
    compiler_options: XLA compile options (default
      ``default_compiler_options(mesh)``).

  Raises:
    ValueError: no models, models of different structure, or a mesh that
      does not fit the seeds.

  Example:
    >>> import jax, numpy as np, optax
    >>> from flax import nnx
    >>> from l2d_jax.models import MLP
    >>> def loss_fn(model, batch):
    ...   logits = model(batch["x"])
    ...   return optax.softmax_cross_entropy_with_integer_labels(
    ...       logits, batch["y"]).mean(), {}
    >>> models = [MLP(2, (8,), 2, rngs=nnx.Rngs(s)) for s in range(3)]
    >>> trainer = SeedTrainer(models, optax.sgd(0.1), loss_fn)
    >>> data = {"x": np.random.rand(3, 64, 2).astype(np.float32),
    ...         "y": np.random.randint(0, 2, (3, 64))}
    >>> keys = jax.random.split(jax.random.key(0), 3)
    >>> histories = trainer.fit(data, 2, batch_size=16, keys=keys)
    >>> [len(h) for h in histories]
    [2, 2, 2]
  """

  def __init__(
      self,
      models: Sequence[nnx.Module],
      tx: optax.GradientTransformation,
      loss_fn: LossFn,
      *,
      mesh: Mesh | None = None,
      compiler_options: Mapping[str, str] | None = None,
  ):
    models = list(models)
    if not models:
      raise ValueError("`models` must hold at least one model.")
    self.num_seeds = len(models)
    self.mesh = seed_mesh(self.num_seeds) if mesh is None else mesh
    if SEED_AXIS not in self.mesh.axis_names:
      raise ValueError(f"the mesh needs an axis named {SEED_AXIS!r}, got "
                       f"{self.mesh.axis_names}.")
    if self.num_seeds % int(self.mesh.shape[SEED_AXIS]):
      raise ValueError(
          f"{self.num_seeds} seeds cannot be split over the "
          f"{self.mesh.shape[SEED_AXIS]} devices of the seed axis; use "
          "seed_mesh(num_seeds).")
    states = []
    graphdef = None
    for i, model in enumerate(models):
      gd, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
      if graphdef is None:
        graphdef = gd
      elif gd != graphdef:
        raise ValueError(f"models[{i}] differs in structure from models[0]; "
                         "all seeds must share one architecture.")
      states.append(state)
    self._graphdef = graphdef
    self._graphdef_model = nnx.split(models[0])[0]
    self._loss_fn = loss_fn
    self._sharded = NamedSharding(self.mesh, P(SEED_AXIS))
    self._replicated = NamedSharding(self.mesh, P())
    self._state = jax.device_put(_stack(states), self._sharded)
    if compiler_options is None:
      compiler_options = default_compiler_options(self.mesh)
    self._compiler_options = dict(compiler_options) or None
    self._fns: dict[Any, Callable[..., Any]] = {}
    self.trace_count = 0
    self.epoch = 0

  # ------------------------------------------------------------- helpers --

  def _model_state(self, state: nnx.State) -> nnx.State:
    return state[0]

  def _merge_model(self, state):
    model, _ = nnx.merge(self._graphdef, state)
    return model

  def _mean_outputs(self, fn: OutputFn, state, chunks, mask, size: int):
    """Masked means of ``fn``'s per-example outputs over one seed's data.

    ``chunks`` are that seed's arrays ``[steps, size, ...]`` and ``mask``
    ``[steps, size]`` marks the real examples.
    """
    model = self._merge_model(state)
    model.eval()

    def batch_sums(xs):
      batch, keep = xs
      out = fn(model, batch)
      if not isinstance(out, Mapping):
        raise TypeError("metrics_fn must return a dict of per-example "
                        f"arrays, got {type(out).__name__}.")
      for k, v in out.items():
        if jnp.shape(v) != (size,):
          raise ValueError(f"metric `{k}` must have shape [batch] = "
                           f"({size},), got {jnp.shape(v)}.")
      return {k: jnp.sum(jnp.where(keep, v.astype(jnp.float32), 0.0))
              for k, v in out.items()}

    sums = jax.lax.map(batch_sums, (chunks, mask))
    count = jnp.sum(mask).astype(jnp.float32)
    return {k: jnp.sum(v) / count for k, v in sums.items()}

  # ----------------------------------------------------------------- fit --

  def _epoch_fn(self, *, n: int, batch_size: int,
                metrics_fn: OutputFn | None, eval_size: int,
                monitor: str | None, mode: str, patience: int | None):
    cache_key = (n, batch_size, metrics_fn, eval_size, monitor, mode,
                 patience)
    if cache_key in self._fns:
      return self._fns[cache_key]
    graphdef, loss_fn = self._graphdef, self._loss_fn

    def train_step(state, batch):
      self.trace_count += 1  # Python side effect: once per trace.
      return grad_step(graphdef, loss_fn, state, batch)

    def one_seed(state, best, es, train, val, mask, idx, epoch, step0):
      # idx: this seed's order of this epoch, drawn outside the program.

      def body(state, rows):
        state, loss, aux = train_step(
            state, {k: v[rows] for k, v in train.items()})
        return state, (loss.astype(jnp.float32),
                       {k: jnp.asarray(v, jnp.float32)
                        for k, v in aux.items()})

      new_state, (losses, auxs) = jax.lax.scan(body, state, idx)
      finite = jnp.isfinite(losses)
      first_bad = jnp.argmin(finite)  # first False (0 if all finite)
      active = ~es["stopped"]
      record = {"train/loss": jnp.mean(losses),
                **{f"train/{k}": jnp.mean(v) for k, v in auxs.items()},
                "bad_step": jnp.where(active & ~finite.all(),
                                      step0 + first_bad + 1, -1),
                "bad_loss": losses[first_bad], "active": active}
      if metrics_fn is not None:
        metrics = self._mean_outputs(metrics_fn, new_state, val, mask,
                                     eval_size)
        record.update({f"eval/{k}": v for k, v in metrics.items()})
      if monitor is not None:
        value = metrics[monitor]
        record["monitor_finite"] = jnp.isfinite(value) | ~active
        better = (value > es["best_value"] if mode == "max"
                  else value < es["best_value"])
        improved = active & better
        best = _select(improved, self._model_state(new_state), best)
        bad = jnp.where(improved, 0, es["bad_epochs"] + 1)
        stop = (bad >= patience) if patience is not None else False
        es = {"best_value": jnp.where(improved, value, es["best_value"]),
              "best_epoch": jnp.where(improved, epoch + 1, es["best_epoch"]),
              "bad_epochs": jnp.where(active, bad, es["bad_epochs"]),
              "stopped": es["stopped"] | (active & stop)}
      state = _select(active, new_state, state)
      return state, best, es, record

    # val arrives chunk-major, [steps, seeds, size, ...] (see fit): the
    # evaluation loop then reads it in place instead of transposing it
    # every epoch.
    vmapped = jax.vmap(one_seed, in_axes=(0, 0, 0, 0, 1, None, 0, None, None))
    fn = jax.jit(vmapped, donate_argnums=(0, 1, 2),
                 out_shardings=self._sharded,
                 compiler_options=self._compiler_options)
    self._fns[cache_key] = fn
    return fn

  def fit(
      self,
      train: Mapping[str, Any],
      num_epochs: int,
      *,
      batch_size: int,
      keys: jax.Array,
      shuffle: bool = True,
      val: Mapping[str, Any] | None = None,
      metrics_fn: OutputFn | None = None,
      eval_batch_size: int | None = None,
      monitor: str | None = None,
      mode: str = "max",
      patience: int | None = None,
      restore_best: bool = True,
      sync_every: int = 10,
  ) -> list[list[dict[str, Any]]]:
    """Trains every seed for ``num_epochs`` epochs or until it stops early.

    Args:
      train: dict of arrays ``[num_seeds, num_examples, ...]``: each seed's
        own training data (same size for all seeds).
      num_epochs: maximum number of epochs.
      batch_size: examples per step; the remainder of each epoch's order is
        dropped (all batches full, so everything compiles once).
      keys: ``[num_seeds]`` data-order keys; seed ``s`` draws epoch ``e``'s
        order from ``fold_in(keys[s], e)`` like ``DeviceEpochs(...,
        key=keys[s])``.
      shuffle: permute the examples each epoch.
      val: dict of arrays ``[num_seeds, num_val, ...]`` evaluated after each
        epoch with ``metrics_fn`` (eval mode).
      metrics_fn: ``metrics_fn(model, batch) -> {name: [batch] array}``; the
        epoch record holds the means over each seed's ``val`` as
        ``eval/<name>``.
      eval_batch_size: batch size of the evaluation (default: all of
        ``val`` at once); ``val`` is padded to a multiple and masked.
      monitor: ``metrics_fn`` key for early stopping and the best model.
      mode: ``'max'`` or ``'min'``.
      patience: stop a seed after this many epochs without strict
        improvement (``None``: never stop early).
      restore_best: end with each seed's best model (by ``monitor``); the
        optimiser state is the last.
      sync_every: the host reads the epoch records (and checks for NaN/inf
        and whether every seed has stopped) every this many epochs.

    Returns:
      One history per seed: a list of epoch records ``{"epoch", "step",
      "train/loss", "train/<aux>", "eval/<name>"}`` up to that seed's last
      epoch (its early stop or ``num_epochs``).

    Raises:
      ValueError: bad shapes or options, NaN/inf in the data.
      NonFiniteError: a non-finite training loss or monitored value; the
        message names the seed, the epoch and the first bad step.
    """
    if mode not in ("max", "min"):
      raise ValueError(f"`mode` must be 'max' or 'min', got {mode!r}.")
    if (val is None) != (metrics_fn is None):
      raise ValueError("`val` and `metrics_fn` go together.")
    if monitor is not None and metrics_fn is None:
      raise ValueError("`monitor` needs `val` and a `metrics_fn`.")
    if patience is not None and (monitor is None or patience < 1):
      raise ValueError("`patience` needs a `monitor` and must be >= 1.")
    if num_epochs < 1 or sync_every < 1:
      raise ValueError(f"`num_epochs` and `sync_every` must be >= 1, got "
                       f"{num_epochs} and {sync_every}.")
    s = self.num_seeds
    train = _host_arrays(train, s, "train")
    n = next(iter(train.values())).shape[1]
    if not 1 <= batch_size <= n:
      raise ValueError(f"`batch_size` must lie in [1, {n}] (the number of "
                       f"examples per seed), got {batch_size}.")
    keys = jnp.asarray(keys)
    if keys.shape != (s,) or not jnp.issubdtype(keys.dtype,
                                                 jax.dtypes.prng_key):
      raise ValueError(f"`keys` must be {s} jax.random keys (shape "
                       f"({s},)), got {keys.dtype} {keys.shape}.")
    if val is not None:
      val = _host_arrays(val, s, "val")
      n_val = next(iter(val.values())).shape[1]
      eval_size = min(eval_batch_size or n_val, n_val)
      val, mask = _pad_examples(val, eval_size)
      steps_val = mask.size // eval_size
      val = {k: np.ascontiguousarray(np.swapaxes(
          v.reshape((s, steps_val, eval_size) + v.shape[2:]), 0, 1))
             for k, v in val.items()}
      mask = mask.reshape(steps_val, eval_size)
    else:
      val, mask, eval_size = {}, np.zeros((0, 0), bool), 0
    fn = self._epoch_fn(n=n, batch_size=batch_size,
                        metrics_fn=metrics_fn, eval_size=eval_size,
                        monitor=monitor, mode=mode, patience=patience)
    steps = n // batch_size
    train = jax.device_put(train, self._sharded)
    val = jax.device_put(val, NamedSharding(self.mesh, P(None, SEED_AXIS)))
    mask = jax.device_put(mask, self._replicated)
    # Runs that share a key share its orders: draw them once per window.
    key_data = np.asarray(jax.random.key_data(keys))
    unique, which = np.unique(key_data.reshape(s, -1), axis=0,
                              return_inverse=True)
    unique_keys = jax.random.wrap_key_data(
        unique.reshape((-1,) + key_data.shape[1:]),
        impl=jax.random.key_impl(keys))
    which = jax.device_put(np.asarray(which, np.int32).reshape(s),
                           self._sharded)
    window = min(sync_every, num_epochs)
    worst = -np.inf if mode == "max" else np.inf
    es = jax.device_put({
        "best_value": np.full(s, worst, np.float32),
        "best_epoch": np.zeros(s, np.int32),
        "bad_epochs": np.zeros(s, np.int32),
        "stopped": np.zeros(s, bool)}, self._sharded)
    best = _copy(self._model_state(self._state), self._sharded)
    histories: list[list[dict[str, Any]]] = [[] for _ in range(s)]
    pending = []
    state = self._state
    self._state = None  # donated below; restored at the end
    try:
      for epoch in range(num_epochs):
        if epoch % window == 0:
          orders = jax.device_put(_ORDERS.get(
              unique_keys, epoch, num_examples=n, batch_size=batch_size,
              shuffle=shuffle, num_epochs=window), self._replicated)
        idx = _epoch_order(orders, which, np.int32(epoch % window))
        state, best, es, record = fn(state, best, es, train, val, mask, idx,
                                     np.int32(epoch), np.int32(epoch * steps))
        pending.append(record)
        last = epoch == num_epochs - 1
        if len(pending) == sync_every or last:
          first_epoch = epoch + 1 - len(pending)
          records, stopped = jax.device_get((pending, es["stopped"]))
          pending = []
          self._collect(records, first_epoch, steps, histories)
          if stopped.all():
            break
    finally:
      self._state = state
    self.epoch = max(len(h) for h in histories)
    if restore_best and monitor is not None:
      model_state = _select_seeds(np.asarray(es["best_epoch"]) > 0, best,
                                  self._model_state(state), self._sharded)
      model, optimizer = nnx.merge(self._graphdef, state)
      nnx.update(model, model_state)
      self._state = nnx.state((model, optimizer))
    self.best_epochs = np.asarray(es["best_epoch"]).tolist()
    return histories

  def _collect(self, records, first_epoch: int, steps: int,
               histories: list[list[dict[str, Any]]]) -> None:
    for offset, rec in enumerate(records):
      epoch = first_epoch + offset + 1
      for seed in range(self.num_seeds):
        if not rec["active"][seed]:
          continue
        if rec["bad_step"][seed] >= 0:
          raise NonFiniteError(
              f"seed {seed}: non-finite loss ({float(rec['bad_loss'][seed])})"
              f" at step {int(rec['bad_step'][seed])} (epoch index "
              f"{epoch - 1}). Training stopped.")
        if "monitor_finite" in rec and not rec["monitor_finite"][seed]:
          raise NonFiniteError(
              f"seed {seed}: the monitored metric is not finite after epoch "
              f"{epoch}. Training stopped.")
        out = {"epoch": epoch, "step": epoch * steps}
        out.update({k: float(v[seed]) for k, v in rec.items()
                    if k.startswith(("train/", "eval/"))})
        histories[seed].append(out)

  # ---------------------------------------------------------- inference --

  def _apply_fn(self, fn: OutputFn, size: int) -> Callable[..., Any]:
    cache_key = ("apply", fn, size)
    if cache_key not in self._fns:

      def one_seed(state, arrays):
        model = self._merge_model(state)
        model.eval()
        n = next(iter(arrays.values())).shape[0]
        chunks = jax.tree.map(
            lambda v: v.reshape((n // size, size) + v.shape[1:]), arrays)
        out = jax.lax.map(lambda b: dict(fn(model, b)), chunks)
        return jax.tree.map(
            lambda v: v.reshape((n,) + v.shape[2:]), out)

      self._fns[cache_key] = jax.jit(
          jax.vmap(one_seed), out_shardings=self._sharded,
          compiler_options=self._compiler_options)
    return self._fns[cache_key]

  def predict(self, arrays: Mapping[str, Any], output_fn: OutputFn, *,
              batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Per-example outputs of every seed's model, in eval mode.

    Args:
      arrays: dict of arrays ``[num_seeds, num_examples, ...]``.
      output_fn: ``output_fn(model, batch) -> {name: [batch, ...]}``.
      batch_size: examples per forward pass (default: all at once).

    Returns:
      ``{name: [num_seeds, num_examples, ...] numpy array}``.
    """
    host = _host_arrays(arrays, self.num_seeds, "arrays")
    n = next(iter(host.values())).shape[1]
    size = min(batch_size or n, n)
    padded, _ = _pad_examples(host, size)
    out = self._apply_fn(output_fn, size)(
        self._state, jax.device_put(padded, self._sharded))
    return {k: np.asarray(v)[:, :n] for k, v in jax.device_get(out).items()}

  @property
  def models(self) -> list[nnx.Module]:
    """One model per seed (copies; safe to keep)."""
    out = []
    for seed in range(self.num_seeds):
      state = jax.tree.map(lambda v, i=seed: v[i].copy(),
                           self._model_state(self._state))
      out.append(nnx.merge(self._graphdef_model, state))
    return out


def _select_seeds(pred: np.ndarray, new: Any, old: Any,
                  sharding: NamedSharding) -> Any:
  """Per-seed choice between two stacked states (``pred``: ``[seeds]``)."""
  if _on_host((new, old)):
    pick = lambda a, b: np.where(pred.reshape((-1,) + (1,) * (a.ndim - 1)),
                                 a, b)
    return jax.device_put(
        jax.tree.map(pick, *jax.device_get((new, old))), sharding)
  return jax.vmap(_select)(jnp.asarray(pred), new, old)
