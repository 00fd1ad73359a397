"""Loads a pool and runs the conformal-deferral sweep; returns arrays.

``load_pool`` reads a data set into a ``Pool``; ``sweep`` runs every split and
returns per-split arrays (the ``per`` dict documented there), which
``report.summarise`` turns into ``results.json``. No files, no printing.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import numpy as np

from experiments.conformal_deferral import config
from l2d_jax import _validation
from l2d_jax import conformal
from l2d_jax import distributed
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
# The sweep: draws the splits, calls the library, collects per-split arrays.


def _draw_splits(rng: np.random.Generator, pool: Pool, labels: np.ndarray, *,
                 n_splits: int, cal_size: int, raps_tune_fraction: float
                 ) -> dict[str, np.ndarray]:
  """Index matrices ``[P, n]`` of every split, drawn in one place.

  ``cal``: a stratified calibration draw; ``test``: the fixed test points or
  the candidates left; ``raps_tune`` / ``raps_cal``: a random
  ``raps_tune_fraction`` of ``cal`` to tune RAPS on, and the rest to
  calibrate it.
  """
  out = {"cal": [], "test": [], "raps_tune": [], "raps_cal": []}
  n_tune = max(2, int(round(raps_tune_fraction * cal_size)))
  for _ in range(n_splits):
    cal = stratified_sample(rng, pool.cal_candidates, labels, cal_size)
    test = (pool.test_fixed if pool.test_fixed is not None
            else np.setdiff1d(pool.cal_candidates, cal))
    perm = rng.permutation(cal)
    out["cal"].append(cal)
    out["test"].append(test)
    out["raps_tune"].append(perm[:n_tune])
    out["raps_cal"].append(perm[n_tune:])
  return {k: np.stack(v).astype(np.int32) for k, v in out.items()}


def _halves(rng: np.random.Generator, n_splits: int, n_test: int) -> np.ndarray:
  """``[P, n_test]`` random halves (0/1) of each split's test points."""
  base = np.arange(n_test) % 2
  return np.stack([rng.permutation(base) for _ in range(n_splits)]).astype(
      np.int32)


def _share(x: np.ndarray, n: np.ndarray | int) -> np.ndarray:
  """``count / n`` in float64 from a float32 share (no float noise in JSON)."""
  return np.round(np.asarray(x, np.float64) * n) / n


