"""Loads a pool and runs the conformal-deferral sweep; returns arrays.

``load_pool`` reads a data set into a ``Pool``; ``sweep`` runs every split and
returns per-split arrays (the ``per`` dict documented there), which
``report.summarise`` turns into ``results.json``. No files, no printing.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from experiments.conformal_deferral import config
from l2d_jax import _validation
from l2d_jax import conformal
from l2d_jax import experts

DATASETS = config.DATASETS
SCORES = config.SCORES
STRATEGIES = config.STRATEGIES


@dataclasses.dataclass
class Pool:
  """Everything one sweep needs, as numpy arrays.

  Attributes:
    probs: ``[N, K]`` model probabilities.
    labels: ``[N]`` true labels.
    annotations: annotations over the N images.
    cal_candidates: indices the calibration set is drawn from.
    test_fixed: fixed test indices (CIFAR-10S), or None to use the
      candidates left after the calibration draw.
    dataset: data set name.
    model: model name.
  """

  probs: np.ndarray
  labels: np.ndarray
  annotations: experts.Annotations
  cal_candidates: np.ndarray
  test_fixed: np.ndarray | None
  dataset: str
  model: str


def load_pool(dataset: str, *, data_dir: str | None, model: str,
              seed: int = 0, raw_csv: str | None = None,
              human_csv: str | None = None,
              byo_dir: str | None = None) -> Pool:
  """Loads a data set into a ``Pool`` (see ``--help`` for each data set)."""
  from l2d_jax import data  # pylint: disable=g-import-not-at-top
  if dataset == "synthetic":
    ds = data.synthetic_pool(seed)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    return Pool(ds.probs, ds.labels, ds.annotations, np.flatnonzero(has), None,
                dataset, "synthetic-model")
  if dataset == "byo":
    if byo_dir is None:
      raise ValueError("--dataset byo needs --byo-dir (probs.npy, labels.npy, "
                       "annotations.csv; see the README).")
    ds = data.load_byo(byo_dir)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    unannotated = np.flatnonzero(~has)
    return Pool(ds.probs, ds.labels, ds.annotations,
                unannotated if unannotated.size else np.flatnonzero(has),
                np.flatnonzero(has) if unannotated.size else None, dataset,
                "byo")
  if data_dir is None:
    raise ValueError(f"--dataset {dataset} needs --data-dir.")
  data_dir = pathlib.Path(data_dir)
  if dataset == "cifar10s":
    probs, labels, _ = data.load_model_probs(data_dir, model)
    ds = data.load_cifar10s(data_dir, labels=labels)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    # Calibrate on CIFAR-10 test images outside CIFAR-10S, test on CIFAR-10S.
    return Pool(probs, labels, ds.annotations, np.flatnonzero(~has),
                np.flatnonzero(has), dataset, model)
  if dataset == "cifar10h-raw":
    path = pathlib.Path(raw_csv) if raw_csv else (
        data_dir / "cifar10h" / "cifar10h-raw.csv")
    if not path.exists():
      raise FileNotFoundError(
          f"CIFAR-10H per-annotator file not found at {path}. It is not part "
          "of the offline data here (only the aggregated counts are); download "
          "cifar10h-raw.csv from github.com/jcpeterson/cifar-10h and pass "
          "--raw-csv.")
    probs, labels, _ = data.load_model_probs(data_dir, model)
    # The loader checks that the raw file's true labels agree with these.
    ds = data.load_cifar10h_raw(path, labels=labels)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    return Pool(probs, labels, ds.annotations, np.flatnonzero(has), None,
                dataset, model)
  if dataset == "imagenet16h":
    if human_csv is None:
      raise FileNotFoundError(
          "ImageNet-16H human annotations are not available offline here; pass "
          "--human-csv with the original Steyvers et al. (2022) CSV. Only the "
          "model side (imagenet16h_model_preds/) is in the shared data.")
    ds = data.load_imagenet16h(data_dir, human_csv=human_csv)
    has = np.asarray(ds.annotations.mask).any(axis=1)
    return Pool(ds.probs, ds.labels, ds.annotations, np.flatnonzero(has), None,
                dataset, "vgg19")
  raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}.")


def stratified_sample(rng: np.random.Generator, candidates: np.ndarray,
                      labels: np.ndarray, size: int) -> np.ndarray:
  """Draws ``size`` candidates with class shares as in the candidates.

  Per-class counts use largest-remainder rounding of the proportional share.
  """
  if size < 1 or size > candidates.size:
    raise ValueError(f"--cal-size must lie in [1, {candidates.size}] for this "
                     f"data set, got {size}.")
  y = labels[candidates]
  classes, counts = np.unique(y, return_counts=True)
  share = counts * size / candidates.size
  take = np.floor(share).astype(int)
  rest = size - take.sum()
  take[np.argsort(-(share - take), kind="stable")[:rest]] += 1
  picked = [rng.choice(candidates[y == c], t, replace=False)
            for c, t in zip(classes, take)]
  return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------------------
# Jitted pieces (shapes are fixed across splits, so each compiles once).


@functools.partial(jax.jit, static_argnames=("include_crossing",))
def _sizes_fixed(cal_scores, test_rank_scores, pos_test, alphas, *,
                 include_crossing):
  q = conformal.conformal_quantile(cal_scores, alphas)
  sizes = conformal.set_sizes_from_sorted(test_rank_scores, q,
                                          include_crossing=include_crossing)
  covered = pos_test[:, None] < sizes
  return sizes, covered.mean(axis=0), sizes.mean(axis=0)


@jax.jit
def _sizes_raps(sp_cal, pos_cal, sp_test, pos_test, alphas, k_reg, lam):
  def one(a, k, l):
    cal = jnp.take_along_axis(
        conformal.sorted_raps_scores(sp_cal, k_reg=k, lam=l),
        pos_cal[:, None], axis=-1)[:, 0]
    q = conformal.conformal_quantile(cal, a)
    # Non-randomized RAPS keeps the threshold-crossing label (never empty).
    count = (conformal.sorted_raps_scores(sp_test, k_reg=k, lam=l)
             <= q).sum(axis=-1)
    return jnp.minimum(count + 1, sp_test.shape[-1]).astype(jnp.int32)
  sizes = jax.vmap(one)(alphas, k_reg, lam).T  # [n_test, A]
  covered = pos_test[:, None] < sizes
  return sizes, covered.mean(axis=0), sizes.mean(axis=0)


_tune_raps = jax.jit(conformal.tune_raps)


@functools.partial(jax.jit, static_argnames=("num_experts",))
def _strategy_sweep(key, seg, model_correct, annotator, expert_correct, valid,
                    sizes_by_score, slot_costs, *, num_experts):
  """Metrics of every strategy (leading axis, ``STRATEGIES`` order).

  The strategies differ only in their selection scores, so one vmapped program
  (one compilation) serves all three. Costs break ties (then the key); naive
  random gets equal costs, i.e. a uniformly random valid annotator.
  """
  scores = jnp.stack([conformal.strategy_scores(seg, t) for t in STRATEGIES])
  costs = jnp.stack([slot_costs, slot_costs, jnp.zeros_like(slot_costs)])
  valid_s = jnp.broadcast_to(valid[:, None, :], scores.shape[1:])

  def one(k, sc, cc):
    # One random priority per (point, annotator), shared by all set sizes.
    prio = jax.random.uniform(k, annotator.shape)[:, None, :]
    slot = experts.select_expert(sc, valid_s, tie_break="cost", priority=prio,
                                 costs=cc[:, None, :])
    out = conformal.outcomes_from_slots(slot, model_correct, annotator,
                                        expert_correct)
    return [conformal.sweep_metrics(s, out, num_experts=num_experts)
            for s in sizes_by_score]

  return jax.vmap(one)(jax.random.split(key, len(STRATEGIES)), scores, costs)


@jax.jit
def _precompute(sorted_probs, annotations, labels):
  confusion = experts.confusion_matrices(annotations, labels)
  accuracy, _ = experts.expert_accuracy(confusion)
  return (conformal.sorted_lac_scores(sorted_probs),
          conformal.sorted_aps_scores(sorted_probs), confusion, accuracy)


_seg_table = jax.jit(conformal.prefix_segregativity,
                     static_argnames=("undefined_value", "batch_size"))


@functools.partial(jax.jit, static_argnames=("n_shots",))
def _n_shots_confusion(key, annotations, labels, *, n_shots):
  sub = experts.subsample_n_shots(key, annotations, labels, n_shots=n_shots)
  return experts.confusion_matrices(sub, labels), sub.mask


def _baselines(rng, model_correct, annotator, expert_correct, valid,
               hindsight_acc, *, num_experts):
  """Model, random annotator and best annotator in hindsight (numpy)."""
  rows = np.arange(valid.shape[0])
  rand = np.argmax(np.where(valid, rng.random(valid.shape), -1.0), axis=1)
  acc = np.where(valid, hindsight_acc[annotator], -np.inf)
  tied = acc == acc.max(axis=1, keepdims=True)
  best = np.argmax(np.where(tied, rng.random(valid.shape), -1.0), axis=1)
  out = {}
  for name, slot in (("random_expert", rand), ("best_expert", best)):
    who = annotator[rows, slot]
    hist = np.bincount(who, minlength=num_experts)
    out[name] = (float(expert_correct[rows, slot].mean()), float(hist.sum()),
                 float(hist.max()), float(hist.sum() / (hist > 0).sum()))
  out["model"] = (float(model_correct.mean()), 0.0, 0.0, 0.0)
  return out


# ---------------------------------------------------------------------------
# The sweep.


def sweep(pool: Pool, *, scores: Sequence[str], alphas: np.ndarray,
          n_splits: int, cal_size: int, seed: int,
          n_shots: int | None = None, f_kept: float | None = None,
          tie_break: str = "random", costs: np.ndarray | None = None,
          raps_tune_fraction: float = config.RAPS_TUNE_FRACTION, progress: bool = True
          ) -> dict[str, Any]:
  """Runs every split and returns raw per-split arrays.

  Returns:
    ``per``, a dict of per-split lists (one entry per split):
    ``per["strategies"][score][strategy][field]``: ``[A]`` arrays for each
    ``conformal.SweepMetrics`` field (accuracy, queries, ...), and
    ``"accuracy_cross_fitted"``: a float per split (α chosen on one half of the
    split's test points, scored on the other) where the sweep provides it;
    ``per["coverage"][score]``, ``per["mean_set_size"][score]``: ``[A]`` arrays;
    ``per["baselines"][name]``: ``[accuracy, queries, max Q/E, avg Q/E]`` for
    ``model``, ``random_expert``, ``best_expert``; ``per["raps_params"]``:
    ``{"k_reg", "lam"}`` ``[A]`` arrays; ``per["n_test"]`` and
    ``per["model_accuracy_pool"]``.
  """
  for s in scores:
    if s not in SCORES:
      raise ValueError(f"--score must be in {SCORES + ('all',)}, got {s!r}.")
  alphas = np.asarray(alphas, dtype=np.float64)
  if alphas.ndim != 1 or alphas.size == 0:
    raise ValueError("`alphas` must be a non-empty 1-D list.")
  _validation.check_alpha(alphas, "alphas")
  if n_splits < 1:
    raise ValueError(f"--splits must be >= 1, got {n_splits}.")
  ann = pool.annotations
  labels = np.asarray(pool.labels, np.int32)
  probs = np.asarray(pool.probs, np.float32)
  num_j = ann.num_experts
  if f_kept is not None and f_kept < 1.0:
    ann, _ = experts.keep_bottom_fraction(ann, labels, f_kept=f_kept)
  valid_all = np.asarray(ann.mask)
  test_space = (pool.test_fixed if pool.test_fixed is not None
                else pool.cal_candidates)
  empty = test_space[~valid_all[test_space].any(axis=1)]
  if empty.size:
    raise ValueError(
        f"{empty.size} test images have no usable annotator left "
        f"(f_kept={f_kept}); the paper stops its f_kept sweep before this "
        "point.")
  experts.drop_unusable_experts(ann)
  order = np.argsort(-probs, axis=1, kind="stable")
  sp = np.take_along_axis(probs, order, axis=1)
  inv = np.argsort(order, axis=1)
  pos_label = inv[np.arange(labels.size), labels].astype(np.int32)
  model_correct_all = order[:, 0] == labels
  annotator_all = np.asarray(ann.annotator)
  answer_all = np.asarray(ann.answer)
  expert_correct_all = answer_all == labels[:, None]
  lac_rs, aps_rs, confusion, hindsight_acc = _precompute(sp, ann, labels)
  rank_scores = {"lac": np.asarray(lac_rs), "aps": np.asarray(aps_rs)}
  hindsight_acc = np.asarray(hindsight_acc)
  use_costs = tie_break == "cost" and costs is not None
  costs_j = np.asarray(costs if use_costs else np.zeros(num_j), np.float32)

  def seg_table(idx, conf, exclude):
    return _seg_table(order[idx], labels[idx], annotator_all[idx],
                      answer_all[idx], valid_all[idx], conf,
                      exclude_own=exclude)

  table_cache = None
  if n_shots is None:
    idx = (pool.test_fixed if pool.test_fixed is not None
           else pool.cal_candidates)
    table_cache = (idx, np.asarray(seg_table(idx, confusion, valid_all[idx])))
  where = ({int(i): r for r, i in enumerate(table_cache[0])}
           if table_cache else None)

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  per = {"coverage": {s: [] for s in scores},
         "mean_set_size": {s: [] for s in scores},
         "raps_params": [],
         "strategies": {s: {t: {f: [] for f in conformal.SweepMetrics._fields}
                            for t in STRATEGIES} for s in scores},
         "baselines": {b: [] for b in ("model", "random_expert",
                                       "best_expert")}}
  alphas_j = jnp.asarray(alphas, jnp.float32)
  for _ in tqdm(range(n_splits), desc="splits", disable=not progress):
    key, k_split, k_shots = jax.random.split(key, 3)
    cal = stratified_sample(rng, pool.cal_candidates, labels, cal_size)
    if pool.test_fixed is not None:
      test = pool.test_fixed
    else:
      test = np.setdiff1d(pool.cal_candidates, cal)
    if n_shots is None:
      rows = np.array([where[int(i)] for i in test])
      seg = table_cache[1][rows]
    else:
      conf_s, sub_mask = _n_shots_confusion(k_shots, ann, labels,
                                            n_shots=n_shots)
      seg = seg_table(test, conf_s, np.asarray(sub_mask)[test])
    sizes_by_score = []
    for s in scores:
      if s == "raps":
        perm = rng.permutation(cal)
        n_tune = max(2, int(round(raps_tune_fraction * cal.size)))
        tune, calr = perm[:n_tune], perm[n_tune:]
        k_reg, lam = _tune_raps(probs[tune], labels[tune], alphas_j)
        per["raps_params"].append({"k_reg": np.asarray(k_reg),
                                   "lam": np.asarray(lam)})
        sizes, cov, msz = _sizes_raps(sp[calr], pos_label[calr], sp[test],
                                      pos_label[test], alphas_j, k_reg, lam)
      else:
        cal_scores = rank_scores[s][cal, pos_label[cal]]
        # The paper keeps the threshold-crossing label for APS (and RAPS).
        sizes, cov, msz = _sizes_fixed(cal_scores, rank_scores[s][test],
                                       pos_label[test], alphas_j,
                                       include_crossing=(s == "aps"))
      per["coverage"][s].append(np.asarray(cov))
      per["mean_set_size"][s].append(np.asarray(msz))
      sizes_by_score.append(sizes)
    args = (seg, model_correct_all[test], annotator_all[test],
            expert_correct_all[test], valid_all[test])
    res = _strategy_sweep(k_split, *args, sizes_by_score,
                          costs_j[annotator_all[test]], num_experts=num_j)
    for s, m in zip(scores, res):
      for f in conformal.SweepMetrics._fields:
        v = np.asarray(getattr(m, f))
        for t_i, t in enumerate(STRATEGIES):
          per["strategies"][s][t][f].append(v[t_i])
    base = _baselines(rng, *args[1:], hindsight_acc, num_experts=num_j)
    for b, v in base.items():
      per["baselines"][b].append(list(v))
    per["n_test"] = int(test.size)
  per["model_accuracy_pool"] = float(model_correct_all.mean())
  return per
