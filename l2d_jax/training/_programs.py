"""Compile options and the compiled programs of :class:`Trainer`.

The programs (train step, on-device epoch, evaluation) are built by
module-level functions from what they depend on: the split model/optimiser
``GraphDef``, the loss or output function, the shardings, the compile
options and static sizes. They are kept in one process-wide cache, so a new
``Trainer`` of the same architecture, with the same optimiser object and the
same loss function (e.g. the seeds of a model trained one after another)
runs the programs an earlier trainer compiled instead of compiling them
again. Traces are counted per thread, so each trainer reports the traces its
own calls caused.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding

from l2d_jax import _xla_options
from l2d_jax.training._batching import epoch_indices
from l2d_jax.training._steps import LossFn
from l2d_jax.training._steps import OutputFn
from l2d_jax.training._steps import accumulate
from l2d_jax.training._steps import grad_step
from l2d_jax.training._steps import new_accumulator

# Experimental XLA CPU option: run dots and reductions through YNNPACK but not
# convolutions, whose YNNPACK path is slow for small-channel convs (SmallCNN:
# 62.9 -> 39.2 ms per step; WRN-16-4: 582 -> 495 ms; benchmarks/train_step.py).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def _options_supported(device: jax.Device, options: Mapping[str, Any], *,
                       what: str = "the trainer's default") -> bool:
  """``_xla_options.supported``, with the trainer's hint (probed once)."""
  return _xla_options.supported(
      device, options, what=what,
      hint="Pass compiler_options={} to silence this.", stacklevel=3)


def _local_device(mesh: Mesh | None) -> jax.Device:
  if mesh is None:
    return jax.local_devices()[0]
  here = jax.process_index()
  return next((d for d in mesh.devices.flat if d.process_index == here),
              mesh.devices.flat[0])


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
  device = _local_device(mesh)
  if device.platform != "cpu" or not CPU_COMPILER_OPTIONS:
    return {}
  if not _options_supported(device, CPU_COMPILER_OPTIONS):
    return {}
  return dict(CPU_COMPILER_OPTIONS)


def cpu_compiler_options(options: Mapping[str, Any], *,
                         mesh: Mesh | None = None) -> dict[str, Any]:
  """``options`` on a CPU whose jaxlib accepts them, else ``{}``.

  For XLA options that are CPU-specific or experimental (an unknown option
  is a compile error): probed once per process like
  :func:`default_compiler_options`; one ``RuntimeWarning`` if this jaxlib
  rejects them. Off CPU (``mesh``'s platform, default the first local
  device) the result is ``{}``.

  Args:
    options: XLA compile options, e.g. ``{"xla_cpu_use_fusion_emitters":
      False}`` (XLA's classic loop emitters: shorter compiles of small
      programs; the MoG calibration programs give bitwise the same numbers).
    mesh: the mesh the program is compiled for.

  Returns:
    A new dict: ``options`` or ``{}``.

  Example:
    >>> cpu_compiler_options({})
    {}
  """
  device = _local_device(mesh)
  if device.platform != "cpu" or not options:
    return {}
  if not _options_supported(device, options, what="the requested"):
    return {}
  return dict(options)


# ----------------------------------------------------------- trace count --

_LOCAL = threading.local()


def traces() -> int:
  """Loss traces made so far on this thread (a trace runs on its caller)."""
  return getattr(_LOCAL, "traces", 0)


def _count_trace() -> None:
  _LOCAL.traces = traces() + 1


# --------------------------------------------------------------- cache ----


class _Programs:
  """Least recently used jitted functions, keyed by what they depend on.

  A jitted function keeps its own compiled executables (one per input
  shape), so two trainers that get the same entry share compilations.
  """

  def __init__(self, max_entries: int):
    self.max_entries = max_entries
    self._items: collections.OrderedDict[Any, Callable[..., Any]] = (
        collections.OrderedDict())
    self._lock = threading.Lock()

  def get(self, key: Any, build: Callable[[], Callable[..., Any]]
          ) -> Callable[..., Any]:
    with self._lock:
      if key in self._items:
        self._items.move_to_end(key)
        return self._items[key]
      fn = build()
      self._items[key] = fn
      while len(self._items) > self.max_entries:
        self._items.popitem(last=False)
      return fn

  def clear(self) -> None:
    with self._lock:
      self._items.clear()