def sweep(pool: Pool, *, scores: Sequence[str], alphas: np.ndarray,
          n_splits: int, cal_size: int, seed: int,
          n_shots: int | None = None, f_kept: float | None = None,
          tie_break: str = "random", costs: np.ndarray | None = None,
          lcb: tuple[float, float, float] = (1.0, 1.0, 1.0),
          raps_tune_fraction: float = config.RAPS_TUNE_FRACTION, progress: bool = True
          ) -> dict[str, Any]:
  """Runs every split (``conformal.deferral_sweep``) and returns raw arrays.

  The splits are drawn here with ``np.random.default_rng(seed)``; tie-breaks
  and random choices come from ``jax.random.key(seed)`` inside the library
  (the same key for every score, so a split's random choices are shared by
  the scores). ``lcb`` is ``(lambda, prior_a, prior_b)`` of the
  ``segregativity_lcb`` strategy (``deferral.posterior_lcb``).
  Cross-fitting splits each split's test points into two random
  halves (``np.random.default_rng([seed, 1])``).

  Returns:
    ``per``, a dict of per-split lists (one entry per split):
    ``per["strategies"][score][strategy][field]``: ``[A]`` arrays for each
    ``conformal.SweepMetrics`` field (accuracy, queries, ...), and
    ``"accuracy_cross_fitted"``: a float per split (α chosen on one half of the
    split's test points, scored on the other);
    ``per["coverage"][score]``, ``per["mean_set_size"][score]``: ``[A]`` arrays;
    ``per["baselines"][name]``: ``[accuracy, queries, max Q/E, avg Q/E]`` for
    ``model``, ``random_expert``, ``best_expert``; ``per["raps_params"]``:
    ``{"k_reg", "lam"}`` ``[A]`` arrays; ``per["n_test"]`` and
    ``per["model_accuracy_pool"]``.
  """
  del progress  # one compiled program for all splits: no per-split steps
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
  removed = None
  if f_kept is not None and f_kept < 1.0:
    try:
      ann, kept = experts.keep_bottom_fraction(ann, labels, f_kept=f_kept)
    except ValueError as e:
      raise ValueError(f"no usable annotator left (f_kept={f_kept}): {e}"
                       ) from e
    removed = ~kept
  valid_all = np.asarray(ann.mask)
  test_space = (pool.test_fixed if pool.test_fixed is not None
                else pool.cal_candidates)
  empty = test_space[~valid_all[test_space].any(axis=1)]
  if empty.size:
    raise ValueError(
        f"{empty.size} test images have no usable annotator left "
        f"(f_kept={f_kept}); the paper stops its f_kept sweep before this "
        "point.")
  experts.warn_unusable_experts(ann, removed=removed)
  rng = np.random.default_rng(seed)
  idx = _draw_splits(rng, pool, labels, n_splits=n_splits, cal_size=cal_size,
                     raps_tune_fraction=raps_tune_fraction)
  groups = _halves(np.random.default_rng([seed, 1]), n_splits,
                   idx["test"].shape[1])
  key = jax.random.key(seed)
  use_costs = tie_break == "cost" and costs is not None
  per = {"coverage": {}, "mean_set_size": {}, "raps_params": [],
         "strategies": {}, "baselines": {}}
  # One program for every split and score; LAC and APS calibrate on the
  # whole calibration draw (raps_cal and raps_tune together).
  out = distributed.deferral_sweep(  # splits shared out over processes
      probs, labels, ann, idx["raps_cal"], idx["test"], alphas, key=key,
      scores=tuple(scores), tune_idx=idx["raps_tune"], groups=groups,
      tie_break="cost" if use_costs else "random",
      costs=np.asarray(costs, np.float32) if use_costs else None,
      n_shots=n_shots, lcb_lambda=lcb[0], lcb_prior_a=lcb[1],
      lcb_prior_b=lcb[2])
  out = jax.tree.map(np.asarray, out)
  n_test = idx["test"].shape[1]
  n_group = np.stack([(groups == g).sum(axis=1) for g in (0, 1)], axis=-1)
  group_acc = _share(out.group_accuracy, n_group[:, None, None, :, None])
  cross = conformal.cross_fitted_accuracy(group_acc)  # [P, C, S]
  for c, s in enumerate(scores):
    per["coverage"][s] = list(_share(out.coverage[:, c], n_test))
    per["mean_set_size"][s] = list(_share(out.mean_set_size[:, c], n_test))
    fields = out.strategies._replace(
        accuracy=_share(out.strategies.accuracy, n_test))
    per["strategies"][s] = {
        t: {**{f: list(getattr(fields, f)[:, c, t_i])
               for f in conformal.SweepMetrics._fields},
            "accuracy_cross_fitted": list(cross[:, c, t_i])}
        for t_i, t in enumerate(STRATEGIES)}
  if "raps" in scores:
    per["raps_params"] = [{"k_reg": k, "lam": l}
                          for k, l in zip(out.k_reg, out.lam)]
  base = out.baselines._replace(accuracy=_share(out.baselines.accuracy,
                                                n_test))
  per["baselines"] = {
      b: [[float(getattr(base, f)[p, b_i])
           for f in conformal.SweepMetrics._fields]
          for p in range(n_splits)]
      for b_i, b in enumerate(conformal.BASELINES)}
  per["n_test"] = int(idx["test"].shape[1])
  per["model_accuracy_pool"] = float(
      (probs.argmax(axis=1) == labels).mean())
  return per
