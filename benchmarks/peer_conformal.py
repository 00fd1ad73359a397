"""Peer check of l2d_jax's conformal quantiles and sets against MAPIE.

On the real DenseNet-BC (L=190, k=40) CIFAR-10 test probabilities, for
``--splits`` random splits (1,000 calibration points, the other 9,000 test
points; ``np.random.default_rng(--seed)``) and alpha in
{0.01, 0.02, 0.05, 0.1, 0.2}, this compares for LAC, APS and RAPS:

  1. q-hat: ``conformal.conformal_quantile`` on l2d_jax's scores
     (``lac_scores``, ``aps_scores`` with u = 1, ``raps_scores``) against
     MAPIE's quantile of the *same* scores (``mapie.utils.
     _compute_classification_quantile``, the function its score classes
     call). Both should be the ceil((n+1)(1-alpha))-th order statistic, so
     the difference should be exactly 0. Also shown: MAPIE's q-hat on its
     *own* float64 scores against l2d_jax's ``1 - conformity_threshold``
     (the threshold the sets really use), which differ only by float
     rounding.
  2. sets: the share of test points whose set differs between
     ``conformal.prediction_sets`` (with ``include_crossing`` for APS and
     RAPS, as in the paper) and MAPIE's ``SplitConformalClassifier``
     (``prefit=True``, a wrapper returning the given probabilities,
     ``include_last_label=True``), and whether every l2d_jax set is a
     probability-ordered prefix (no label outside the set is more probable
     than a label inside it) that holds the top-1 label whenever it is
     non-empty (APS/RAPS sets must never be empty). The sizes of
     ``prediction_sets`` are also checked against ``split_set_sizes``.
  3. coverage (``conformal.set_coverage``) of both.

RAPS uses fixed k_reg = 1 and lambda = 0.01 (``--k-reg``, ``--lam``) in both
libraries, so that the comparison is about conformal mechanics, not tuning:
MAPIE's ``conformity_score="raps"`` would tune k* and lambda* on a 20%
stratified hold-out of the calibration points and calibrate on the other
80%; here a subclass of its ``RAPSConformityScore`` fixes ``k_star`` and
``lambda_star`` and calibrates on all 1,000 points with MAPIE's own
regularisation, quantile and set code. Both libraries use the same penalty,
``lambda * max(0, o - k_reg)`` with o the 1-based rank of the label.

MAPIE 1.6's conventions that differ from the paper's, each removed in turn
by one column of the tables (MAPIE's own code throughout):

  * ``mapie``, its defaults. Its APS (and so RAPS) calibration score is
    always randomized, ``cumsum - u * p_y`` with u ~ U(0, 1), even when the
    sets are built with ``include_last_label=True`` (the non-randomized,
    crossing-label rule). Its q-hat is then lower than the paper's u = 1
    q-hat, and its sets smaller (coverage stays valid).
  * ``u=1``: u = 1 calibration scores, taken from MAPIE's own
    ``APSConformityScore.get_true_label_cumsum_proba``. What remains is an
    absolute tolerance ``EPSILON = 1e-8`` in every comparison: a label's
    cumulative mass counts as reaching q-hat within 1e-8, a probability
    counts as equal to the last included one within 1e-8, and a last
    included probability below 1e-8 is replaced by the row's smallest
    probability >= 1e-8. DenseNet is so confident that APS q-hat lies within
    ~1e-5 of 1 and 1.2% of its probabilities are below 1e-8, so this
    tolerance changes whole sets.
  * ``eps=0``: the same MAPIE code with EPSILON = 0 (set on MAPIE's
    set-score modules for the call and restored after), i.e. exact
    comparisons. What remains: MAPIE sums probabilities from the top in
    float64, so its APS score is ``1 + delta - (mass below)``, where delta
    (up to 5e-8 here) is how far the float32 row, summed in float64, is from
    1; l2d_jax compares the mass below directly (see the ``conformal`` module
    docstring), which is ``1 - s`` only for a row summing to 1.
  * ``aligned``: ``eps=0`` on the same rows renormalised in float64 (they
    then sum to 1 within 2e-16; each probability moves by at most 5e-8
    relative). This is the paper's convention in both libraries.

Two further conventions cannot matter here and are checked or counted
rather than aligned: tied probabilities (MAPIE ranks tied labels in argsort
order, l2d_jax gives them one score; the DenseNet rows have no ties, which
is printed), and the crossing label when a test score equals q-hat exactly
(MAPIE keeps count(s < q) + 1 labels, l2d_jax count(s <= q) + 1, as
Angelopoulos et al.'s code). Points where some label's conformity ties the
threshold within float32 precision (4 eps relative) are counted as
``near``; the headline (last-line) set-difference numbers are the
``aligned`` differences at the other points (``beyond``), i.e. differences
no documented convention explains. l2d_jax runs in float32 (JAX's default)
on the probabilities as loaded; MAPIE casts them to float64.

Usage:
  python benchmarks/peer_conformal.py [--data-dir ../shared/data]
      [--splits 20] [--out peer_conformal.json]

The last line reads ``qhat_max_abs_diff=<f> lac_sets_differ_pct=<f>
aps_sets_differ_pct=<f> raps_sets_differ_pct=<f> non_prefix_sets=<int>``.
Needs MAPIE (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2d_jax import conformal  # noqa: E402
from l2d_jax import data  # noqa: E402
from l2d_jax import io  # noqa: E402

MODEL = "densenet-bc-L190-k40"
ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2)
SCORES = ("lac", "aps", "raps")
VARIANTS = ("mapie", "u=1", "eps=0", "aligned")
CAL_SIZE = 1000
# MAPIE modules that import EPSILON by name (the set scores used here).
_EPS_MODULES = ("aps", "lac", "naive", "raps", "utils")


def _parse_args(argv):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data-dir", default="../shared/data",
                 help="data root holding cifar10h_model_probs/.")
  p.add_argument("--splits", type=int, default=20,
                 help="random calibration/test splits.")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the numpy RNG that draws the splits (and of "
                      "MAPIE's random_state, split s using seed + s).")
  p.add_argument("--k-reg", type=int, default=1,
                 help="RAPS k_reg, fixed in both libraries.")
  p.add_argument("--lam", type=float, default=0.01,
                 help="RAPS lambda, fixed in both libraries.")
  p.add_argument("--out", default=None,
                 help="optional JSON path for the numbers (written "
                      "atomically); none when omitted.")
  args = p.parse_args(argv)
  if args.splits < 1:
    p.error(f"--splits must be >= 1, got {args.splits}")
  if args.k_reg < 0:
    p.error(f"--k-reg must be >= 0, got {args.k_reg}")
  if not (np.isfinite(args.lam) and args.lam >= 0):
    p.error(f"--lam must be finite and >= 0, got {args.lam}")
  if args.out:
    out = pathlib.Path(args.out)
    parent = next(d for d in (out.parent, *out.parent.parents) if d.exists())
    if out.is_dir() or not os.access(parent, os.W_OK):
      p.error(f"--out {args.out} is not a writable file path")
  return args


def _mapie_tools():
  """MAPIE classes used here, or None when MAPIE (>= 1.6) is missing."""
  try:
    import mapie  # noqa: F401
    from mapie import utils as mapie_utils
    from mapie.classification import SplitConformalClassifier
    from mapie.conformity_scores import APSConformityScore
    from mapie.conformity_scores import RAPSConformityScore
    from sklearn.base import BaseEstimator
    from sklearn.base import ClassifierMixin
  except ImportError:
    return None
  version = tuple(int(x) for x in mapie.__version__.split(".")[:2]
                  if x.isdigit())
  if version < (1, 6):
    return None

  class GivenProbs(ClassifierMixin, BaseEstimator):
    """Prefit classifier: feature 0 of X is a row index into ``probs``."""

    def __init__(self, probs=None):
      self.probs = probs

    def fit(self, X, y=None):
      del X, y
      self.classes_ = np.arange(self.probs.shape[1])
      self.n_features_in_ = 1
      return self

    def predict_proba(self, X):
      return self.probs[np.asarray(X)[:, 0].astype(np.int64)]

    def predict(self, X):
      return self.predict_proba(X).argmax(axis=1)

  class APSUnitU(APSConformityScore):
    """MAPIE's APS with u = 1 calibration scores (cumulated mass incl. y)."""

    def get_conformity_scores(self, y, y_pred, y_enc=None, **kwargs):
      scores, self.cutoff = self.get_true_label_cumsum_proba(
          y, y_pred, self.classes)
      return scores

  class RAPSFixed(RAPSConformityScore):
    """MAPIE's RAPS with fixed k_star/lambda_star, calibrated on all points."""

    def __init__(self, k_reg=1, lam=0.01, randomized=True):
      super().__init__()
      self.k_reg = k_reg
      self.lam = lam
      self.randomized = randomized

    def split_data(self, X, y, y_enc, sample_weight=None, groups=None):
      self.n_samples_ = len(y_enc)
      return X, y, y_enc, sample_weight, groups

    def get_conformity_scores(self, y, y_pred, y_enc=None, **kwargs):
      if self.randomized:
        return APSConformityScore.get_conformity_scores(
            self, y, y_pred, y_enc=y_enc)
      scores, self.cutoff = self.get_true_label_cumsum_proba(
          y, y_pred, self.classes)
      return scores

    def get_conformity_score_quantiles(self, conformity_scores, alpha_np, cv,
                                       agg_scores="mean",
                                       include_last_label=True, **kwargs):
      self.k_star = np.full(len(alpha_np), float(self.k_reg))
      self.lambda_star = float(self.lam)
      reg = self._regularize_conformity_score(
          self.k_star, self.lambda_star, conformity_scores, self.cutoff)
      return mapie_utils._compute_classification_quantile(reg, alpha_np)  # pylint: disable=protected-access

  return argparse.Namespace(
      version=mapie.__version__, SplitConformalClassifier=SplitConformalClassifier,
      APSConformityScore=APSConformityScore, GivenProbs=GivenProbs,
      APSUnitU=APSUnitU, RAPSFixed=RAPSFixed,
      quantile=mapie_utils._compute_classification_quantile)  # pylint: disable=protected-access


