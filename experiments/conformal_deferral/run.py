"""Training-free conformal deferral to real annotators by segregativity.

Reproduces the protocol of "Conformal prediction for deferral to human
experts: segregativity" (METHODS.md §1): for many calibration/test splits and
a grid of miscoverage levels alpha, build LAC/APS/RAPS sets around a fixed
model; the model answers when its set is a singleton, otherwise an annotator
of the image chosen by segregativity (or a naive baseline) answers.

Example (CIFAR-10S real annotators, DenseNet-BC probabilities)::

  python -m experiments.conformal_deferral --dataset cifar10s \
      --data-dir ../shared/data --score all --splits 20 --alpha-grid paper \
      --out results/conformal_cifar10s

Writes ``results.json`` (schema in the README), ``details.json`` (baseline
workloads, tests used, RAPS parameters), ``table1.md`` (the paper's Table 1
layout) and ``accuracy_vs_alpha_<score>.png`` / ``workload_vs_alpha_<score>.png``
(Fig. 2 layout). ``--ablation f_kept|n_shots`` sweeps the paper's ablations and
writes ``ablation_<name>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import sys
import time
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from experiments import _io
from l2d_jax import _validation
from l2d_jax import conformal
from l2d_jax import experts
from l2d_jax import metrics

DATASETS = ("cifar10s", "cifar10h-raw", "imagenet16h", "synthetic", "byo")
MODELS = ("densenet-bc-L190-k40", "preresnet-110", "resnet-110")
SCORES = ("lac", "aps", "raps")
STRATEGIES = conformal.STRATEGIES
F_KEPT_GRID = tuple(np.round(np.arange(1.0, 0.2, -0.05), 2))
N_SHOTS_GRID = (5, 10, 15, 20)


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
          raps_tune_fraction: float = 0.3, progress: bool = True
          ) -> dict[str, Any]:
  """Runs every split and returns raw per-split arrays (see ``summarise``)."""
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


def _ms(x: np.ndarray) -> dict[str, float]:
  x = np.asarray(x, np.float64)
  return {"mean": float(x.mean()),
          "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def summarise(per: dict[str, Any], *, pool: Pool, alphas: np.ndarray,
              scores: Sequence[str]) -> tuple[dict, dict]:
  """Builds ``results.json`` (the issue's schema) and ``details.json``."""
  base = {b: np.asarray(v) for b, v in per["baselines"].items()}
  # Column 0 = accuracy; 1..3 = queries, max Q/E, avg Q/E.
  strongest = max(("best_expert", "model"),
                  key=lambda b: base[b][:, 0].mean())
  results = {
      "dataset": pool.dataset, "model": pool.model, "n_test": per["n_test"],
      "n_splits": int(base["model"].shape[0]),
      "model_accuracy": _ms(base["model"][:, 0]),
      "random_expert_accuracy": _ms(base["random_expert"][:, 0]),
      "best_expert_accuracy": _ms(base["best_expert"][:, 0]),
      "scores": {},
  }
  details = {"strongest_baseline": strongest, "alphas": alphas,
             "baselines": {b: {"accuracy": _ms(v[:, 0]),
                               "queries": _ms(v[:, 1]),
                               "max_queries_per_expert": _ms(v[:, 2]),
                               "avg_queries_per_queried_expert": _ms(v[:, 3])}
                           for b, v in base.items()},
             "scores": {}}
  for s in scores:
    entry = {"alphas": alphas,
             "coverage": np.mean(per["coverage"][s], axis=0),
             "mean_set_size": np.mean(per["mean_set_size"][s], axis=0),
             "strategies": {}}
    det = {"strategies": {}}
    for t in STRATEGIES:
      m = {f: np.asarray(v, np.float64)
           for f, v in per["strategies"][s][t].items()}
      acc = m["accuracy"]
      opt = int(np.argmax(acc.mean(axis=0)))
      test = metrics.paired_one_tailed_test(acc[:, opt],
                                            base[strongest][:, 0])
      entry["strategies"][t] = {
          "accuracy_mean": acc.mean(axis=0),
          "accuracy_std": acc.std(axis=0, ddof=1) if acc.shape[0] > 1
                          else np.zeros(acc.shape[1]),
          "queries_mean": m["queries"].mean(axis=0),
          "max_queries_per_expert_mean": m["max_queries_per_expert"].mean(0),
          "avg_queries_per_queried_expert_mean":
              m["avg_queries_per_queried_expert"].mean(0),
          "alpha_opt": float(alphas[opt]),
          "accuracy_at_opt": _ms(acc[:, opt]),
          "p_value_vs_strongest_baseline": test.p_value,
      }
      det["strategies"][t] = {
          "test": test.test, "shapiro_p": test.shapiro_p,
          "marks": metrics.significance_marks(test),
          "queries_at_opt": _ms(m["queries"][:, opt]),
          "max_queries_per_expert_at_opt": _ms(
              m["max_queries_per_expert"][:, opt]),
          "avg_queries_per_queried_expert_at_opt": _ms(
              m["avg_queries_per_queried_expert"][:, opt]),
          "queries_std": m["queries"].std(axis=0),
      }
    if s == "raps" and per["raps_params"]:
      det["raps_k_reg_mean"] = np.mean([p["k_reg"] for p in per["raps_params"]],
                                       axis=0)
      det["raps_lam_mean"] = np.mean([p["lam"] for p in per["raps_params"]],
                                     axis=0)
    results["scores"][s] = entry
    details["scores"][s] = det
  return results, details


STRATEGY_NAMES = {"segregativity": "Segregativity-Based",
                  "naive_most_accurate": "Naive Most Accurate",
                  "naive_random": "Naive Random"}


def table1(results: dict, details: dict) -> str:
  """The paper's Table 1 layout as Markdown."""
  pct = lambda d: f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"
  num = lambda d, p=0: f"{d['mean']:.{p}f} ± {d['std']:.{p}f}"
  lines = [
      f"**{results['dataset']} / {results['model']}**, {results['n_splits']} "
      f"splits, {results['n_test']} test points; marks vs the stronger of "
      f"Best Expert and Model ({details['strongest_baseline']}): * t-test, "
      "o Wilcoxon, at p < 0.05 / 0.01 / 0.001 / 0.0001.", "",
      "| Score | Strategy | α_opt | Acc. [%] | # Queries | Max Q/E | Avg Q/E |",
      "|---|---|---|---|---|---|---|"]
  for s, entry in results["scores"].items():
    for t in ("naive_random", "naive_most_accurate", "segregativity"):
      r = entry["strategies"][t]
      d = details["scores"][s]["strategies"][t]
      lines.append(
          f"| {s.upper()} | {STRATEGY_NAMES[t]} | {r['alpha_opt']:.3f} | "
          f"{pct(r['accuracy_at_opt'])} {d['marks']} | "
          f"{num(d['queries_at_opt'])} | "
          f"{num(d['max_queries_per_expert_at_opt'], 2)} | "
          f"{num(d['avg_queries_per_queried_expert_at_opt'], 2)} |")
  for b, name in (("random_expert", "Random Expert Accuracy"),
                  ("best_expert", "Best Expert Accuracy"),
                  ("model", "Model Accuracy")):
    d = details["baselines"][b]
    lines.append(
        f"| | {name} | - | {pct(d['accuracy'])} | {num(d['queries'])} | "
        f"{num(d['max_queries_per_expert'], 2)} | "
        f"{num(d['avg_queries_per_queried_expert'], 2) if b != 'model' else '-'}"
        " |")
  return "\n".join(lines) + "\n"


def plot(results: dict, out: pathlib.Path) -> list[str]:
  """Accuracy and workload against alpha for each score (Fig. 2 layout)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  written = []
  n = results["n_splits"]
  for s, entry in results["scores"].items():
    a = np.asarray(entry["alphas"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in STRATEGIES:
      r = entry["strategies"][t]
      m = 100 * np.asarray(r["accuracy_mean"])
      ci = 196 * np.asarray(r["accuracy_std"]) / np.sqrt(max(n, 1))
      ax.plot(a, m, label=STRATEGY_NAMES[t])
      ax.fill_between(a, m - ci, m + ci, alpha=0.25)
    for b, style in (("best_expert_accuracy", "--"), ("model_accuracy", ":"),
                     ("random_expert_accuracy", "-.")):
      ax.axhline(100 * results[b]["mean"], ls=style, c="gray",
                 label=b.replace("_", " "))
    ax.set_xscale("log")
    ax.set_xlabel("miscoverage α")
    ax.set_ylabel("accuracy [%]")
    ax.set_title(f"{results['dataset']} / {results['model']} / {s.upper()}")
    ax.legend(fontsize=7)
    path = out / f"accuracy_vs_alpha_{s}.png"
    _io.save_figure(fig, path)
    plt.close(fig)
    written.append(path.name)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, f, title in zip(
        axes, ("queries_mean", "max_queries_per_expert_mean",
               "avg_queries_per_queried_expert_mean"),
        ("# queries", "max queries / expert", "avg queries / queried expert")):
      for t in STRATEGIES:
        ax.plot(a, entry["strategies"][t][f], label=STRATEGY_NAMES[t])
      ax.set_xscale("log")
      ax.set_xlabel("miscoverage α")
      ax.set_title(title)
    axes[0].legend(fontsize=7)
    path = out / f"workload_vs_alpha_{s}.png"
    _io.save_figure(fig, path)
    plt.close(fig)
    written.append(path.name)
  return written


def parse_alphas(args: argparse.Namespace, model_accuracy: float) -> np.ndarray:
  if args.alphas:
    try:
      a = np.array([float(x) for x in args.alphas.split(",") if x.strip()])
    except ValueError as e:
      raise ValueError(f"--alphas must be comma-separated numbers: {e}") from e
    _validation.check_alpha(a, "--alphas")
    return np.sort(a)
  if args.alpha_grid == "paper":
    return conformal.paper_alpha_grid(model_accuracy)
  raise ValueError(f"--alpha-grid must be 'paper', got {args.alpha_grid!r}.")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m experiments.conformal_deferral",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--dataset", choices=DATASETS, default="synthetic",
                 help="cifar10s: real per-annotator answers on 1,000 images; "
                 "cifar10h-raw: needs --raw-csv (not available offline); "
                 "imagenet16h: needs --human-csv (not available offline); "
                 "synthetic: in-package simulated pool; byo: --byo-dir.")
  p.add_argument("--data-dir", default="../shared/data")
  p.add_argument("--model", choices=MODELS, default=MODELS[0],
                 help="CIFAR-10 model probabilities (Kerrigan et al. 2021).")
  p.add_argument("--score", choices=SCORES + ("all",), default="all")
  p.add_argument("--splits", type=int, default=20)
  p.add_argument("--cal-size", type=int, default=1000)
  p.add_argument("--alphas", default=None,
                 help="comma-separated alphas; overrides --alpha-grid.")
  p.add_argument("--alpha-grid", choices=("paper",), default="paper")
  p.add_argument("--f-kept", type=float, default=None,
                 help="keep only the least accurate fraction of experts.")
  p.add_argument("--n-shots", type=int, default=None,
                 help="know each expert from n answers per true label.")
  p.add_argument("--ablation", choices=("f_kept", "n_shots"), default=None,
                 help="sweep the paper's ablation grid (one score: "
                 "--score, default aps when 'all').")
  p.add_argument("--ablation-grid", default=None,
                 help="comma-separated values for --ablation (default: the "
                 "paper's f_kept 1.0..0.25 step 0.05 / n_shots 5,10,15,20).")
  p.add_argument("--tie-break", choices=experts.TIE_BREAKS, default="random")
  p.add_argument("--costs", default=None,
                 help="a .npy of J per-expert costs for --tie-break cost.")
  p.add_argument("--raw-csv", default=None, help="CIFAR-10H cifar10h-raw.csv.")
  p.add_argument("--human-csv", default=None,
                 help="ImageNet-16H human-annotation CSV (original schema).")
  p.add_argument("--byo-dir", default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="results/conformal_deferral")
  p.add_argument("--no-progress", action="store_true")
  return p


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the experiment described by ``args``; returns ``results.json``."""
  out = pathlib.Path(args.out)
  pool = load_pool(args.dataset, data_dir=args.data_dir, model=args.model,
                   seed=args.seed, raw_csv=args.raw_csv,
                   human_csv=args.human_csv, byo_dir=args.byo_dir)
  model_acc = float((pool.probs.argmax(1) == pool.labels).mean())
  alphas = parse_alphas(args, model_acc)
  scores = list(SCORES) if args.score == "all" else [args.score]
  costs = None
  if args.costs:
    costs = np.load(args.costs, allow_pickle=False).astype(np.float32)
    if costs.shape != (pool.annotations.num_experts,):
      raise ValueError(f"--costs must hold [J]=[{pool.annotations.num_experts}]"
                       f" costs, got shape {costs.shape}.")
  elif args.tie_break == "cost":
    raise ValueError("--tie-break cost needs --costs (a .npy of J costs).")
  common = dict(alphas=alphas, n_splits=args.splits, cal_size=args.cal_size,
                seed=args.seed, tie_break=args.tie_break, costs=costs,
                progress=not args.no_progress)
  t0 = time.perf_counter()
  if args.ablation:
    score = "aps" if args.score == "all" else args.score
    grid = F_KEPT_GRID if args.ablation == "f_kept" else N_SHOTS_GRID
    if args.ablation_grid:
      cast = float if args.ablation == "f_kept" else int
      try:
        grid = tuple(cast(v) for v in args.ablation_grid.split(",") if v)
      except ValueError as e:
        raise ValueError(f"--ablation-grid: {e}") from e
    rows = []
    for v in tqdm(grid, desc=args.ablation, disable=args.no_progress):
      kw = {args.ablation: v}
      try:
        per = sweep(pool, scores=[score], **common, **kw)
      except ValueError as e:
        if args.ablation == "f_kept" and "no usable annotator" in str(e):
          warnings.warn(f"f_kept={v}: {e} Stopping the sweep here.")
          break
        raise
      res, det = summarise(per, pool=pool, alphas=alphas, scores=[score])
      rows.append({"value": v, "results": res,
                   "strongest_baseline": det["strongest_baseline"]})
    ablation = {"dataset": pool.dataset, "model": pool.model,
                "ablation": args.ablation, "score": score, "rows": rows,
                "seconds": time.perf_counter() - t0}
    _io.write_json(out / f"ablation_{args.ablation}.json", ablation)
    plot_ablation(ablation, out)
    print(f"wrote {out / f'ablation_{args.ablation}.json'}")
    return ablation
  kw = {"f_kept": args.f_kept, "n_shots": args.n_shots}
  per = sweep(pool, scores=scores, **common, **kw)
  results, details = summarise(per, pool=pool, alphas=alphas, scores=scores)
  details.update({"seconds": time.perf_counter() - t0,
                  "command": " ".join(sys.argv), "f_kept": args.f_kept,
                  "n_shots": args.n_shots, "seed": args.seed,
                  "tie_break": args.tie_break,
                  "model_accuracy_pool": per["model_accuracy_pool"]})
  _io.write_json(out / "results.json", results)
  _io.write_json(out / "details.json", details)
  table = table1(results, details)
  _io.write_text(out / "table1.md", table)
  plot(results, out)
  print(table)
  print(f"wrote {out}/results.json, details.json, table1.md and plots "
        f"({details['seconds']:.1f} s)")
  return results


def plot_ablation(ablation: dict, out: pathlib.Path) -> None:
  """Accuracy at alpha_opt and alpha_opt against the ablation value."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = ablation["rows"]
  if not rows:
    return
  x = [r["value"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  s = ablation["score"]
  for t in STRATEGIES:
    acc = [r["results"]["scores"][s]["strategies"][t]["accuracy_at_opt"]
           for r in rows]
    m = np.array([100 * a["mean"] for a in acc])
    sd = np.array([100 * a["std"] for a in acc])
    n = rows[0]["results"]["n_splits"]
    axes[0].plot(x, m, marker="o", label=STRATEGY_NAMES[t])
    axes[0].fill_between(x, m - 1.96 * sd / np.sqrt(n),
                         m + 1.96 * sd / np.sqrt(n), alpha=0.2)
    axes[1].plot(x, [r["results"]["scores"][s]["strategies"][t]["alpha_opt"]
                     for r in rows], marker="o", label=STRATEGY_NAMES[t])
  for b, style in (("best_expert_accuracy", "--"), ("model_accuracy", ":")):
    axes[0].plot(x, [100 * r["results"][b]["mean"] for r in rows], style,
                 c="gray", label=b.replace("_", " "))
  for ax in axes:
    ax.set_xlabel(ablation["ablation"])
  axes[0].set_ylabel("accuracy at α_opt [%]")
  axes[1].set_ylabel("α_opt")
  axes[0].legend(fontsize=7)
  _io.save_figure(fig, out / f"ablation_{ablation['ablation']}.png")
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  run(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
