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
import os
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from l2d_jax import _validation
from l2d_jax import _xla_options
from l2d_jax.conformal import _deferral
from l2d_jax.conformal import _quantile
from l2d_jax.conformal import _raps_tuning
from l2d_jax.conformal import _scores
from l2d_jax.conformal import _set_sizes
from l2d_jax.conformal import _sweep_events
from l2d_jax.conformal import _sweep_slots
from l2d_jax.deferral import _selection
from l2d_jax.deferral import _strategies
from l2d_jax.experts import _annotations

BASELINES = ("model", "random_expert", "best_expert")

# XLA CPU options for the sweep: the classic (non-MLIR) loop emitters and
# LLVM -O1 compile the ~300 small kernels of the sweep in about half the time
# at the same run time (benchmarks/conformal_sweep.py). Integer and IEEE
# float results do not depend on them (XLA CPU does not reassociate floats
# without fast-math). Without the tree-reduction rewrite each long reduction
# is one kernel instead of two or three (0.1 s less compile and run time):
# that rewrite only changes the rounding of float sums, and the sweep's
# reductions are integer counts, maxima, minima and argmins (exact in any
# order; its float sums are dot products and a windowed cumsum, which the
# rewrite does not touch). Probed once per process; if this jaxlib rejects
# them, one warning and XLA's defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False,
                        "xla_backend_optimization_level": 1,
                        "xla_disable_hlo_passes": "tree_reduction_rewriter"}
# Added when the process may run on one core only (e.g. under taskset): XLA
# splits the generated code into parts compiled in parallel, which one core
# compiles one after the other, plus the cost of the split (about 0.15 s less
# compile time on the CIFAR10-H-sized sweep without it).
ONE_CORE_CPU_COMPILER_OPTIONS = {"xla_cpu_parallel_codegen_split_count": 1}
_STATIC = ("scores", "tie_break", "n_shots", "lam_grid", "batch_size",
           "presorted")
_COMPILED: dict[str, object] = {}


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


def _metrics(queries, n_queried, max_queries, correct_count, n):
  avg = jnp.where(n_queried > 0, queries / jnp.maximum(n_queried, 1), 0.0)
  return _deferral.SweepMetrics(
      accuracy=correct_count / n, queries=queries,
      max_queries_per_expert=max_queries,
      avg_queries_per_queried_expert=avg.astype(jnp.result_type(float)))


