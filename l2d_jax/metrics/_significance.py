"""Significance of paired accuracy differences, as in the conformal-deferral paper."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np


class PairedTest(NamedTuple):
  """Result of ``paired_one_tailed_test``.

  Attributes:
    p_value: one-tailed p-value for ``mean(a) > mean(b)``.
    test: ``'t-test'`` or ``'wilcoxon'`` (``'none'`` when no difference).
    shapiro_p: Shapiro-Wilk p-value of the differences (None for n < 3).
  """

  p_value: float
  test: str
  shapiro_p: float | None


def paired_one_tailed_test(
    a: np.ndarray, b: np.ndarray, *, normality_level: float = 0.05
) -> PairedTest:
  """One-tailed paired test that ``a`` beats ``b`` (per-split scores).

  As in the paper: a Shapiro-Wilk test on the differences; if it does not
  reject normality at ``normality_level``, a one-tailed paired t-test,
  otherwise a one-tailed Wilcoxon signed-rank test.

  Args:
    a: ``[n]`` per-split scores of the method.
    b: ``[n]`` per-split scores of the baseline, paired with ``a``.
    normality_level: level of the Shapiro-Wilk test.

  Returns:
    ``PairedTest``. When every difference is 0 the p-value is 1.0 (no
    evidence) and ``test`` is ``'none'``. With fewer than 3 pairs Shapiro-Wilk
    cannot run and the Wilcoxon test is used.

  Raises:
    ValueError: different lengths, empty input, or NaN.
  """
  # scipy.stats costs ~0.6 s to import: only the callers of this test pay it.
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.ndim != 1 or a.shape != b.shape or a.size == 0:
    raise ValueError(f"`a` and `b` must be non-empty 1-D arrays of equal "
                     f"length, got shapes {a.shape} and {b.shape}.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("`a` and `b` must be finite.")
  d = a - b
  if np.all(d == 0):
    return PairedTest(1.0, "none", None)
  shapiro_p = None
  normal = False
  if d.size >= 3:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # constant input warns; handled below
      shapiro_p = float(stats.shapiro(d).pvalue)
    normal = np.isfinite(shapiro_p) and shapiro_p > normality_level
    if not np.isfinite(shapiro_p):
      shapiro_p = None
  if normal and np.std(d) > 0:
    p = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    return PairedTest(p, "t-test", shapiro_p)
  p = float(stats.wilcoxon(a, b, alternative="greater").pvalue)
  return PairedTest(p, "wilcoxon", shapiro_p)


def significance_marks(test: PairedTest) -> str:
  """Paper's marks: ``*``..``****`` (t-test) or ``o``..``oooo`` (Wilcoxon).

  One mark per threshold passed among 0.05, 0.01, 0.001, 0.0001.
  """
  n = sum(test.p_value < t for t in (0.05, 0.01, 0.001, 0.0001))
  if test.test == "t-test":
    return "*" * n
  if test.test == "wilcoxon":
    return "o" * n
  return ""