@contextlib.contextmanager
def _mapie_epsilon(value):
  """Sets MAPIE's set-score tolerance EPSILON to ``value`` (None: as shipped)."""
  if value is None:
    yield
    return
  mods = [importlib.import_module(f"mapie.conformity_scores.sets.{m}")
          for m in _EPS_MODULES]
  old = [m.EPSILON for m in mods]
  try:
    for m in mods:
      m.EPSILON = np.float64(value)
    yield
  finally:
    for m, v in zip(mods, old):
      m.EPSILON = v


def _l2d_split(pc, yc, pt, alphas, score, k_reg, lam):
  """l2d_jax on one split: scores, q-hat, threshold, sets [A, m, K], sizes."""
  kw = {"k_reg": k_reg, "lam": lam} if score == "raps" else {}
  score_fn = {"lac": conformal.lac_scores, "aps": conformal.aps_scores,
              "raps": conformal.raps_scores}[score]
  conf_fn = {"lac": conformal.lac_conformity, "aps": conformal.aps_conformity,
             "raps": conformal.raps_conformity}[score]
  s = score_fn(pc, yc, **kw)
  qhat = conformal.conformal_quantile(s, alphas)
  t = conformal.conformity_threshold(conf_fn(pc, yc, **kw), alphas)
  sets = conformal.prediction_sets(pt, threshold=t, score=score,
                                   include_crossing=score != "lac", **kw)
  order_c, sp_c = conformal.sort_probs(pc)
  rank_c = np.argmax(np.asarray(order_c) == np.asarray(yc)[:, None], axis=1)
  _, sp_t = conformal.sort_probs(pt)
  sizes = conformal.split_set_sizes(sp_c, rank_c, sp_t, alphas, score=score,
                                    **kw)  # [m, A]
  return (np.asarray(s), np.asarray(qhat), np.asarray(t), np.asarray(sets),
          np.asarray(sizes).T)