@functools.partial(jax.jit, static_argnames=_STATIC)
def _deferral_sweep(probs, labels, annotations, cal_idx, test_idx, alphas, key,
                    tune_idx, groups, costs, lcb, split_ids, *, scores,
                    tie_break,
                    n_shots, lam_grid, batch_size, presorted=False):
  """The sweep without argument checks: one ``lax.map`` over splits.

  Per split: each strategy picks one slot per point and prefix size from
  tie tables built once for the pool; LAC/APS sets give each point's runs of
  equal size along the sorted alphas straight from the thresholds
  (``size_boundaries``), RAPS sets (whose per-alpha ``k_reg, lam`` break
  monotonicity) from their ``[n, A]`` sizes; every score and strategy is then
  read from one table of run events summed along the alphas.
  """
  num_j = annotations.num_experts
  num_k = annotations.num_classes
  num_strat = len(_strategies.STRATEGIES)
  num_a = alphas.shape[0]
  num_c = len(scores)
  order, sp = _scores.sort_probs(probs)
  rank = jnp.argsort(order, axis=-1)
  label_rank = jnp.take_along_axis(rank, labels[:, None], axis=1)[:, 0]
  model_correct = order[:, 0] == labels
  confusion = _annotations.confusion_matrices(annotations, labels)
  hindsight, _ = _annotations.expert_accuracy(confusion)
  use_costs = tie_break == "cost"
  pool_costs = jnp.asarray(costs)[annotations.annotator] if use_costs else None
  valid_pool = jnp.asarray(annotations.mask, bool)
  if n_shots is None:
    counts = _deferral._batched_prefix_counts(  # pylint: disable=protected-access
        order, labels, annotations, confusion, valid_pool, batch_size)
    tables = _sweep_slots._strategy_tables(*counts, valid_pool, pool_costs, lcb)
  # Conformities of the pool for the scores without tuning (non-increasing
  # along ranks; the label's entry is its calibration conformity).
  conf_pool = {s: _scores.sorted_conformity(sp, score=s)
               for s in scores if s != "raps"}
  lin_scores = [i for i, s in enumerate(scores) if s != "raps"]
  if lin_scores:
    lin_args = (jnp.stack([conf_pool[scores[i]] for i in lin_scores]),
                jnp.array([scores[i] != "lac" for i in lin_scores]),
                jnp.array(lin_scores, jnp.int32))
  if "raps" in scores:
    # RAPS conformities from the pool's APS conformities and tie groups.
    aps_pool = conf_pool.get("aps")
    if aps_pool is None:
      aps_pool = _scores.sorted_conformity(sp, score="aps")
    r1_pool = _scores._tie_group_start(sp) + 1  # pylint: disable=protected-access
    lam_arr = jnp.asarray(lam_grid, jnp.result_type(float))
  # Sorted alphas: LAC/APS sizes are non-increasing along the alpha axis
  # (``presorted``: the caller's alphas are known to be in order already).
  bad_alpha = ~((alphas > 0) & (alphas < 1))
  if presorted:
    alphas_sorted = alphas
    unsort = lambda x: x
  else:
    perm = jnp.argsort(alphas)
    inv = jnp.argsort(perm)
    alphas_sorted = alphas[perm]
    unsort = lambda x: jnp.take(x, inv, axis=-1)
  num_p = test_idx.shape[0]
  if tune_idx is None:
    tune_idx = jnp.zeros((num_p, 0), jnp.int32)
  grp = jnp.zeros((num_p, 0), jnp.int32) if groups is None else groups
  num_g = 1 if groups is None else 2
  num_h = 2  # shared columns: set size, label covered
  # The alpha ranks of every split's calibration sizes, computed once: LAC
  # and APS calibrate on n_cal + n_tune points, RAPS tunes on n_tune and
  # calibrates on n_cal.
  n_cal, n_tune = cal_idx.shape[1], tune_idx.shape[1]
  lows = _quantile.alpha_floors(
      (n_cal + n_tune + 1,) + ((n_tune - 1, n_tune + 1, n_cal + 1)
                               if "raps" in scores else ()), alphas_sorted)
  # LAC/APS calibration; RAPS tuning (k_reg, then q); RAPS calibration.
  low_lin, low_tune, low_raps = lows[0], lows[1:3], lows[3:]

  def one_split(xs):
    p, cal, test, tune, g = xs
    sub = annotations.select_images(test)
    valid = sub.mask
    y = labels[test]
    n = test.shape[0]
    prios, shots_key = _sweep_slots._split_tickets(key, p, valid.shape)
    if n_shots is None:
      sized, flat = (t[:, test] for t in tables)
    else:
      kept = _annotations.subsample_n_shots(shots_key, annotations, labels,
                                            n_shots=n_shots)
      conf = _annotations.confusion_matrices(kept, labels)
      cnt = _deferral._batched_prefix_counts(  # pylint: disable=protected-access
          order[test], y, sub, conf, kept.mask[test], batch_size)
      sized, flat = _sweep_slots._strategy_tables(
          *cnt, valid, None if pool_costs is None else pool_costs[test], lcb)
    # Who answers at each prefix size, decided once for every score: the
    # size-dependent strategies in one reduction; the choices made once per
    # point (naive strategies, then the random and best-expert baselines)
    # in another.
    best = _sweep_slots._top_slots(hindsight[sub.annotator], valid, None)
    once = jnp.concatenate([flat, valid[None], best[None]])  # [4, n, M]
    s_of = {t: i for i, t in enumerate(_strategies.STRATEGIES)}
    sized_rows = [s_of["segregativity"], s_of["segregativity_lcb"]]
    once_rows = [s_of["naive_most_accurate"], s_of["naive_random"],
                 num_strat, num_strat + 1]
    sized_slot = _sweep_slots._slot_picker(prios[jnp.array(sized_rows)])(sized)
    once_slot = _sweep_slots._slot_picker(prios[jnp.array(once_rows)])(once)  # [4, n]
    by_name = {
        "segregativity": sized_slot[0], "segregativity_lcb": sized_slot[1],
        "naive_most_accurate": jnp.broadcast_to(once_slot[0][:, None],
                                                (n, num_k + 1)),
        "naive_random": jnp.broadcast_to(once_slot[1][:, None],
                                         (n, num_k + 1))}
    slots = jnp.stack([by_name[t] for t in _strategies.STRATEGIES])
    mc = model_correct[test]
    out = jax.vmap(_strategies.outcomes_from_slots,
                   in_axes=(0, None, None, None))(slots, mc, sub, y)
    agent = out.agent  # [S, n, K + 1]
    # The naive strategies consult one expert per point at every size (the
    # model at size 1): one histogram event per run, at that expert.
    fixed = tuple(s_of[t] for t in ("naive_most_accurate", "naive_random"))
    at0 = jnp.stack([agent[t, :, 0] for t in fixed])  # size 0: the expert
    fixed_col = jnp.where((at0 >= 1) & (at0 <= num_j), at0 - 1, 0)
    gw = (jnp.ones((n, 1), bool) if groups is None
          else jnp.stack([g == 0, g == 1], axis=-1))
    weights = (out.correct[..., None]
               & gw[None, :, None, :]).astype(jnp.int32)
    size_axis = jnp.arange(num_k + 1, dtype=jnp.int32)
    shared = jnp.stack([jnp.broadcast_to(size_axis, (n, num_k + 1)),
                        (label_rank[test][:, None] < size_axis).astype(
                            jnp.int32)], axis=-1)  # [n, K + 1, 2]
    # Each point's counts-table row at each set size: [n, K + 1, S * G + H].
    rows = _sweep_events._count_rows(weights, shared)  # pylint: disable=protected-access
    base = _sweep_slots._baseline_counts(once_slot[2:], sub, y, num_j)  # [2, 4]
    if "raps" in scores:
      k_reg, _, lam_i = _raps_tuning._tune_from_conformity(  # pylint: disable=protected-access
          aps_pool[tune], r1_pool[tune], label_rank[tune], alphas_sorted,
          lam_arr, lows=tuple(low_tune))
    else:
      k_reg = lam_i = jnp.zeros(num_a, jnp.int32)
    # LAC and APS need no tuning: they calibrate on the tuning points too.
    cal_all = jnp.concatenate([cal, tune])
    dims = dict(num_a=num_a, num_c=num_c, num_s=num_strat,
                num_experts=num_j, num_g=num_g, num_h=num_h)
    ev_tables = _sweep_events._new_tables(  # pylint: disable=protected-access
        **dims, hist_dtype=jnp.int16 if n < 2**15 else jnp.int32)
    ev = dict(num_scores=num_c, num_alphas=num_a, num_experts=num_j,
              fixed=fixed, fixed_col=fixed_col)
    if lin_scores:
      # LAC and APS in one vmapped body (one copy of the code to compile).
      def lin_events(cp, crossing, c_i):
        t = _set_sizes._thresholds(  # pylint: disable=protected-access
            cp[cal_all, label_rank[cal_all]], low_lin)
        bounds = _set_sizes.size_boundaries(cp[test], t,
                                            include_crossing=crossing)
        # Runs in alpha order: sizes K, K - 1, ..., 0 (empty ones too).
        return _sweep_events._run_events(  # pylint: disable=protected-access
            bounds[:, :0:-1], agent[..., ::-1], rows[:, ::-1],
            score_index=c_i,
            # The naive strategies change only around size 1: at the first
            # run and at the runs of sizes 1 and 0.
            fixed_runs=tuple(sorted({0, num_k - 1, num_k})), **ev)

      ev_tables = _sweep_events._add_events(  # pylint: disable=protected-access
          ev_tables, jax.vmap(lin_events)(*lin_args))
    if "raps" in scores:
      # RAPS's per-alpha k_reg and lam break monotonicity: its runs are read
      # from the [n, A] sizes.
      lr = label_rank[cal][:, None]
      sizes = _set_sizes._raps_sizes(  # pylint: disable=protected-access
          jnp.take_along_axis(aps_pool[cal], lr, axis=1)[:, 0],
          jnp.take_along_axis(r1_pool[cal], lr, axis=1)[:, 0],
          aps_pool[test], r1_pool[test], alphas_sorted, k_reg, lam_i,
          lam_arr, low=low_raps[0])
      # Every point's run starts in one list (about K per point, up to A),
      # read in chunks of 2n until all are in.
      chunk = 2 * n
      codes, total = _sweep_events._change_codes(sizes, chunk)  # pylint: disable=protected-access
      c_raps = scores.index("raps")

      def raps_chunk(state):
        first, tabs = state
        code = jax.lax.dynamic_slice_in_dim(codes, first, chunk)
        events = _sweep_events._change_events(  # pylint: disable=protected-access
            code, sizes, agent, rows, score_index=c_raps, num_scores=num_c,
            num_experts=num_j, fixed=fixed, fixed_col=fixed_col)
        return first + chunk, _sweep_events._add_events(tabs, events)  # pylint: disable=protected-access

      ev_tables = jax.lax.while_loop(lambda st: st[0] < total, raps_chunk,
                                     (jnp.int32(0), ev_tables))[1]
    read = _sweep_events._read_events(ev_tables, **dims)  # pylint: disable=protected-access
    return (read, base, mc.sum(), gw.sum(axis=0), k_reg, lam_i)

  res = jax.lax.map(one_split, (split_ids, cal_idx, test_idx, tune_idx,
                                grp))
  read, base, model_right, group_n, k_reg, lam_i = res
  if "raps" in scores:
    lam = jnp.where(k_reg < 0, jnp.nan, lam_arr[lam_i])
  else:
    lam = jnp.zeros(k_reg.shape, probs.dtype)
  n = test_idx.shape[1]
  # [P, A, C, ...] -> [P, C, ..., A] in the caller's alpha order.
  to_c = lambda x: unsort(jnp.moveaxis(x, 1, -1))
  queries, n_q, max_q, counts, shared = read
  metrics = _metrics(to_c(queries), to_c(n_q), to_c(max_q),
                     to_c(counts.sum(axis=-1)), n)
  metrics = metrics._replace(
      accuracy=jnp.where(bad_alpha, jnp.nan, metrics.accuracy))
  group_acc = to_c(counts / jnp.maximum(group_n, 1)[:, None, None, None, :])
  base_m = _metrics(base[..., 1], base[..., 2], base[..., 3], base[..., 0], n)
  zero_i = jnp.zeros((num_p, 1), jnp.int32)
  model = _deferral.SweepMetrics(
      accuracy=(model_right / n)[:, None], queries=zero_i,
      max_queries_per_expert=zero_i,
      avg_queries_per_queried_expert=jnp.zeros((num_p, 1),
                                               jnp.result_type(float)))
  baselines = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1),
                           model, base_m)
  return DeferralSweep(
      strategies=metrics, baselines=baselines,
      coverage=to_c(shared[..., 1]) / n, mean_set_size=to_c(shared[..., 0]) / n,
      group_accuracy=None if groups is None else group_acc,
      k_reg=unsort(k_reg), lam=unsort(lam))


