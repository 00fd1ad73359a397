"""The conformal deferral sweep: every split, score and alpha in one program.

Reproduces the protocol of "Conformal prediction for deferral to human
experts: segregativity" (METHODS.md §1) as one pure function: for each
calibration/test split, each conformal score and each miscoverage level
alpha, the model answers when its conformal set is a singleton, otherwise an
annotator of the point chosen by a strategy (``l2d_jax.deferral.STRATEGIES``)
answers.

Work is shared wherever the result does not depend on the split, the score
or alpha: the segregativity of every annotator over every prefix set is
computed once for the pool (once per split with ``n_shots``); each strategy
decides once per split, point and prefix size, for every score; and every
alpha's accuracy and workload are read from those decisions through run
events (a point keeps one prefix size over a run of consecutive alphas, at
most K + 1 runs for LAC/APS), so the per-alpha histograms over experts cost
``points x runs`` updates instead of ``points x alphas``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax.conformal import _deferral
from l2d_jax.conformal import _raps_tuning
from l2d_jax.conformal import _scores
from l2d_jax.conformal import _set_sizes
from l2d_jax.deferral import _selection
from l2d_jax.deferral import _strategies
from l2d_jax.experts import _annotations

BASELINES = ("model", "random_expert", "best_expert")


class DeferralSweep(NamedTuple):
  """Per-split results of ``deferral_sweep``.

  Axes: ``P`` splits, ``C`` scores (the ``scores`` order), ``S`` strategies
  (``deferral.STRATEGIES`` order), ``A`` alphas (the ``alphas`` order).

  Attributes:
    strategies: ``SweepMetrics`` whose fields are ``[P, C, S, A]``.
    baselines: ``SweepMetrics`` whose fields are ``[P, 3]`` (``BASELINES``
      order: the model alone, a uniformly random annotator of each point, the
      annotator of each point with the best accuracy in hindsight, i.e. over
      all of its answers in the pool); they depend on neither score nor alpha.
    coverage: ``[P, C, A]`` share of test points whose label is in the set.
    mean_set_size: ``[P, C, A]`` mean set size.
    group_accuracy: ``[P, C, S, 2, A]`` accuracy over the test points of
      group 0 and of group 1 (``groups``), or None without ``groups``.
    k_reg: ``[P, A]`` int32 RAPS ``k_reg`` tuned on each split (0 without
      RAPS).
    lam: ``[P, A]`` RAPS ``lam`` tuned on each split (0 without RAPS).
  """

  strategies: _deferral.SweepMetrics
  baselines: _deferral.SweepMetrics
  coverage: jax.Array
  mean_set_size: jax.Array
  group_accuracy: jax.Array | None
  k_reg: jax.Array
  lam: jax.Array


def _split_randomness(key: jax.Array, split: ArrayLike,
                      shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """The random draws of one split: ``(priorities, n_shots_key)``.

  ``priorities`` is ``[S + 2, n_test, M]`` uniforms from
  ``fold_in(key, split)``: rows ``0..S-1`` are each strategy's tie-break
  priorities (one per test point and annotation slot, shared by all set
  sizes and scores), row ``S`` the random-expert baseline's and row ``S + 1``
  the best-expert baseline's tie-break priorities. ``n_shots_key`` is
  ``fold_in(fold_in(key, split), 1)``. Exposed so that a reference can
  reproduce the draws (one generator call per split keeps compilation short).
  """
  k = jax.random.fold_in(key, split)
  num = len(_strategies.STRATEGIES) + 2
  return (jax.random.uniform(k, (num,) + tuple(shape)),
          jax.random.fold_in(k, 1))


def _select(scores, valid, priority, costs):
  """``select_expert(tie_break='cost')`` over axis 1 of ``[n, M, ...]``.

  Same rule (highest score, then lowest cost, then highest priority; NaN
  scores invalid; -1 where nothing is valid) with the candidates on axis 1,
  so that the ``[n, M, K + 1]`` table needs no transposed copy; ``costs``
  None skips the cost stage (all equal).
  """
  extra = (1,) * (scores.ndim - 2)
  ok = valid.reshape(valid.shape + extra) & ~jnp.isnan(scores)
  s = jnp.where(ok, scores, -jnp.inf)
  best = s.max(axis=1, keepdims=True)
  tied = ok & (s == best)
  if costs is not None:
    c = jnp.where(tied, costs.reshape(costs.shape + extra), jnp.inf)
    tied = tied & (c == c.min(axis=1, keepdims=True))
  slot = jnp.argmax(jnp.where(tied, priority.reshape(priority.shape + extra),
                              -1.0), axis=1)
  return jnp.where(ok.any(axis=1), slot, -1).astype(jnp.int32)


def _runs(sizes, num_runs):
  """Runs of equal set size along the alpha axis, at most ``num_runs`` each.

  Args:
    sizes: ``[n, A]`` set sizes.
    num_runs: R, the static number of runs kept per point.

  Returns:
    ``(start, end, size, overflow)``: ``[n, R]`` first alpha, one past the
    last alpha and set size of each run (runs a point does not have are
    empty, ``start = end = A``), and whether some point has more than R runs.
  """
  n, num_a = sizes.shape
  change = jnp.concatenate(
      [jnp.ones((n, 1), bool), sizes[:, 1:] != sizes[:, :-1]], axis=1)
  # The alphas where runs start, in order, then A for runs that do not exist
  # (one row sort: no running sum or search, which compile to many steps).
  pos = jnp.where(change, jnp.arange(num_a, dtype=jnp.int32), num_a)
  if num_a < num_runs:
    pos = jnp.concatenate(
        [pos, jnp.full((n, num_runs - num_a), num_a, jnp.int32)], axis=1)
  start = jnp.sort(pos, axis=1)[:, :num_runs]
  end = jnp.concatenate([start[:, 1:], jnp.full((n, 1), num_a, jnp.int32)],
                        axis=1)
  size = jnp.take_along_axis(sizes, jnp.minimum(start, num_a - 1), axis=1)
  overflow = jnp.any(change.sum(axis=1, dtype=jnp.int32) > num_runs)
  return start, end, size, overflow


def _read_alphas_runs(runs, agent, weights, num_a, num_experts):
  """Per-alpha expert histograms and weighted counts from run events.

  Point i keeps set size ``size[i, r]`` for alphas ``start <= a < end`` of
  run r: a +1 event at the start and a -1 event at the end, summed up along
  alphas, give every alpha's histogram with ``points x runs`` updates instead
  of ``points x alphas``. Exact when no point has more runs than kept.

  Args:
    runs: ``(start, end, size)`` ``[n, R]`` from ``_runs``.
    agent: ``[n, K + 1]`` who answers at each size (0 model, -1 nobody).
    weights: ``[n, K + 1, G]`` per-size weights (e.g. correct in group g).
    num_a: A.
    num_experts: J.

  Returns:
    ``(hist [A, J], counts [A, G])``.
  """
  start, end, size = runs
  n, num_r = size.shape
  num_g = weights.shape[-1]
  width = num_experts + num_g
  who = jnp.take_along_axis(agent, size, axis=1)  # [n, R]
  w = jnp.take_along_axis(weights, size[:, :, None], axis=1)  # [n, R, G]
  is_expert = (who >= 1) & (who <= num_experts)
  col = jnp.where(is_expert, who - 1, 0)
  cols = jnp.concatenate(
      [col[:, :, None], num_experts + jnp.broadcast_to(
          jnp.arange(num_g), (n, num_r, num_g))], axis=-1)  # [n, R, 1 + G]
  vals = jnp.concatenate([is_expert[:, :, None], w], axis=-1).astype(jnp.int32)
  idx = jnp.stack([start[:, :, None] * width + cols,
                   end[:, :, None] * width + cols])
  upd = jnp.stack([vals, -vals])
  delta = jnp.zeros((num_a + 1) * width, jnp.int32).at[idx.ravel()].add(
      upd.ravel()).reshape(num_a + 1, width)
  total = jnp.cumsum(delta, axis=0)[:num_a]
  return total[:, :num_experts], total[:, num_experts:]


def _read_alphas_gather(sizes, agent, weights, num_experts):
  """The same as ``_read_alphas_runs`` for any number of runs (slower)."""
  num_a = sizes.shape[1]
  who = jnp.take_along_axis(agent, sizes, axis=1)  # [n, A]
  w = jnp.take_along_axis(weights, sizes[:, :, None], axis=1)  # [n, A, G]
  deferred = (who >= 1) & (who <= num_experts)
  flat = (jnp.arange(num_a)[None, :] * num_experts
          + jnp.where(deferred, who - 1, 0)).ravel()
  hist = jnp.zeros(num_a * num_experts, jnp.int32).at[flat].add(
      deferred.ravel().astype(jnp.int32)).reshape(num_a, num_experts)
  return hist, w.astype(jnp.int32).sum(axis=0)


def _metrics_from_hist(hist, correct_count, n):
  queries = hist.sum(axis=-1)
  n_queried = (hist > 0).sum(axis=-1)
  avg = jnp.where(n_queried > 0, queries / jnp.maximum(n_queried, 1), 0.0)
  return _deferral.SweepMetrics(
      accuracy=correct_count / n, queries=queries,
      max_queries_per_expert=hist.max(axis=-1),
      avg_queries_per_queried_expert=avg.astype(jnp.result_type(float)))


def _baseline_metrics(slots, model_correct, annotations, labels, num_experts):
  """Metrics ``[3]`` of the model, and of one chosen slot per point (x2)."""
  n = model_correct.shape[0]
  rows = []
  for s in slots:
    ok = s >= 0
    safe = jnp.where(ok, s, 0)[:, None]
    agent = jnp.where(ok, jnp.take_along_axis(annotations.annotator, safe,
                                              axis=1)[:, 0] + 1, -1)
    right = ok & (jnp.take_along_axis(annotations.answer, safe,
                                      axis=1)[:, 0] == labels)
    deferred = (agent >= 1) & (agent <= num_experts)
    hist = jnp.zeros(num_experts, jnp.int32).at[
        jnp.where(deferred, agent - 1, 0)].add(deferred.astype(jnp.int32))
    rows.append(_metrics_from_hist(hist, right.sum(), n))
  model = _deferral.SweepMetrics(
      accuracy=model_correct.mean(), queries=jnp.zeros((), jnp.int32),
      max_queries_per_expert=jnp.zeros((), jnp.int32),
      avg_queries_per_queried_expert=jnp.zeros((), jnp.result_type(float)))
  return jax.tree.map(lambda *x: jnp.stack(x), model, *rows)


def _set_sizes_of_split(sp_cal, rank_cal, sp_test, alphas, score, k_reg, lam):
  """``[n_test, A]`` set sizes of one split (one place to swap the rule)."""
  return _set_sizes.split_set_sizes(
      sp_cal, rank_cal, sp_test, alphas, score=score,
      k_reg=k_reg if score == "raps" else None,
      lam=lam if score == "raps" else None)


@functools.partial(jax.jit, static_argnames=(
    "scores", "tie_break", "n_shots", "lam_grid", "batch_size"))
def _deferral_sweep(probs, labels, annotations, cal_idx, test_idx, alphas, key,
                    tune_idx, groups, costs, *, scores, tie_break, n_shots,
                    lam_grid, batch_size):
  """The sweep without argument checks: one ``lax.map`` over splits."""
  num_j = annotations.num_experts
  num_k = annotations.num_classes
  num_strat = len(_strategies.STRATEGIES)
  num_a = alphas.shape[0]
  order, sp = _scores.sort_probs(probs)
  rank = jnp.argsort(order, axis=-1)
  label_rank = jnp.take_along_axis(rank, labels[:, None], axis=1)[:, 0]
  model_correct = order[:, 0] == labels
  confusion = _annotations.confusion_matrices(annotations, labels)
  hindsight, _ = _annotations.expert_accuracy(confusion)
  if n_shots is None:
    table = _deferral.prefix_segregativity(order, labels, annotations,
                                           confusion, batch_size=batch_size)
  use_costs = tie_break == "cost"
  # Sorted alphas: LAC/APS sizes are non-increasing along the alpha axis.
  perm = jnp.argsort(alphas)
  inv = jnp.argsort(perm)
  alphas_sorted = alphas[perm]
  unsort = lambda x: jnp.take(x, inv, axis=-1)
  num_p = test_idx.shape[0]
  if tune_idx is None:
    tune_idx = jnp.zeros((num_p, 0), jnp.int32)
  grp = jnp.zeros((num_p, 0), jnp.int32) if groups is None else groups

  def one_split(xs):
    p, cal, test, tune, g = xs
    sub = annotations.select_images(test)
    valid = sub.mask
    y = labels[test]
    n = test.shape[0]
    prios, shots_key = _split_randomness(key, p, valid.shape)
    if n_shots is None:
      seg = table[test]
    else:
      kept = _annotations.subsample_n_shots(shots_key, annotations, labels,
                                            n_shots=n_shots)
      conf = _annotations.confusion_matrices(kept, labels)
      seg = _deferral.prefix_segregativity(
          order[test], y, sub, conf, exclude_own=kept.mask[test],
          batch_size=batch_size)
    slot_costs = jnp.asarray(costs)[sub.annotator] if use_costs else None
    # Who answers at each prefix size: decided once for every score.
    agents, corrects = [], []
    for t, strategy in enumerate(_strategies.STRATEGIES):
      if strategy == "segregativity":
        slot = _select(seg, valid, prios[t], slot_costs)  # [n, K + 1]
      else:
        # One choice per point, the same at every size: decide once.
        s1 = (seg[:, :, 0] if strategy == "naive_most_accurate"
              else jnp.zeros(valid.shape))
        c1 = slot_costs if strategy == "naive_most_accurate" else None
        slot = jnp.broadcast_to(_select(s1, valid, prios[t], c1)[:, None],
                                (n, num_k + 1))
      out = _strategies.outcomes_from_slots(slot, model_correct[test], sub, y)
      agents.append(out.agent)
      corrects.append(out.correct)
    agent = jnp.stack(agents)  # [S, n, K + 1]
    gw = (jnp.ones((n, 1), bool) if groups is None
          else jnp.stack([g == 0, g == 1], axis=-1))
    weights = jnp.stack(corrects)[..., None] & gw[None, :, None, :]
    # Baselines: a random valid annotator; the best in hindsight (ties random).
    rand_slot = _select(jnp.zeros(valid.shape), valid, prios[num_strat], None)
    best_slot = _select(hindsight[sub.annotator], valid, prios[num_strat + 1],
                        None)
    base = _baseline_metrics((rand_slot, best_slot), model_correct[test], sub,
                             y, num_j)
    if "raps" in scores:
      k_reg, lam = _raps_tuning.tune_raps(probs[tune], labels[tune],
                                          alphas_sorted, lam_grid=lam_grid)
    else:
      k_reg = jnp.zeros(num_a, jnp.int32)
      lam = jnp.zeros(num_a, probs.dtype)
    # LAC and APS need no tuning: they calibrate on the tuning points too.
    cal_all = jnp.concatenate([cal, tune])
    per_score = []
    for score in scores:
      c = cal if score == "raps" else cal_all
      sizes = _set_sizes_of_split(sp[c], label_rank[c], sp[test],
                                  alphas_sorted, score, k_reg, lam)
      covered = label_rank[test][:, None] < sizes
      # LAC/APS sizes are non-increasing in alpha (the threshold grows with
      # it): at most K + 1 runs. RAPS's per-alpha (k_reg, lam) can add runs.
      num_runs = num_k + 1 if score != "raps" else 2 * (num_k + 1)
      start, end, run_size, overflow = _runs(sizes, num_runs)
      fast = jax.vmap(lambda a, w, r=(start, end, run_size): _read_alphas_runs(
          r, a, w, num_a, num_j))
      if score == "raps":
        slow = jax.vmap(lambda a, w, sz=sizes: _read_alphas_gather(
            sz, a, w, num_j))
        hist, counts = jax.lax.cond(overflow, slow, fast, agent, weights)
        ok = True
      else:
        hist, counts = fast(agent, weights)
        ok = ~overflow  # impossible by construction; visible if it happens
      metrics = _metrics_from_hist(hist, counts.sum(axis=-1), n)
      metrics = metrics._replace(accuracy=jnp.where(ok, metrics.accuracy,
                                                    jnp.nan))
      group_acc = jnp.swapaxes(counts / jnp.maximum(gw.sum(axis=0), 1), 1, 2)
      per_score.append((jax.tree.map(unsort, metrics),
                        unsort(covered.mean(axis=0)),
                        unsort(sizes.mean(axis=0)), unsort(group_acc)))
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *per_score)
    return stacked + (base, unsort(k_reg), unsort(lam))

  res = jax.lax.map(one_split, (jnp.arange(num_p), cal_idx, test_idx,
                                tune_idx, grp))
  metrics, cov, msz, group_acc, base, k_reg, lam = res
  return DeferralSweep(
      strategies=metrics, baselines=base, coverage=cov, mean_set_size=msz,
      group_accuracy=None if groups is None else group_acc, k_reg=k_reg,
      lam=lam)


def _check_index_matrix(x, name, n_pool, num_p=None):
  _validation.check_ndim(x, 2, name, "[P, n]")
  _validation.check_index_range(x, n_pool, name)
  if num_p is not None and jnp.shape(x)[0] != num_p:
    raise ValueError(f"`{name}` must have P={num_p} rows like `cal_idx`, got "
                     f"shape {tuple(jnp.shape(x))}.")


def deferral_sweep(
    probs: ArrayLike,
    labels: ArrayLike,
    annotations,
    cal_idx: ArrayLike,
    test_idx: ArrayLike,
    alphas: ArrayLike,
    *,
    key: jax.Array,
    scores: Sequence[str] = ("lac", "aps", "raps"),
    tune_idx: ArrayLike | None = None,
    groups: ArrayLike | None = None,
    tie_break: str = "random",
    costs: ArrayLike | None = None,
    n_shots: int | None = None,
    lam_grid: Sequence[float] = _raps_tuning.DEFAULT_LAM_GRID,
    batch_size: int = 256,
) -> DeferralSweep:
  """Accuracy and workload of every strategy and baseline, per split and alpha.

  For each split ``p`` (row of ``cal_idx``/``test_idx``), each score and each
  miscoverage level alpha: conformal sets of the test points are calibrated
  (``split_set_sizes``; APS and RAPS keep the threshold-crossing label, as in
  the paper); a test point whose set is a singleton is answered by the model,
  any other by one of its annotators (``annotations.mask``) chosen by each
  strategy of ``deferral.STRATEGIES``. RAPS tunes ``k_reg, lam`` per alpha on
  ``tune_idx[p]`` (``tune_raps``) and calibrates on ``cal_idx[p]``; LAC and
  APS, which need no tuning, calibrate on ``cal_idx[p]`` and ``tune_idx[p]``
  together (the paper's code sets a part of the calibration set aside for
  RAPS only). Annotators are assessed on confusion matrices of all the pool's
  answers with their own answer on the point left out (the paper's "perfect
  knowledge"), or, with ``n_shots``, on ``n_shots`` random answers per
  (expert, true label) drawn per split.

  Randomness (tie-breaks, the random choices, ``n_shots`` draws) comes from
  ``fold_in(key, p)`` (``_split_randomness``) and is shared by the scores;
  the splits themselves are the caller's draw. Everything runs in one
  compiled program (``lax.map`` over splits): every split has the same
  numbers of calibration, tuning and test points.

  Args:
    probs: ``[N, K]`` model probabilities of the pool.
    labels: ``[N]`` true labels.
    annotations: ``l2d_jax.experts.Annotations`` of the N points (J experts).
    cal_idx: ``[P, n_cal]`` int calibration points of each split.
    test_idx: ``[P, n_test]`` int test points; each needs a valid annotator.
    alphas: ``[A]`` miscoverage levels in (0, 1), any order.
    key: PRNG key.
    scores: conformal scores, a tuple of ``'lac'``, ``'aps'``, ``'raps'``.
    tune_idx: ``[P, n_tune]`` points set aside to tune RAPS (required with
      RAPS, ``n_tune >= 2``).
    groups: optional ``[P, n_test]`` int in {0, 1}; then ``group_accuracy``
      holds each group's accuracy (for ``cross_fitted_accuracy``).
    tie_break: ``'random'`` or ``'cost'``: among annotators with equal
      selection scores the cheapest wins (then the random priority);
      ``naive_random`` and the baselines ignore costs.
    costs: ``[J]`` expert costs for ``tie_break='cost'``.
    n_shots: know each expert from ``n_shots`` answers per true label.
    lam_grid: RAPS penalties tried by ``tune_raps``.
    batch_size: points per step when computing segregativities.

  Returns:
    ``DeferralSweep`` (``[P, ...]`` arrays).

  Raises:
    ValueError: shapes, indices, alphas, scores, ``tie_break``, ``groups``
      or ``costs`` out of range (values checked when concrete), a test point
      without a valid annotator, missing ``tune_idx`` with RAPS.
    TypeError: non-integer indices, non-int ``n_shots``.

  Example:
    >>> import jax, numpy as np
    >>> from l2d_jax import conformal, data
    >>> ds = data.synthetic_pool(0, num_images=200, num_classes=4,
    ...                          num_experts=10, answers_per_expert=40)
    >>> has = np.flatnonzero(np.asarray(ds.annotations.mask).any(1))
    >>> rng = np.random.default_rng(0)
    >>> splits = np.stack([rng.permutation(has)[:100] for _ in range(3)])
    >>> out = conformal.deferral_sweep(
    ...     ds.probs, ds.labels, ds.annotations, splits[:, :40],
    ...     splits[:, 50:], np.array([0.05, 0.1, 0.2]),
    ...     key=jax.random.key(0), tune_idx=splits[:, 40:50])
    >>> out.strategies.accuracy.shape  # splits, scores, strategies, alphas
    (3, 3, 3, 3)
  """
  if isinstance(scores, str):
    raise TypeError(f"`scores` must be a tuple of score names, got the "
                    f"string {scores!r} (write ({scores!r},)).")
  scores = tuple(scores)
  if not scores or len(set(scores)) != len(scores):
    raise ValueError(f"`scores` must name distinct scores, got {scores}.")
  for s in scores:
    _scores.check_score(s)
  if tie_break not in _selection.TIE_BREAKS:
    raise ValueError(f"`tie_break` must be one of {_selection.TIE_BREAKS}, "
                     f"got {tie_break!r}.")
  _validation.check_ndim(probs, 2, "probs", "[N, K]")
  _validation.check_probabilities(probs, "probs")
  n_pool, num_k = jnp.shape(probs)
  if annotations.num_images != n_pool or annotations.num_classes != num_k:
    raise ValueError(
        f"`annotations` must describe the N={n_pool} points and K={num_k} "
        f"classes of `probs`, got {annotations.num_images} points and "
        f"{annotations.num_classes} classes.")
  _validation.check_ndim(labels, 1, "labels", "[N]")
  _validation.check_same_leading(probs, labels, "probs", "labels")
  _validation.check_labels(labels, num_k, "labels")
  _check_index_matrix(cal_idx, "cal_idx", n_pool)
  num_p = jnp.shape(cal_idx)[0]
  if num_p < 1 or jnp.shape(cal_idx)[1] < 1:
    raise ValueError(f"`cal_idx` must hold at least one split and point, got "
                     f"shape {tuple(jnp.shape(cal_idx))}.")
  _check_index_matrix(test_idx, "test_idx", n_pool, num_p)
  if jnp.shape(test_idx)[1] < 1:
    raise ValueError("`test_idx` must hold at least one point per split.")
  _validation.check_ndim(alphas, 1, "alphas", "[A]")
  _validation.check_alpha(alphas, "alphas")
  if tune_idx is not None:
    _check_index_matrix(tune_idx, "tune_idx", n_pool, num_p)
  if "raps" in scores and (tune_idx is None or jnp.shape(tune_idx)[1] < 2):
    raise ValueError("`tune_idx` [P, n_tune] with n_tune >= 2 is required "
                     "with RAPS (its k_reg and lam are tuned there).")
  if groups is not None:
    if tuple(jnp.shape(groups)) != tuple(jnp.shape(test_idx)):
      raise ValueError(f"`groups` must have the shape [P, n_test]="
                       f"{tuple(jnp.shape(test_idx))} of `test_idx`, got "
                       f"{tuple(jnp.shape(groups))}.")
    _validation.check_index_range(groups, 2, "groups")
    if _validation.is_concrete(groups):
      g = np.asarray(groups)
      if not ((g == 0).any(axis=1) & (g == 1).any(axis=1)).all():
        raise ValueError("`groups` must hold both groups 0 and 1 in every "
                         "split.")
  if tie_break == "cost":
    if costs is None:
      raise ValueError("`costs` [J] is required when `tie_break='cost'`.")
    if tuple(jnp.shape(costs)) != (annotations.num_experts,):
      raise ValueError(f"`costs` must have shape [J]=[{annotations.num_experts}"
                       f"], got {tuple(jnp.shape(costs))}.")
    _validation.check_finite(costs, "costs")
  if n_shots is not None:
    n_shots = _validation.check_static_int(n_shots, "n_shots", minimum=1)
  batch_size = _validation.check_static_int(batch_size, "batch_size",
                                            minimum=1)
  if (_validation.is_concrete(test_idx)
      and _validation.is_concrete(annotations.mask)):
    has = np.asarray(annotations.mask).any(axis=1)
    t = np.asarray(test_idx)
    bad = ~has[t]
    if bad.any():
      raise ValueError(
          f"{int(bad.sum())} test points have no valid annotator (first: "
          f"point {int(t[bad][0])}); every test point needs one.")
  return _deferral_sweep(
      jnp.asarray(probs), jnp.asarray(labels), annotations,
      jnp.asarray(cal_idx), jnp.asarray(test_idx), jnp.asarray(alphas),
      key, None if tune_idx is None else jnp.asarray(tune_idx),
      None if groups is None else jnp.asarray(groups),
      None if costs is None else jnp.asarray(costs), scores=scores,
      tie_break=tie_break, n_shots=n_shots,
      lam_grid=tuple(float(x) for x in lam_grid), batch_size=batch_size)


def cross_fitted_accuracy(group_accuracy: ArrayLike) -> jax.Array | np.ndarray:
  """Accuracy at an alpha chosen on the other half of the test points.

  Choosing alpha_opt on the same points it is scored on is optimistic. Here,
  per split, alpha is chosen where group 0's accuracy is highest and scored
  on group 1, then the other way round, and the two scores are averaged.
  Ties in the choice go to the first alpha.

  Args:
    group_accuracy: ``[..., 2, A]`` accuracy of each group at each alpha
      (``DeferralSweep.group_accuracy``).

  Returns:
    ``[...]`` cross-fitted accuracy (e.g. ``[P, S]``; report its mean and
    standard deviation over splits). A NumPy input gives a NumPy result in
    its dtype (so float64 shares stay exact).

  Example:
    >>> import jax.numpy as jnp
    >>> acc = jnp.array([[0.8, 0.9, 0.7],    # group 0 peaks at alpha 1
    ...                  [0.85, 0.8, 0.95]])  # group 1 peaks at alpha 2
    >>> print(cross_fitted_accuracy(acc))  # (0.8 + 0.7) / 2
    0.75
  """
  # NumPy in, NumPy out (e.g. float64 shares of counts, exact in JSON).
  xp = np if isinstance(group_accuracy, np.ndarray) else jnp
  acc = xp.asarray(group_accuracy)
  if acc.ndim < 2 or acc.shape[-2] != 2:
    raise ValueError(f"`group_accuracy` must have shape [..., 2, A], got "
                     f"{acc.shape}.")
  pick0 = xp.argmax(acc[..., 0, :], axis=-1)
  pick1 = xp.argmax(acc[..., 1, :], axis=-1)
  on1 = xp.take_along_axis(acc[..., 1, :], pick0[..., None], axis=-1)[..., 0]
  on0 = xp.take_along_axis(acc[..., 0, :], pick1[..., None], axis=-1)[..., 0]
  return (on0 + on1) / 2