def _mapie_split(tools, probs64, cal, yc, test, alphas, score, variant,
                 k_reg, lam, seed):
  """MAPIE on one split: (q-hat [A], sets [A, m, K])."""
  if score == "lac":
    cs = "lac"
  elif score == "aps":
    cs = "aps" if variant == "mapie" else tools.APSUnitU()
  else:
    cs = tools.RAPSFixed(k_reg=k_reg, lam=lam, randomized=variant == "mapie")
  est = tools.GivenProbs(probs64).fit(None)
  clf = tools.SplitConformalClassifier(
      estimator=est, confidence_level=[1.0 - a for a in alphas],
      conformity_score=cs, prefit=True, random_state=seed)
  with _mapie_epsilon(0.0 if variant in ("eps=0", "aligned") else None):
    clf.conformalize(cal[:, None], yc)
    _, sets = clf.predict_set(test[:, None],
                              conformity_score_params={"include_last_label":
                                                       True})
  qhat = np.asarray(clf._mapie_classifier.quantiles_, np.float64).reshape(-1)  # pylint: disable=protected-access
  return qhat, np.moveaxis(np.asarray(sets, bool), -1, 0)


def _non_prefix(sets, probs, must_be_nonempty):
  """[A, m] True where a set is not a probability-ordered prefix."""
  p = probs[None]
  lo_in = np.where(sets, p, np.inf).min(axis=-1)
  hi_out = np.where(sets, -np.inf, p).max(axis=-1)
  top = np.take_along_axis(sets, probs.argmax(axis=1)[None, :, None]
                           .repeat(sets.shape[0], 0), axis=-1)[..., 0]
  nonempty = sets.any(axis=-1)
  bad = (lo_in < hi_out) | (nonempty & ~top)
  if must_be_nonempty:
    bad |= ~nonempty
  return bad


