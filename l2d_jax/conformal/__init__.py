"""Conformal prediction sets and training-free deferral by segregativity."""

from l2d_jax.conformal._deferral import SweepMetrics
from l2d_jax.conformal._deferral import prefix_counts
from l2d_jax.conformal._deferral import prefix_segregativity
from l2d_jax.conformal._deferral import sweep_metrics
from l2d_jax.conformal._sweep import BASELINES
from l2d_jax.conformal._sweep import DeferralSweep
from l2d_jax.conformal._sweep import cross_fitted_accuracy
from l2d_jax.conformal._sweep import deferral_sweep
from l2d_jax.conformal._quantile import conformal_quantile
from l2d_jax.conformal._quantile import conformity_threshold
from l2d_jax.conformal._quantile import mean_set_size
from l2d_jax.conformal._quantile import paper_alpha_grid
from l2d_jax.conformal._quantile import prediction_sets
from l2d_jax.conformal._quantile import quantile_rank
from l2d_jax.conformal._quantile import set_coverage
from l2d_jax.conformal._quantile import set_sizes_from_sorted
from l2d_jax.conformal._raps_tuning import DEFAULT_LAM_GRID
from l2d_jax.conformal._raps_tuning import tune_raps
from l2d_jax.conformal._scores import SCORES
from l2d_jax.conformal._scores import aps_conformity
from l2d_jax.conformal._scores import aps_scores
from l2d_jax.conformal._scores import lac_conformity
from l2d_jax.conformal._scores import lac_scores
from l2d_jax.conformal._scores import raps_conformity
from l2d_jax.conformal._scores import raps_scores
from l2d_jax.conformal._scores import sort_probs
from l2d_jax.conformal._scores import sorted_aps_conformity
from l2d_jax.conformal._scores import sorted_aps_scores
from l2d_jax.conformal._scores import sorted_conformity
from l2d_jax.conformal._scores import sorted_lac_conformity
from l2d_jax.conformal._scores import sorted_lac_scores
from l2d_jax.conformal._scores import sorted_raps_conformity
from l2d_jax.conformal._scores import sorted_raps_scores
from l2d_jax.conformal._set_sizes import split_set_sizes

__all__ = (
    "SweepMetrics",
    "BASELINES",
    "DeferralSweep",
    "cross_fitted_accuracy",
    "deferral_sweep",
    "DEFAULT_LAM_GRID",
    "SCORES",
    "aps_conformity",
    "aps_scores",
    "conformal_quantile",
    "conformity_threshold",
    "lac_conformity",
    "lac_scores",
    "mean_set_size",
    "paper_alpha_grid",
    "prediction_sets",
    "prefix_counts",
    "prefix_segregativity",
    "quantile_rank",
    "raps_conformity",
    "raps_scores",
    "set_coverage",
    "set_sizes_from_sorted",
    "sort_probs",
    "sorted_aps_conformity",
    "sorted_aps_scores",
    "sorted_conformity",
    "sorted_lac_conformity",
    "sorted_lac_scores",
    "sorted_raps_conformity",
    "sorted_raps_scores",
    "split_set_sizes",
    "sweep_metrics",
    "tune_raps",
)
