"""Mixture of four two-dimensional Gaussians (multi-expert calibration paper).

The paper (Verma, Barrejón and Nalisnick, 2023, §5.1 and Figure 3) uses a
mixture of 4 Gaussians in two dimensions where clusters 2 and 3 overlap
severely (there the classifier should defer to the experts) and the other
clusters are easy to separate. The paper does not list the parameters; the
authors' public script draws, per trial, means uniformly in
``[-1, 1)^2``, ``[4, 6)^2``, ``[5, 7)^2`` and ``[-5, -3)^2``, diagonal
variances uniformly in ``[0, 2)`` per coordinate, and gives clusters 1 and 2 a
share ``p / 2`` each and clusters 3 and 4 ``(1 - p) / 2`` each, with
``p ~ U(0.02, 0.98)``; the label of a point is its cluster (4 classes).

Here the layout is fixed at the centre of those ranges so that results are
reproducible across trials: means ``(0, 0)``, ``(5, 5)``, ``(6, 6)``,
``(-4, -4)``, unit standard deviation, equal shares, label = cluster. Clusters
2 and 3 (ids 1 and 2 here, 0-based) are then ``sqrt(2)`` apart, so even the
Bayes classifier confuses about a quarter of their points, while clusters 1
and 2 are ``5 sqrt(2)`` apart (Bayes error below 0.1 %). Keyword options move
cluster 3 (``separation``), replace all means, scales, shares or the
cluster-to-label map, so experiments can vary the overlap.

Randomness is a numpy ``Generator`` built from the ``key_or_seed`` argument
(see :func:`as_numpy_rng`): same seed, same data, on every platform.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

NUM_CLUSTERS = 4

# Centres of the ranges used by the authors' script (0-based cluster ids).
PAPER_MEANS = ((0.0, 0.0), (5.0, 5.0), (6.0, 6.0), (-4.0, -4.0))

_DIAGONAL = np.array([1.0, 1.0]) / math.sqrt(2.0)


def as_numpy_rng(key_or_seed: Any) -> np.random.Generator:
  """Builds a numpy ``Generator`` from a seed, a generator or a JAX key.

  Args:
    key_or_seed: a non-negative Python/numpy integer (``default_rng(seed)``);
      a ``np.random.Generator`` (returned as is, so its state advances); a
      ``np.random.SeedSequence``; or a JAX PRNG key, typed
      (``jax.random.key``) or raw uint32 (``jax.random.PRNGKey``), whose key
      data seeds a ``SeedSequence`` (a key and its raw data give the same
      stream).

  Returns:
    A ``np.random.Generator``.

  Raises:
    TypeError: for any other type (floats, strings, ...).
    ValueError: for a negative integer seed.
  """
  if isinstance(key_or_seed, np.random.Generator):
    return key_or_seed
  if isinstance(key_or_seed, np.random.SeedSequence):
    return np.random.default_rng(key_or_seed)
  if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, bool):
    if key_or_seed < 0:
      raise ValueError(f"seed must be non-negative, got {key_or_seed}.")
    return np.random.default_rng(int(key_or_seed))
  if isinstance(key_or_seed, (jax.Array, np.ndarray)):
    data = key_or_seed
    if jax.dtypes.issubdtype(data.dtype, jax.dtypes.prng_key):
      data = jax.random.key_data(data)
    data = np.asarray(data)
    if data.dtype == np.uint32 and data.ndim >= 1 and data.size:
      return np.random.default_rng(np.random.SeedSequence(data.ravel().tolist()))
  raise TypeError(
      "key_or_seed must be a non-negative int, a np.random.Generator, a "
      f"SeedSequence or a JAX PRNG key, got {type(key_or_seed).__name__}"
      + (f" with dtype {key_or_seed.dtype}" if hasattr(key_or_seed, "dtype") else "")
      + ".")


def _exact_counts(weights: np.ndarray, total: int) -> np.ndarray:
  """Splits ``total`` by ``weights`` with largest remainders (sums exactly)."""
  raw = weights * total
  counts = np.floor(raw).astype(np.int64)
  short = total - int(counts.sum())
  order = np.argsort(-(raw - counts), kind="stable")
  counts[order[:short]] += 1
  return counts


def mixture_of_gaussians(
    key_or_seed: Any,
    num_samples: int,
    *,
    means: Sequence[Sequence[float]] | np.ndarray | None = None,
    separation: float | None = None,
    scales: float | Sequence[float] | np.ndarray = 1.0,
    weights: Sequence[float] | np.ndarray | None = None,
    cluster_labels: Sequence[int] = (0, 1, 2, 3),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Samples the 4-cluster, two-dimensional mixture of Gaussians.

  Cluster ``c`` has mean ``means[c]`` and diagonal covariance
  ``diag(scales[c] ** 2)``. Each cluster gets exactly its share of
  ``num_samples`` (largest remainders), and the points are returned in a
  random order. Cluster ids are 0-based: the paper's "clusters 2 and 3" (the
  overlapping pair) are ids 1 and 2, and its "clusters 3 and 4" (where the
  experts are oracles) are ids 2 and 3.

  Args:
    key_or_seed: seed, numpy ``Generator`` or JAX key (see
      :func:`as_numpy_rng`).
    num_samples: number of points N (>= 0).
    means: ``[4, 2]`` cluster centres; defaults to :data:`PAPER_MEANS`
      ``((0, 0), (5, 5), (6, 6), (-4, -4))``.
    separation: distance between the centres of the overlapping pair, ids 1
      and 2 (the paper's clusters 2 and 3): cluster 2 is placed at
      ``means[1] + separation * (1, 1) / sqrt(2)``. The default layout has
      ``sqrt(2)``; smaller means more overlap. Cannot be combined with
      ``means``.
    scales: standard deviations: a scalar, ``[4]`` (one per cluster) or
      ``[4, 2]`` (per cluster and coordinate). Must be positive.
    weights: ``[4]`` non-negative cluster shares (normalised); default equal.
    cluster_labels: ``[4]`` label of each cluster; default ``(0, 1, 2, 3)``
      (label = cluster, 4 classes, as in the authors' script).

  Returns:
    ``(features, labels, clusters)``: ``[N, 2]`` float32 points, ``[N]``
    int32 labels and ``[N]`` int32 cluster ids in ``[0, 4)``.

  Raises:
    TypeError: ``num_samples`` is not an integer (Python or numpy).
    ValueError: bad shapes, non-positive scales, negative or all-zero
      weights, negative ``num_samples``, or ``means`` with ``separation``.

  Example:
    >>> x, y, c = mixture_of_gaussians(0, 1000)
    >>> x.shape, x.dtype, y.dtype
    ((1000, 2), dtype('float32'), dtype('int32'))
    >>> np.bincount(c).tolist()
    [250, 250, 250, 250]

  References:
    Verma, Barrejón, Nalisnick. "Learning to Defer to Multiple Experts:
    Consistent Surrogate Losses, Confidence Calibration, and Conformal
    Ensembles", AISTATS 2023.
  """
  if isinstance(num_samples, (bool, np.bool_)) or not isinstance(
      num_samples, numbers.Integral):
    raise TypeError(f"`num_samples` must be an int (Python or numpy), got "
                    f"{type(num_samples).__name__} {num_samples!r}.")
  if num_samples < 0:
    raise ValueError(f"`num_samples` must be a non-negative int, got {num_samples!r}.")
  if means is not None and separation is not None:
    raise ValueError("pass either `means` or `separation`, not both.")
  mu = np.array(PAPER_MEANS if means is None else means, dtype=np.float64)
  if mu.shape != (NUM_CLUSTERS, 2):
    raise ValueError(f"`means` must have shape [4, 2], got {mu.shape}.")
  if separation is not None:
    if not np.isfinite(separation) or separation < 0:
      raise ValueError(f"`separation` must be finite and >= 0, got {separation}.")
    mu[2] = mu[1] + float(separation) * _DIAGONAL
  sd = np.asarray(scales, dtype=np.float64)
  if sd.ndim == 1 and sd.shape[0] == NUM_CLUSTERS:
    sd = sd[:, None]
  if sd.ndim > 2 or (sd.ndim == 1 and sd.shape[0] != NUM_CLUSTERS) or (
      sd.ndim == 2 and sd.shape not in ((NUM_CLUSTERS, 1), (NUM_CLUSTERS, 2))):
    raise ValueError(f"`scales` must be a scalar, [4] or [4, 2], got shape {sd.shape}.")
  sd = np.broadcast_to(sd, (NUM_CLUSTERS, 2))
  if not np.all(np.isfinite(sd)) or np.any(sd <= 0):
    raise ValueError(f"`scales` must be positive and finite, got {sd.tolist()}.")
  w = np.full(NUM_CLUSTERS, 0.25) if weights is None else np.asarray(weights, np.float64)
  if w.shape != (NUM_CLUSTERS,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise ValueError(f"`weights` must be 4 non-negative numbers, not all zero, got {w}.")
  lab = np.asarray(cluster_labels)
  if lab.shape != (NUM_CLUSTERS,) or not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0:
    raise ValueError(
        f"`cluster_labels` must be 4 non-negative ints, got {list(cluster_labels)}.")

  rng = as_numpy_rng(key_or_seed)
  counts = _exact_counts(w / w.sum(), int(num_samples))
  clusters = np.repeat(np.arange(NUM_CLUSTERS, dtype=np.int32), counts)
  clusters = clusters[rng.permutation(clusters.shape[0])]
  noise = rng.standard_normal((clusters.shape[0], 2))
  features = (mu[clusters] + sd[clusters] * noise).astype(np.float32)
  labels = lab.astype(np.int32)[clusters]
  return features, labels, clusters


def train_val_test_split(
    key_or_seed: Any,
    *arrays: np.ndarray,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    shuffle: bool = True,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
  """Splits arrays along their first axis into train, validation and test.

  Sizes are ``round(f_train * N)``, ``round(f_val * N)`` and the rest. With
  ``shuffle`` the rows are first permuted by a generator built from
  ``key_or_seed`` (the same permutation for every array); without it the
  splits are contiguous blocks in input order.

  Args:
    key_or_seed: seed, numpy ``Generator`` or JAX key (see
      :func:`as_numpy_rng`); unused when ``shuffle=False``.
    *arrays: one or more arrays sharing their leading dimension N.
    fractions: ``(train, val, test)`` non-negative shares summing to 1.
    shuffle: permute before splitting.

  Returns:
    ``(train, val, test)``, each a tuple with one array per input.

  Raises:
    ValueError: no arrays, mismatched leading dimensions, or bad fractions.

  Example:
    >>> x, y, _ = mixture_of_gaussians(0, 100)
    >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(
    ...     1, x, y, fractions=(0.8, 0.1, 0.1))
    >>> len(xtr), len(xva), len(xte)
    (80, 10, 10)
  """
  if not arrays:
    raise ValueError("train_val_test_split needs at least one array.")
  arrays = tuple(np.asarray(a) for a in arrays)
  n = arrays[0].shape[0] if arrays[0].ndim else -1
  for i, a in enumerate(arrays):
    if a.ndim == 0 or a.shape[0] != n:
      raise ValueError(
          f"all arrays must share their leading dimension; array 0 has shape "
          f"{arrays[0].shape}, array {i} has shape {a.shape}.")
  f = np.asarray(fractions, dtype=np.float64)
  if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1) > 1e-6:
    raise ValueError(
        f"`fractions` must be 3 non-negative numbers summing to 1, got {list(fractions)}.")
  n_train = int(round(f[0] * n))
  n_val = min(int(round(f[1] * n)), n - n_train)
  order = as_numpy_rng(key_or_seed).permutation(n) if shuffle else np.arange(n)
  parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
  return tuple(tuple(a[p] for a in arrays) for p in parts)  # type: ignore[return-value]
