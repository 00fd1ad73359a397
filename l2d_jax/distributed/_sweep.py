"""The conformal deferral sweep with its splits (or scores) spread over processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from l2d_jax.distributed import _share

SHARDS = ("splits", "scores")

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


def _as_dict(out) -> dict[str, Any]:
  """A ``DeferralSweep`` as nested dicts of numpy arrays (to send it)."""
  return {k: (v._asdict() if hasattr(v, "_asdict") else v)
          for k, v in jax.tree.map(np.asarray, out)._asdict().items()}


def _as_sweep(d: dict[str, Any]):
  """Inverse of :func:`_as_dict`."""
  from l2d_jax import conformal  # pylint: disable=g-import-not-at-top
  return conformal.DeferralSweep(**{
      **d, "strategies": conformal.SweepMetrics(**d["strategies"]),
      "baselines": conformal.SweepMetrics(**d["baselines"])})


def _gather(compute):
  """Every process's ``compute()`` (``DeferralSweep`` or None); errors on all.

  The results travel as dicts of numpy arrays (``_share.allgather_objects``:
  JSON and raw bytes, no pickle). A process that fails sends its error
  instead of a result, so that no process is left waiting in the
  all-gather: the failing one re-raises it, the others raise a
  ``ValueError`` naming it.
  """
  try:
    out, error = compute(), None
  except (ValueError, TypeError) as e:
    out, error = None, e
  shares = _share.allgather_objects(
      (None if out is None else _as_dict(out),
       None if error is None else f"{type(error).__name__}: {error}"))
  if error is not None:
    raise error
  for q, (_, message) in enumerate(shares):
    if message is not None:
      raise ValueError(f"process {q} of {len(shares)} failed: {message}")
  return [None if o is None else _as_sweep(o) for o, _ in shares]


def _by_split(args, *, key, scores, split_ids, kwargs):
  """Process ``p`` sweeps splits ``p, p + N, ...``; rows all-gathered."""
  from l2d_jax import conformal  # pylint: disable=g-import-not-at-top

  probs, labels, annotations, cal_idx, test_idx, alphas = args
  num_p = int(np.shape(cal_idx)[0])
  ids = (np.arange(num_p, dtype=np.int64) if split_ids is None
         else np.asarray(split_ids))
  if ids.shape != (num_p,):
    raise ValueError(f"`split_ids` must have shape [P]=[{num_p}] (one id per "
                     f"row of `cal_idx`), got {ids.shape}.")
  n = jax.process_count()
  rows = np.asarray(_share.shard_items(range(num_p)), np.int64)

  def call(r):
    kw = {k: (v if v is None or k not in ("tune_idx", "groups")
              else np.asarray(v)[r]) for k, v in kwargs.items()}
    return conformal.deferral_sweep(
        probs, labels, annotations, np.asarray(cal_idx)[r],
        np.asarray(test_idx)[r], alphas, key=key, scores=scores,
        split_ids=ids[r], **kw)

  # Each process's rows (None without any), gathered whole: no shapes to
  # agree on beforehand.
  shares = _gather(lambda: call(rows) if rows.size else None)
  # Split i is row i // N of process i % N (``shard_items``); processes
  # q < min(N, P) have rows.
  return jax.tree.map(
      lambda *xs: np.stack([xs[i % n][i // n] for i in range(num_p)]),
      *shares[:min(n, num_p)])


def deferral_sweep(probs, labels, annotations, cal_idx, test_idx, alphas, *,
                   key: jax.Array,
                   scores: Sequence[str] = ("lac", "aps", "raps"),
                   split_ids=None, shard: str = "splits", **kwargs: Any):
  """``conformal.deferral_sweep`` with its splits shared out over processes.

  The same call and the same result as :func:`l2d_jax.conformal.deferral_sweep`
  (every process gets the whole result, equal exactly), but in a
  multi-process job the work is shared out:

  - ``shard='splits'`` (default): process ``p`` of ``N`` sweeps the splits
    ``p, p + N, ...`` (``shard_items``), passing their ids
    (``split_ids``), so their random draws are those of the full sweep; the
    per-split rows are all-gathered. This divides all of the work.
  - ``shard='scores'``: each process computes every split for its share of
    the ``scores`` (:func:`assign_scores`); the work the scores share (the
    strategies' choices) is repeated on every process.

  With one process this is ``conformal.deferral_sweep`` itself.

  Args:
    probs, labels, annotations, cal_idx, test_idx, alphas, key, scores,
      split_ids: as for ``conformal.deferral_sweep``; every process passes
      the same.
    shard: ``'splits'`` or ``'scores'``: what is shared out.
    **kwargs: the other keyword options of ``conformal.deferral_sweep``
      (``tune_idx`` and ``groups``, ``[P, ...]``, follow their splits).

  Returns:
    ``conformal.DeferralSweep`` with numpy arrays (``jax.Array`` with one
    process), identical on every process.

  Raises:
    ValueError, TypeError: as ``conformal.deferral_sweep``, on every
      process (the one whose share holds the offending value re-raises its
      error, the others name it); an unknown ``shard``.

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

  if shard not in SHARDS:
    raise ValueError(f"`shard` must be one of {SHARDS}, got {shard!r}.")
  if isinstance(scores, str):
    raise TypeError(f"`scores` must be a tuple of score names, got the "
                    f"string {scores!r} (write ({scores!r},)).")
  scores = tuple(scores)
  n = jax.process_count()
  args = (probs, labels, annotations, cal_idx, test_idx, alphas)
  if n == 1 or (shard == "scores" and len(scores) < 2):
    return conformal.deferral_sweep(*args, key=key, scores=scores,
                                    split_ids=split_ids, **kwargs)
  if shard == "splits":
    return _by_split(args, key=key, scores=scores, split_ids=split_ids,
                     kwargs=kwargs)
  kwargs = {**kwargs, "split_ids": split_ids}
  if len(set(scores)) != len(scores):
    raise ValueError(f"`scores` must name distinct scores, got {scores}.")
  plan = assign_scores(scores, n)
  mine = plan[jax.process_index()]
  shares = _gather(lambda: conformal.deferral_sweep(
      *args, key=key, scores=mine, **kwargs) if mine else None)
  where = {s: (p, c) for p, own in enumerate(plan) for c, s in enumerate(own)}

  def pick(field):
    return np.stack([field(shares[where[s][0]])[:, where[s][1]]
                     for s in scores], axis=1)

  first = shares[where[scores[0]][0]]
  raps = shares[where["raps"][0]] if "raps" in where else first
  metrics = type(first.strategies)(*[
      pick(lambda o, i=i: o.strategies[i])
      for i in range(len(first.strategies))])
  return conformal.DeferralSweep(
      strategies=metrics, baselines=first.baselines,
      coverage=pick(lambda o: o.coverage),
      mean_set_size=pick(lambda o: o.mean_set_size),
      group_accuracy=(None if first.group_accuracy is None
                      else pick(lambda o: o.group_accuracy)),
      k_reg=raps.k_reg, lam=raps.lam)
