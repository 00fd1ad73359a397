"""Plain numpy loop reference for conformal deferral (tests and benchmark).

Written the obvious way, one alpha and one point at a time in label space,
with exact rational quantile ranks, so that the vectorised sweep in
``l2d_jax.conformal`` can be checked against it and timed against it.
"""

from __future__ import annotations

import fractions
import math

import numpy as np


def lac(probs):
  return 1.0 - probs


def aps(probs):
  """Non-randomized APS scores of every label, ``[n, K]``."""
  out = np.empty_like(probs)
  for i, p in enumerate(probs):
    for y in range(p.size):
      out[i, y] = p[p > p[y]].sum() + p[y]
  return out


def raps(probs, k_reg, lam):
  out = aps(probs)
  for i, p in enumerate(probs):
    for y in range(p.size):
      rank = 1 + int((p > p[y]).sum())
      out[i, y] += lam * max(0, rank - k_reg)
  return out


def exact_rank(n, alpha):
  """ceil((n + 1)(1 - alpha)) with alpha read as the decimal it prints as."""
  a = fractions.Fraction(repr(float(alpha)))
  return math.ceil((n + 1) * (1 - a))


def quantile(scores, alpha):
  s = np.sort(np.asarray(scores, np.float64))
  k = exact_rank(s.size, alpha)
  return np.inf if k > s.size else s[k - 1]


def segregativity_loo(conf, label, answer, in_set, exclude):
  """Segregativity of one expert matrix for one set, own answer removed."""
  c = conf.astype(np.int64).copy()
  if exclude:
    c[label, answer] -= 1
  s = in_set if in_set.any() else np.ones_like(in_set)
  sub = c[np.ix_(s, s)]
  tot = sub.sum()
  return np.trace(sub) / tot if tot > 0 else -1.0


def deferral_loop(probs_cal, labels_cal, probs_test, labels_test, annotator,
                  answer, valid, confusion, alphas, *, score, costs,
                  strategy="segregativity", exclude=None,
                  include_crossing=None):
  """Per-alpha accuracy / queries / max Q/E / avg Q/E, the slow way.

  Ties between experts go to the cheapest, then to the first slot. APS sets
  keep the threshold-crossing label unless ``include_crossing=False``.
  """
  if include_crossing is None:
    include_crossing = score == "aps"
  if exclude is None:
    exclude = valid
  fn = {"lac": lac, "aps": aps}[score]
  cal = fn(probs_cal)[np.arange(labels_cal.size), labels_cal]
  test_scores = fn(probs_test)
  num_j = confusion.shape[0]
  out = {"accuracy": [], "queries": [], "max_queries_per_expert": [],
         "avg_queries_per_queried_expert": [], "coverage": []}
  for alpha in alphas:
    q = quantile(cal, alpha)
    right = 0
    covered = 0
    hist = np.zeros(num_j, int)
    for i in range(labels_test.size):
      y = labels_test[i]
      in_set = test_scores[i] <= q
      if include_crossing and not in_set.all():
        above = np.where(in_set, np.inf, test_scores[i])
        in_set[int(np.argmin(above))] = True
      covered += in_set[y]
      if in_set.sum() == 1:
        right += int(np.argmax(in_set) == y)
        continue
      best, best_slot = None, None
      for a in np.flatnonzero(valid[i]):
        e = annotator[i, a]
        if strategy == "segregativity":
          v = segregativity_loo(confusion[e], y, answer[i, a], in_set,
                                exclude[i, a])
        else:  # naive most accurate: whole matrix
          v = segregativity_loo(confusion[e], y, answer[i, a],
                                np.zeros_like(in_set), exclude[i, a])
        key = (v, -costs[e])
        if best is None or key > best:
          best, best_slot = key, a
      hist[annotator[i, best_slot]] += 1
      right += int(answer[i, best_slot] == y)
    queries = hist.sum()
    n_q = (hist > 0).sum()
    out["accuracy"].append(right / labels_test.size)
    out["queries"].append(queries)
    out["max_queries_per_expert"].append(hist.max())
    out["avg_queries_per_queried_expert"].append(queries / n_q if n_q else 0.0)
    out["coverage"].append(covered / labels_test.size)
  return {k: np.asarray(v) for k, v in out.items()}
