"""Conformal prediction sets and training-free deferral by segregativity.

Scores (LAC, APS, RAPS) in two forms: per class, and along each row's
classes sorted by probability (the prefix form the sets and the sweep use).
Exact conformal quantiles turn calibration scores into prediction sets;
``tune_raps`` picks RAPS's ``k_reg`` and ``lam``. Deferral by segregativity
scores annotators inside each prefix set (the decision rules themselves are
in ``l2d_jax.deferral``); ``deferral_sweep`` runs the whole experiment
(splits x scores x alphas) as one jitted program. Experts' names (e.g.
``segregativity``) are in ``l2d_jax.experts``.
"""

__all__ = (
    # Conformity scores, per class.
    "SCORES",
    "lac_scores",
    "aps_scores",
    "raps_scores",
    "lac_conformity",
    "aps_conformity",
    "raps_conformity",
    # Scores along the classes sorted by probability (prefix sets).
    "sort_probs",
    "sorted_lac_scores",
    "sorted_aps_scores",
    "sorted_raps_scores",
    "sorted_conformity",
    "sorted_lac_conformity",
    "sorted_aps_conformity",
    "sorted_raps_conformity",
    # Quantiles and prediction sets.
    "conformal_quantile",
    "quantile_rank",
    "conformity_threshold",
    "prediction_sets",
    "set_coverage",
    "mean_set_size",
    "set_sizes_from_sorted",
    "split_set_sizes",
    "paper_alpha_grid",
    # RAPS tuning.
    "tune_raps",
    "DEFAULT_LAM_GRID",
    # Deferral by segregativity inside prefix sets.
    "prefix_counts",
    "prefix_segregativity",
    "sweep_metrics",
    "SweepMetrics",
    # The conformal deferral sweep.
    "deferral_sweep",
    "DeferralSweep",
    "BASELINES",
    "cross_fitted_accuracy",
)

# Conformity scores, per class.
from l2d_jax.conformal._scores import SCORES
from l2d_jax.conformal._scores import aps_conformity
from l2d_jax.conformal._scores import aps_scores
from l2d_jax.conformal._scores import lac_conformity
from l2d_jax.conformal._scores import lac_scores
from l2d_jax.conformal._scores import raps_conformity
from l2d_jax.conformal._scores import raps_scores

# Scores along the classes sorted by probability (prefix sets).
from l2d_jax.conformal._scores import sort_probs
from l2d_jax.conformal._scores import sorted_aps_conformity
from l2d_jax.conformal._scores import sorted_aps_scores
from l2d_jax.conformal._scores import sorted_conformity
from l2d_jax.conformal._scores import sorted_lac_conformity
from l2d_jax.conformal._scores import sorted_lac_scores
from l2d_jax.conformal._scores import sorted_raps_conformity
from l2d_jax.conformal._scores import sorted_raps_scores

# Quantiles and prediction sets.
from l2d_jax.conformal._quantile import conformal_quantile
from l2d_jax.conformal._quantile import conformity_threshold
from l2d_jax.conformal._quantile import mean_set_size
from l2d_jax.conformal._quantile import paper_alpha_grid
from l2d_jax.conformal._quantile import prediction_sets
from l2d_jax.conformal._quantile import quantile_rank
from l2d_jax.conformal._quantile import set_coverage
from l2d_jax.conformal._quantile import set_sizes_from_sorted
from l2d_jax.conformal._set_sizes import split_set_sizes

# RAPS tuning.
from l2d_jax.conformal._raps_tuning import DEFAULT_LAM_GRID
from l2d_jax.conformal._raps_tuning import tune_raps

# Deferral by segregativity inside prefix sets.
from l2d_jax.conformal._deferral import SweepMetrics
from l2d_jax.conformal._deferral import prefix_counts
from l2d_jax.conformal._deferral import prefix_segregativity
from l2d_jax.conformal._deferral import sweep_metrics

# The conformal deferral sweep.
from l2d_jax.conformal._sweep import BASELINES
from l2d_jax.conformal._sweep import DeferralSweep
from l2d_jax.conformal._cross_fit import cross_fitted_accuracy
from l2d_jax.conformal._sweep import deferral_sweep
