"""The pure pieces of a training step, shared by both trainers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Batch = Mapping[str, Any]
LossFn = Callable[[nnx.Module, dict[str, jax.Array]],
                  tuple[jax.Array, Mapping[str, jax.Array]]]
OutputFn = Callable[[nnx.Module, dict[str, jax.Array]],
                    Mapping[str, jax.Array]]


class NonFiniteError(FloatingPointError):
  """NaN/inf in an input batch, the training loss or a monitored metric."""


def copy_tree(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.copy(), tree)


def state_signature(state: Any) -> dict[str, Any]:
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


def nonfinite_entries(batch: Batch) -> list[str]:
  bad = []
  for name, value in batch.items():
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
      bad.append(f"`{name}` ({arr.size - int(np.isfinite(arr).sum())} "
                 "NaN/inf values)")
  return bad


def pad_rows(batch: Batch, size: int) -> dict[str, np.ndarray]:
  """Pads every entry to ``size`` rows by repeating its last row."""
  out = {}
  for name, value in batch.items():
    arr = np.asarray(value)
    extra = size - arr.shape[0]
    out[name] = (np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)])
                 if extra else arr)
  return out


def checked_objective(loss_fn: LossFn):
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
      checked_objective(loss_fn), has_aux=True)(model, batch)
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
