"""Plain numpy loop reference for conformal prediction and deferral (tests).

Written the obvious way, one alpha and one point at a time in label space,
with exact rational quantile ranks, so that the vectorised library code in
``l2d_jax.conformal`` can be checked against it.
"""

from __future__ import annotations

import fractions
import math

import numpy as np


def random_probs(rng, n, k, ties=False):
  """``[n, k]`` float32 Dirichlet(0.5) probabilities; ``ties``: exact ties."""
  p = rng.dirichlet(np.full(k, 0.5), n)
  if ties:  # force exact ties between some labels
    p = np.round(p, 1) + 1e-9
    p /= p.sum(1, keepdims=True)
    p = np.round(p, 6)
    p[:, -1] = 1 - p[:, :-1].sum(1)
    p = np.clip(p, 0, 1)
  return p.astype(np.float32)


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


def counts_loo(conf, label, answer, in_set, exclude):
  """(correct, total) of one expert matrix inside a set, own answer removed."""
  c = conf.astype(np.int64).copy()
  if exclude:
    c[label, answer] -= 1
  s = in_set if in_set.any() else np.ones_like(in_set)
  sub = c[np.ix_(s, s)]
  return int(np.trace(sub)), int(sub.sum())


def beta_lcb(correct, total, lcb_lambda, prior_a, prior_b):
  """mean - lambda * std of Beta(prior_a + correct, prior_b + wrong), float64."""
  a = prior_a + correct
  b = prior_b + total - correct
  s = a + b
  return a / s - lcb_lambda * math.sqrt(a * b / (s * s * (s + 1)))


def _scores(probs, score, k_reg, lam):
  if score == "lac":
    return lac(probs)
  if score == "aps":
    return aps(probs)
  return raps(probs, k_reg, lam)


def _workload(hist):
  queries = hist.sum()
  n_q = (hist > 0).sum()
  return queries, hist.max(), (queries / n_q if n_q else 0.0)


def deferral_loop(probs_cal, labels_cal, probs_test, labels_test, annotator,
                  answer, valid, confusion, alphas, *, score, costs,
                  strategy="segregativity", exclude=None,
                  include_crossing=None, priority=None, k_reg=None, lam=None,
                  lcb=(1.0, 1.0, 1.0)):
  """Per-alpha accuracy / queries / max Q/E / avg Q/E, the slow way.

  The chosen annotator maximises (selection score, -cost, priority): ties go
  to the cheapest, then to the highest ``priority`` (``[n, M]``; without it,
  to the first slot). ``naive_random`` ignores costs (score 0 for everyone).
  APS and RAPS sets keep the threshold-crossing label unless
  ``include_crossing=False``. RAPS takes ``k_reg``/``lam`` per alpha.
  ``segregativity_lcb`` scores by ``beta_lcb`` of the counts inside the set
  with ``lcb = (lambda, prior_a, prior_b)``.

  Returns:
    dict of ``[A]`` arrays (accuracy, queries, max_queries_per_expert,
    avg_queries_per_queried_expert, coverage, mean_set_size) and ``correct``
    ``[A, n]`` per point.
  """
  if include_crossing is None:
    include_crossing = score in ("aps", "raps")
  if exclude is None:
    exclude = valid
  if priority is None:
    priority = np.zeros(valid.shape)
  num_j = confusion.shape[0]
  n = labels_test.size
  out = {"accuracy": [], "queries": [], "max_queries_per_expert": [],
         "avg_queries_per_queried_expert": [], "coverage": [],
         "mean_set_size": [], "correct": []}
  for a_i, alpha in enumerate(alphas):
    kr = None if k_reg is None else int(k_reg[a_i])
    lm = None if lam is None else float(lam[a_i])
    cal = _scores(probs_cal, score, kr, lm)[np.arange(labels_cal.size),
                                              labels_cal]
    test_scores = _scores(probs_test, score, kr, lm)
    q = quantile(cal, alpha)
    covered = 0
    size_sum = 0
    right = np.zeros(n, bool)
    hist = np.zeros(num_j, int)
    for i in range(n):
      y = labels_test[i]
      in_set = test_scores[i] <= q
      if include_crossing and not in_set.all():
        above = np.where(in_set, np.inf, test_scores[i])
        in_set[int(np.argmin(above))] = True
      covered += in_set[y]
      size_sum += in_set.sum()
      if in_set.sum() == 1:
        right[i] = np.argmax(in_set) == y
        continue
      best, best_slot = None, None
      for a in np.flatnonzero(valid[i]):
        e = annotator[i, a]
        if strategy == "segregativity":
          v = segregativity_loo(confusion[e], y, answer[i, a], in_set,
                                exclude[i, a])
          c = costs[e]
        elif strategy == "segregativity_lcb":
          v = beta_lcb(*counts_loo(confusion[e], y, answer[i, a], in_set,
                                   exclude[i, a]), *lcb)
          c = costs[e]
        elif strategy == "naive_most_accurate":  # whole matrix
          v = segregativity_loo(confusion[e], y, answer[i, a],
                                np.zeros_like(in_set), exclude[i, a])
          c = costs[e]
        else:  # naive_random
          v, c = 0.0, 0.0
        key = (v, -c, priority[i, a])
        if best is None or key > best:
          best, best_slot = key, a
      hist[annotator[i, best_slot]] += 1
      right[i] = answer[i, best_slot] == y
    queries, most, avg = _workload(hist)
    out["accuracy"].append(right.mean())
    out["queries"].append(queries)
    out["max_queries_per_expert"].append(most)
    out["avg_queries_per_queried_expert"].append(avg)
    out["coverage"].append(covered / n)
    out["mean_set_size"].append(size_sum / n)
    out["correct"].append(right)
  return {k: np.asarray(v) for k, v in out.items()}


def baselines_loop(model_correct, annotator, answer, labels, valid,
                   hindsight_accuracy, priority_random, priority_best):
  """(accuracy, queries, max Q/E, avg Q/E) of the model, random and best.

  The random expert is the valid annotator with the highest
  ``priority_random``; the best expert the valid annotator with the highest
  ``hindsight_accuracy`` (ties: highest ``priority_best``).
  """
  num_j = hindsight_accuracy.shape[0]
  rows = {"model": (model_correct.mean(), 0, 0, 0.0)}
  for name, key_fn in (
      ("random_expert", lambda i, a: priority_random[i, a]),
      ("best_expert", lambda i, a: (hindsight_accuracy[annotator[i, a]],
                                    priority_best[i, a]))):
    hist = np.zeros(num_j, int)
    right = 0
    for i in range(labels.size):
      slots = np.flatnonzero(valid[i])
      a = max(slots, key=lambda s, i=i: key_fn(i, s))
      hist[annotator[i, a]] += 1
      right += answer[i, a] == labels[i]
    rows[name] = (right / labels.size,) + _workload(hist)
  return rows