def _usable_cores() -> int:
  """CPU cores this process may run on (its affinity mask where known)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _sweep_program():
  """``_deferral_sweep``, jitted with ``CPU_COMPILER_OPTIONS`` on CPU.

  On one usable core, ``ONE_CORE_CPU_COMPILER_OPTIONS`` too (each set is
  probed once; one this jaxlib rejects is left out, with one warning).
  """
  platform = jax.default_backend()
  if platform not in _COMPILED:
    fn = _deferral_sweep
    if platform == "cpu":
      device = jax.local_devices()[0]
      options = {}
      if _xla_options.supported(device, CPU_COMPILER_OPTIONS,
                                what="the sweep's", stacklevel=3):
        options.update(CPU_COMPILER_OPTIONS)
      if _usable_cores() == 1 and _xla_options.supported(
          device, ONE_CORE_CPU_COMPILER_OPTIONS,
          what="the sweep's one-core", stacklevel=3):
        options.update(ONE_CORE_CPU_COMPILER_OPTIONS)
      if options:
        fn = jax.jit(_deferral_sweep.__wrapped__, static_argnames=_STATIC,
                     compiler_options=options)
    _COMPILED[platform] = fn
  return _COMPILED[platform]


def _check_index_matrix(x, name, n_pool, num_p=None):
  _validation.check_ndim(x, 2, name, "[P, n]")
  _validation.check_index_range(x, n_pool, name)
  if num_p is not None and jnp.shape(x)[0] != num_p:
    raise ValueError(f"`{name}` must have P={num_p} rows like `cal_idx`, got "
                     f"shape {tuple(jnp.shape(x))}.")


def _check_split_ids(split_ids, num_p: int) -> jax.Array:
  """``split_ids`` as ``[P]`` uint32 (default ``arange(P)``), checked."""
  if split_ids is None:
    return jnp.arange(num_p, dtype=jnp.uint32)
  if tuple(jnp.shape(split_ids)) != (num_p,):
    raise ValueError(f"`split_ids` must have shape [P]=[{num_p}] (one id per "
                     f"row of `cal_idx`), got {tuple(jnp.shape(split_ids))}.")
  if not jnp.issubdtype(jnp.result_type(split_ids), jnp.integer):
    raise TypeError(f"`split_ids` must hold integers, got dtype "
                    f"{jnp.result_type(split_ids)}.")
  if _validation.is_concrete(split_ids):
    ids = np.asarray(split_ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 2**32):
      raise ValueError(f"`split_ids` must lie in [0, 2**32), got values in "
                       f"[{ids.min()}, {ids.max()}].")
  return jnp.asarray(split_ids).astype(jnp.uint32)


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
    lcb_lambda: float = 1.0,
    lcb_prior_a: float = 1.0,
    lcb_prior_b: float = 1.0,
    split_ids: ArrayLike | None = None,
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
  ``fold_in(key, split_ids[p])`` (``_split_randomness``; by default
  ``split_ids[p] = p``) and is shared by the scores; the splits themselves
  are the caller's draw. A split's results depend only on its own rows, its
  id and the key, so a sweep over some of the splits, passed with their ids,
  gives the matching rows of the full sweep (how ``distributed.deferral_sweep``
  shares splits out over processes). Everything runs in one
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
    lcb_lambda: ``'segregativity_lcb'`` ranks annotators by the Beta
      posterior of their accuracy inside the set, mean minus ``lcb_lambda``
      standard deviations (``deferral.posterior_lcb``; 0: the mean). Traced:
      a new value does not compile again.
    lcb_prior_a: its Beta prior ``a0 > 0``.
    lcb_prior_b: its Beta prior ``b0 > 0``.
    split_ids: ``[P]`` int ids in ``[0, 2**32)`` keying each split's random
      draws (default ``arange(P)``); pass the splits' global indices when
      sweeping a subset of them. Traced: new ids do not compile again.
    batch_size: points per step when computing segregativities.

  Returns:
    ``DeferralSweep`` (``[P, ...]`` arrays).

  Raises:
    ValueError: shapes, indices, alphas, scores, ``tie_break``, ``groups``,
      ``costs`` or ``split_ids`` out of range (values checked when
      concrete), a test point
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
    (3, 3, 4, 3)
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
  for name, v, low in (("lcb_lambda", lcb_lambda, 0.0),
                       ("lcb_prior_a", lcb_prior_a, None),
                       ("lcb_prior_b", lcb_prior_b, None)):
    if np.ndim(v) != 0:
      raise ValueError(f"`{name}` must be a scalar, got shape "
                       f"{tuple(np.shape(v))}.")
    if _validation.is_concrete(v):
      x = float(v)
      if not np.isfinite(x) or (x < low if low is not None else x <= 0):
        raise ValueError(f"`{name}` must be finite and "
                         f"{'>= 0' if low is not None else '> 0'}, got {x}.")
  fdtype = jnp.result_type(float)
  lcb = tuple(jnp.asarray(v, fdtype) for v in (lcb_lambda, lcb_prior_a,
                                               lcb_prior_b))
  batch_size = _validation.check_static_int(batch_size, "batch_size",
                                            minimum=1)
  split_ids = _check_split_ids(split_ids, num_p)
  # Alphas already in (non-decreasing) order, when their values are known,
  # need no sorting and unsorting in the program (a stable argsort of them
  # is the identity: same results).
  in_order = (_validation.is_concrete(alphas)
              and bool(np.all(np.diff(np.asarray(alphas)) >= 0)))
  if (_validation.is_concrete(test_idx)
      and _validation.is_concrete(annotations.mask)):
    has = np.asarray(annotations.mask).any(axis=1)
    t = np.asarray(test_idx)
    bad = ~has[t]
    if bad.any():
      raise ValueError(
          f"{int(bad.sum())} test points have no valid annotator (first: "
          f"point {int(t[bad][0])}); every test point needs one.")
  return _sweep_program()(
      jnp.asarray(probs), jnp.asarray(labels), annotations,
      jnp.asarray(cal_idx), jnp.asarray(test_idx), jnp.asarray(alphas),
      key, None if tune_idx is None else jnp.asarray(tune_idx),
      None if groups is None else jnp.asarray(groups),
      None if costs is None else jnp.asarray(costs), lcb, split_ids,
      scores=scores,
      tie_break=tie_break, n_shots=n_shots,
      lam_grid=tuple(float(x) for x in lam_grid), batch_size=batch_size,
      presorted=in_order)