def _near_tie(probs, t32, score, k_reg, lam):
  """[A, m] True where some label's conformity ties the threshold within
  float32 precision (4 eps relative, 1e-13 absolute): only there may float
  rounding decide the set, in either library."""
  p = np.asarray(probs, np.float64)
  sp = -np.sort(-p, axis=1)
  c = np.cumsum(sp[:, ::-1], axis=1)[:, ::-1] - sp  # mass below each rank
  if score == "raps":
    c = c - lam * np.maximum(0, np.arange(1, sp.shape[1] + 1) - k_reg)
  elif score == "lac":
    c = sp
  t = np.asarray(t32, np.float64)[:, None, None]
  band = 4 * np.finfo(np.float32).eps * (np.abs(c[None]) + np.abs(t)) + 1e-13
  return (np.abs(c[None] - t) <= band).any(axis=-1)


def _fmt_pct(x):
  return f"{100 * x:7.3f}"


def main(argv=None) -> int:
  args = _parse_args(argv)
  tools = _mapie_tools()
  if tools is None:
    print("MAPIE >= 1.6 is not installed: pip install -e '.[bench]' (or "
          "pip install 'mapie>=1.6').", file=sys.stderr)
    return 2
  data_dir = pathlib.Path(args.data_dir)
  if not (data_dir / "cifar10h_model_probs").is_dir():
    print(f"no model probabilities under {data_dir} (expected "
          f"{data_dir / 'cifar10h_model_probs'}); pass the data root with "
          "--data-dir.", file=sys.stderr)
    return 2

  t_start = time.perf_counter()
  probs, labels, _ = data.load_model_probs(data_dir, MODEL)
  probs = np.asarray(probs, np.float32)
  labels = np.asarray(labels, np.int64)
  probs64 = probs.astype(np.float64)
  n_all, k = probs.shape
  alphas = np.asarray(ALPHAS, np.float64)
  a_num = len(alphas)
  sp_all = -np.sort(-probs, axis=1)
  rows_with_ties = int((np.diff(sp_all, axis=1) == 0).any(axis=1).sum())
  delta = np.abs(probs64.sum(axis=1) - 1.0)
  renorm64 = probs64 / probs64.sum(axis=1, keepdims=True)
  print(f"l2d_jax vs MAPIE {tools.version} on {MODEL} CIFAR-10 probabilities "
        f"({n_all} x {k}, float32; top-1 accuracy "
        f"{(probs.argmax(1) == labels).mean():.4f}); {args.splits} splits of "
        f"{CAL_SIZE} calibration / {n_all - CAL_SIZE} test points (seed "
        f"{args.seed}); RAPS k_reg={args.k_reg}, lambda={args.lam} fixed in "
        "both.")
  print(f"rows with tied probabilities: {rows_with_ties}; probabilities < "
        f"1e-8: {100 * (probs < 1e-8).mean():.2f}%; max |row sum - 1| in "
        f"float64: {delta.max():.2e}; after renormalising in float64: "
        f"{np.abs(renorm64.sum(axis=1) - 1.0).max():.2e}")

  rng = np.random.default_rng(args.seed)
  shape = (args.splits, a_num)
  qdiff_same = {s: np.zeros(shape) for s in SCORES}
  qdiff_own = {s: np.zeros(shape) for s in SCORES}
  qdiff_rows = {s: np.zeros(shape) for s in SCORES}
  qhat_l2d = {s: np.zeros(shape) for s in SCORES}
  qhat_mapie = {(s, v): np.zeros(shape) for s in SCORES for v in VARIANTS}
  differ = {(s, v): np.zeros(shape) for s in SCORES for v in VARIANTS}
  unexplained = {s: np.zeros(shape) for s in SCORES}
  near = {s: np.zeros(shape) for s in SCORES}
  cov_l2d = {s: np.zeros(shape) for s in SCORES}
  cov_mapie = {(s, v): np.zeros(shape) for s in SCORES for v in VARIANTS}
  size_l2d = {s: np.zeros(shape) for s in SCORES}
  size_mapie = {(s, v): np.zeros(shape) for s in SCORES for v in VARIANTS}
  non_prefix = {s: 0 for s in SCORES}
  mapie_non_prefix = {(s, v): 0 for s in SCORES for v in VARIANTS}
  size_path_mismatch = 0
  t_l2d = t_mapie = 0.0

  for split in range(args.splits):
    perm = rng.permutation(n_all)
    cal, test = np.sort(perm[:CAL_SIZE]), np.sort(perm[CAL_SIZE:])
    pc, yc, pt, yt = probs[cal], labels[cal], probs[test], labels[test]
    for score in SCORES:
      t0 = time.perf_counter()
      s, q, t, sets, sizes = _l2d_split(pc, yc, pt, alphas, score,
                                        args.k_reg, args.lam)
      t_l2d += time.perf_counter() - t0
      qhat_l2d[score][split] = q
      # Same scores into MAPIE's quantile.
      q_m = tools.quantile(s.astype(np.float64)[:, None], alphas)
      qdiff_same[score][split] = np.abs(np.asarray(q_m).reshape(-1)
                                        - q.astype(np.float64))
      non_prefix[score] += int(_non_prefix(sets, pt, score != "lac").sum())
      size_path_mismatch += int((sets.sum(-1) != sizes).sum())
      hit_l2d = np.take_along_axis(sets, yt[None, :, None].repeat(a_num, 0),
                                   axis=-1)[..., 0]
      cov_l2d[score][split] = hit_l2d.mean(axis=-1)
      size_l2d[score][split] = sets.sum(-1).mean(-1)
      near_mask = _near_tie(pt, t, score, args.k_reg, args.lam)
      near[score][split] = near_mask.mean(axis=-1)
      for variant in VARIANTS:
        t0 = time.perf_counter()
        qm, msets = _mapie_split(tools,
                                 renorm64 if variant == "aligned" else probs64,
                                 cal, yc, test, alphas, score,
                                 variant, args.k_reg, args.lam,
                                 args.seed + split)
        t_mapie += time.perf_counter() - t0
        qhat_mapie[score, variant][split] = qm
        d = (msets != sets).any(axis=-1)  # [A, m]
        differ[score, variant][split] = d.mean(axis=-1)
        hit = np.take_along_axis(msets, yt[None, :, None].repeat(a_num, 0),
                                 axis=-1)[..., 0]
        cov_mapie[score, variant][split] = hit.mean(axis=-1)
        size_mapie[score, variant][split] = msets.sum(-1).mean(-1)
        mapie_non_prefix[score, variant] += int(
            _non_prefix(msets, pt, score != "lac").sum())
        if variant == "eps=0":
          qdiff_rows[score][split] = np.abs(qm - (1.0 - t.astype(np.float64)))
        if variant == "aligned":
          qdiff_own[score][split] = np.abs(qm - (1.0 - t.astype(np.float64)))
          unexplained[score][split] = (d & ~near_mask).mean(axis=-1)

  wall = time.perf_counter() - t_start
  mean = lambda x: x.mean(axis=0)  # over splits  # noqa: E731

  print()
  print("Columns: mapie = MAPIE's defaults (APS/RAPS calibration scores "
        "randomized, EPSILON 1e-8); u=1 = u=1 calibration scores, EPSILON "
        "1e-8; eps=0 = u=1 and EPSILON 0 (exact comparisons); aligned = eps=0 "
        "on rows renormalised to sum to 1 in float64.")
  print()
  print("q-hat (mean over splits). same = max |l2d_jax - MAPIE| over splits "
        "when MAPIE's quantile gets l2d_jax's own scores; own = max |MAPIE "
        "q-hat on its own float64 scores - (1 - l2d_jax conformity_threshold)"
        "| with the rows as given / renormalised:")
  print(f"{'score':6} {'alpha':>6} {'l2d_jax':>12} {'mapie':>12} "
        f"{'u=1':>12} {'same':>8} {'own':>9} {'own renorm':>10}")
  for score in SCORES:
    for j, a in enumerate(alphas):
      print(f"{score:6} {a:6.2f} {mean(qhat_l2d[score])[j]:12.8f} "
            f"{mean(qhat_mapie[score, 'mapie'])[j]:12.8f} "
            f"{mean(qhat_mapie[score, 'u=1'])[j]:12.8f} "
            f"{qdiff_same[score][:, j].max():8.3g} "
            f"{qdiff_rows[score][:, j].max():9.3g} "
            f"{qdiff_own[score][:, j].max():10.3g}")

  print()
  print("Sets differing from l2d_jax's, % of test points (mean over splits); "
        "near = points with a label whose conformity ties the threshold "
        "within float32 precision; beyond = aligned differences at other "
        "points (the headline):")
  print(f"{'score':6} {'alpha':>6} "
        + " ".join(f"{v:>8}" for v in VARIANTS)
        + f" {'near':>8} {'beyond':>8}")
  for score in SCORES:
    for j, a in enumerate(alphas):
      print(f"{score:6} {a:6.2f} "
            + " ".join(_fmt_pct(mean(differ[score, v])[j]) for v in VARIANTS)
            + f" {_fmt_pct(mean(near[score])[j])}"
            f" {_fmt_pct(mean(unexplained[score])[j])}")

  print()
  print("Coverage and mean set size (mean over splits):")
  print(f"{'score':6} {'alpha':>6} {'1-alpha':>7} {'cov l2d':>8} "
        + " ".join(f"{'cov ' + v:>12}" for v in VARIANTS)
        + f" {'size l2d':>8} {'size mapie':>10} {'size algn':>9}")
  for score in SCORES:
    for j, a in enumerate(alphas):
      print(f"{score:6} {a:6.2f} {1 - a:7.2f} {mean(cov_l2d[score])[j]:8.4f} "
            + " ".join(f"{mean(cov_mapie[score, v])[j]:12.4f}"
                       for v in VARIANTS)
            + f" {mean(size_l2d[score])[j]:8.4f} "
            f"{mean(size_mapie[score, 'mapie'])[j]:10.4f} "
            f"{mean(size_mapie[score, 'aligned'])[j]:9.4f}")

  n_sets = args.splits * a_num * (n_all - CAL_SIZE)
  print()
  print(f"l2d_jax sets that are not probability-ordered prefixes holding the "
        f"top-1 label (APS/RAPS also non-empty), of {n_sets} per score: "
        + ", ".join(f"{s} {non_prefix[s]}" for s in SCORES))
  print("MAPIE sets failing the same check: "
        + ", ".join(f"{s}/{v} {mapie_non_prefix[s, v]}" for s in SCORES
                    for v in VARIANTS))
  print(f"prediction_sets sizes != split_set_sizes: {size_path_mismatch}")
  print(f"time: l2d_jax {t_l2d:.1f} s, MAPIE {t_mapie:.1f} s, total "
        f"{wall:.1f} s; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()))

  qmax = max(float(qdiff_same[s].max()) for s in SCORES)
  pct = {s: 100 * float(unexplained[s].mean()) for s in SCORES}
  total_non_prefix = sum(non_prefix.values())
  if args.out:
    def per_alpha(x):
      return {f"{a:g}": float(v) for a, v in zip(alphas, mean(x))}

    result = {
        "mapie_version": tools.version, "model": MODEL,
        "splits": args.splits, "seed": args.seed, "cal_size": CAL_SIZE,
        "alphas": alphas.tolist(), "k_reg": args.k_reg, "lam": args.lam,
        "qhat_max_abs_diff": qmax,
        "qhat_own_scores_max_abs_diff": {
            s: float(qdiff_rows[s].max()) for s in SCORES},
        "qhat_own_scores_renormalised_max_abs_diff": {
            s: float(qdiff_own[s].max()) for s in SCORES},
        "sets_differ_pct": {
            s: {v: per_alpha(100 * differ[s, v]) for v in VARIANTS}
            | {"near": per_alpha(100 * near[s]),
               "beyond_conventions": per_alpha(100 * unexplained[s])}
            for s in SCORES},
        "sets_differ_beyond_conventions_pct": pct,
        "coverage": {
            s: {"l2d_jax": per_alpha(cov_l2d[s])}
            | {f"mapie_{v}": per_alpha(cov_mapie[s, v]) for v in VARIANTS}
            for s in SCORES},
        "non_prefix_sets": non_prefix,
        "mapie_non_prefix_sets": {f"{s}/{v}": n for (s, v), n
                                  in mapie_non_prefix.items()},
        "size_path_mismatch": size_path_mismatch,
        "wall_s": wall,
    }
    text = json.dumps(result, indent=2).encode()
    io.atomic_write(args.out, lambda f: f.write(text))
    print(f"wrote {args.out}")
  print(f"qhat_max_abs_diff={qmax:.6g} lac_sets_differ_pct={pct['lac']:.4f} "
        f"aps_sets_differ_pct={pct['aps']:.4f} "
        f"raps_sets_differ_pct={pct['raps']:.4f} "
        f"non_prefix_sets={total_non_prefix}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