PROGRAMS = _Programs(max_entries=64)


_options_key = _xla_options.options_key


# ------------------------------------------------------------- programs ---


def inner_step(graphdef: nnx.GraphDef, loss_fn: LossFn
               ) -> Callable[..., Any]:
  """``jit(grad_step)``: traces the loss once for every program using it."""

  def build():
    def step(state, batch):
      _count_trace()  # Python side effect: runs once per trace.
      return grad_step(graphdef, loss_fn, state, batch)
    return jax.jit(step)

  return PROGRAMS.get(("inner", graphdef, loss_fn), build)


def host_step(graphdef: nnx.GraphDef, loss_fn: LossFn,
              replicated: NamedSharding, sharded: NamedSharding,
              options: Mapping[str, Any]) -> Callable[..., Any]:
  """``(state, acc, batch, step) -> (state, acc)``: one host-fed step."""
  inner = inner_step(graphdef, loss_fn)

  def build():
    def step(state, acc, batch, step_index):
      state, loss, aux = inner(state, batch)
      return state, accumulate(acc, loss, aux, step_index)
    return jax.jit(
        step, in_shardings=(replicated, replicated, sharded, replicated),
        out_shardings=(replicated, replicated), donate_argnums=(0, 1),
        compiler_options=dict(options) or None)

  return PROGRAMS.get(("host_step", graphdef, loss_fn, replicated, sharded,
                       _options_key(options)), build)


def device_epoch(graphdef: nnx.GraphDef, loss_fn: LossFn,
                 replicated: NamedSharding, sharded: NamedSharding,
                 options: Mapping[str, Any], *, num_examples: int,
                 batch_size: int, shuffle: bool, aux_names: tuple[str, ...]
                 ) -> Callable[..., Any]:
  """``(state, arrays, key, step0) -> (state, acc)``: one on-device epoch.

  The epoch's order is drawn from ``key`` (:func:`epoch_indices`), its
  batches gathered on the device and the steps run in one ``lax.scan``;
  the metric sums (of the loss's ``aux_names``) start from zero inside the
  program.
  """
  inner = inner_step(graphdef, loss_fn)

  def build():
    def epoch(state, arrays, key, step0):
      idx = epoch_indices(key, num_examples, batch_size, shuffle=shuffle)

      def body(carry, xs):
        state, acc = carry
        i, rows = xs
        batch = jax.lax.with_sharding_constraint(
            {k: v[rows] for k, v in arrays.items()}, sharded)
        state, loss, aux = inner(state, batch)
        return (state, accumulate(acc, loss, aux, step0 + i + 1)), None

      steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
      (state, acc), _ = jax.lax.scan(
          body, (state, new_accumulator(dict.fromkeys(aux_names))),
          (steps, idx))
      return state, acc

    return jax.jit(epoch, out_shardings=(replicated, replicated),
                   donate_argnums=(0,),
                   compiler_options=dict(options) or None)

  return PROGRAMS.get(("device_epoch", graphdef, loss_fn, replicated, sharded,
                       _options_key(options), int(num_examples),
                       int(batch_size), bool(shuffle), tuple(aux_names)),
                      build)


def output_program(graphdef: nnx.GraphDef, fn: OutputFn,
                   replicated: NamedSharding, sharded: NamedSharding,
                   out_sharding: NamedSharding, options: Mapping[str, Any]
                   ) -> Callable[..., Any]:
  """``(state, batch) -> {name: per-example array}`` in eval mode."""

  def build():
    def run(state, batch):
      model, _ = nnx.merge(graphdef, state)
      model.eval()
      out = fn(model, batch)
      if not isinstance(out, Mapping):
        raise TypeError("the evaluation function must return a dict of "
                        f"per-example arrays, got {type(out).__name__}.")
      size = next(iter(batch.values())).shape[0]
      for k, v in out.items():
        if jnp.ndim(v) < 1 or jnp.shape(v)[0] != size:
          raise ValueError(
              f"output `{k}` must be per-example with leading axis {size}, "
              f"got shape {jnp.shape(v)}; return values before averaging "
              "over the batch.")
      return dict(out)

    return jax.jit(run, in_shardings=(replicated, sharded),
                   out_shardings=out_sharding,
                   compiler_options=dict(options) or None)

  return PROGRAMS.get(("output", graphdef, fn, replicated, sharded,
                       out_sharding, _options_key(options)), build)
