"""Evaluation and prediction of :class:`Trainer`, in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from l2d_jax.training import _programs
from l2d_jax.training._mesh import check_batch
from l2d_jax.training._mesh import shard_batch
from l2d_jax.training._steps import Batch
from l2d_jax.training._steps import NonFiniteError
from l2d_jax.training._steps import OutputFn
from l2d_jax.training._steps import nonfinite_entries
from l2d_jax.training._steps import pad_rows


class Evaluation:
  """``evaluate`` and ``predict`` over host batches (mixed into Trainer).

  Uses the trainer's ``mesh``, ``num_shards``, ``_graphdef``, ``_state``,
  shardings, compile options and ``_check_inputs``.
  """

  _output_fns: dict[Any, Callable[..., Any]]

  def _output_fn(self, fn: OutputFn) -> Callable[..., Any]:
    if fn not in self._output_fns:
      # Several processes: every process gets all outputs.
      out_sharding = (self._sharded if self._sharded.is_fully_addressable
                      else self._replicated)
      self._output_fns[fn] = _programs.output_program(
          self._graphdef, fn, self._replicated, self._sharded, out_sharding,
          self._compiler_options)
    return self._output_fns[fn]

  def _outputs(self, batches: Iterable[Batch], fn: OutputFn
               ) -> Iterator[dict[str, np.ndarray]]:
    run = self._output_fn(fn)
    padded_size = 0
    for i, batch in enumerate(batches):
      size = check_batch(batch, 1, where=f"evaluation batch {i}")
      if self._check_inputs and (bad := nonfinite_entries(batch)):
        raise NonFiniteError(
            f"evaluation batch {i} contains NaN/inf in {', '.join(bad)}.")
      # One padded size for all batches, so a short last batch does not
      # trigger a second compilation.
      padded_size = max(padded_size,
                        -(-size // self.num_shards) * self.num_shards)
      out = run(self._state, shard_batch(pad_rows(batch, padded_size),
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
