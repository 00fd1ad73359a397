"""The conformal deferral sweep with its scores spread over processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from l2d_jax.distributed import _runtime

# Relative cost of one score in the sweep (RAPS also tunes k_reg and lam).
_SCORE_COST = {"lac": 1.0, "aps": 1.0, "raps": 2.0}


def assign_scores(scores: Sequence[str], num_processes: int
                  ) -> list[tuple[str, ...]]:
  """Which scores each process computes: greedy by cost, deterministic.

  Args:
    scores: score names in the caller's order.
    num_processes: number of processes.

  Returns:
    One tuple of scores per process (in the caller's order; a process may
    get none when there are fewer scores than processes).

  Example:
    >>> assign_scores(("lac", "aps", "raps"), 2)
    [('raps',), ('lac', 'aps')]
  """
  load = [0.0] * num_processes
  owner = {}
  for s in sorted(scores, key=lambda s: -_SCORE_COST.get(s, 1.0)):
    p = min(range(num_processes), key=lambda i: (load[i], i))
    owner[s] = p
    load[p] += _SCORE_COST.get(s, 1.0)
  return [tuple(s for s in scores if owner[s] == p)
          for p in range(num_processes)]


def _pad_scores(out: Any, size: int) -> Any:
  """Pads the score axis (axis 1) of the per-score fields to ``size``."""

  def pad(x):
    x = np.asarray(x)
    extra = size - x.shape[1]
    if extra <= 0:
      return x
    return np.concatenate(
        [x, np.zeros((x.shape[0], extra) + x.shape[2:], x.dtype)], axis=1)

  return {"strategies": jax.tree.map(pad, tuple(out.strategies)),
          "coverage": pad(out.coverage),
          "mean_set_size": pad(out.mean_set_size),
          "group_accuracy": (None if out.group_accuracy is None
                             else pad(out.group_accuracy)),
          "baselines": tuple(np.asarray(x) for x in out.baselines),
          "k_reg": np.asarray(out.k_reg), "lam": np.asarray(out.lam)}


def deferral_sweep(probs, labels, annotations, cal_idx, test_idx, alphas, *,
                   key: jax.Array,
                   scores: Sequence[str] = ("lac", "aps", "raps"),
                   **kwargs: Any):
  """``conformal.deferral_sweep`` with its scores computed by different processes.

  The same call and the same result as :func:`l2d_jax.conformal.deferral_sweep`
  (every process gets the whole result), but in a multi-process job each
  process computes only its share of the ``scores`` (:func:`assign_scores`)
  and the per-score results are all-gathered. Scores are the axis that
  splits exactly: the sweep's random draws depend on the split index and the
  key, and are shared by the scores, so each score's numbers do not depend
  on which other scores are computed with it. (Splitting the splits over
  processes would need the library to take the splits' global indices.)
  With one process this is ``conformal.deferral_sweep`` itself.

  Args:
    probs, labels, annotations, cal_idx, test_idx, alphas, key, scores:
      as for ``conformal.deferral_sweep``; every process passes the same.
    **kwargs: the other keyword options of ``conformal.deferral_sweep``.

  Returns:
    ``conformal.DeferralSweep`` with numpy arrays (``jax.Array`` with one
    process), identical on every process.

  Raises:
    ValueError, TypeError: as ``conformal.deferral_sweep`` (on the process
      that computes the offending score, or on all for shared arguments).

  Example:
    >>> from l2d_jax import data
    >>> ds = data.synthetic_pool(0, num_images=120, num_classes=4,
    ...                          num_experts=6, answers_per_expert=40)
    >>> has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
    >>> idx = np.stack([np.random.default_rng(p).permutation(has)[:60]
    ...                 for p in range(2)])
    >>> out = deferral_sweep(ds.probs, ds.labels, ds.annotations,
    ...                      idx[:, :30], idx[:, 30:], np.array([0.1, 0.2]),
    ...                      key=jax.random.key(0), scores=("lac", "aps"))
    >>> out.coverage.shape  # splits, scores, alphas
    (2, 2, 2)
  """
  from l2d_jax import conformal  # pylint: disable=g-import-not-at-top

  if isinstance(scores, str):
    raise TypeError(f"`scores` must be a tuple of score names, got the "
                    f"string {scores!r} (write ({scores!r},)).")
  scores = tuple(scores)
  n = jax.process_count()
  args = (probs, labels, annotations, cal_idx, test_idx, alphas)
  if n == 1 or len(scores) < 2:
    return conformal.deferral_sweep(*args, key=key, scores=scores, **kwargs)
  if len(set(scores)) != len(scores):
    raise ValueError(f"`scores` must name distinct scores, got {scores}.")
  plan = assign_scores(scores, n)
  mine = plan[jax.process_index()]
  width = max(len(p) for p in plan)
  if mine:
    out = conformal.deferral_sweep(*args, key=key, scores=mine, **kwargs)
  else:  # nothing to compute: send zeros of the right shapes.
    shapes = jax.eval_shape(lambda: conformal.deferral_sweep(
        *args, key=key, scores=scores[:1], **kwargs))
    out = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  every = _runtime.allgather(_pad_scores(out, width))
  # Reassemble in the caller's score order.
  where = {s: (p, c) for p, own in enumerate(plan) for c, s in enumerate(own)}

  def pick(x):
    return np.stack([x[where[s][0], :, where[s][1]] for s in scores], axis=1)

  raps_owner = where["raps"][0] if "raps" in where else 0
  metrics = type(out.strategies)(*[pick(x) for x in every["strategies"]])
  return conformal.DeferralSweep(
      strategies=metrics,
      baselines=type(out.baselines)(*[x[0] for x in every["baselines"]]),
      coverage=pick(every["coverage"]),
      mean_set_size=pick(every["mean_set_size"]),
      group_accuracy=(None if every["group_accuracy"] is None
                      else pick(every["group_accuracy"])),
      k_reg=every["k_reg"][raps_owner], lam=every["lam"][raps_owner])
