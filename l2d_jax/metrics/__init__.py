"""Metrics: deferral outcomes and workload, calibration, significance.

Decisions are read in the one encoding of ``l2d_jax.deferral``: 0 = the
model answers, ``j >= 1`` = expert ``j``.
"""

__all__ = (
    # Deferral outcomes and workload.
    "system_predictions",
    "system_accuracy",
    "model_coverage",
    "deferral_rates",
    "workload",
    # Calibration.
    "expected_calibration_error",
    "reliability_diagram",
    "ReliabilityDiagram",
    "expert_calibration_errors",
    # Significance of paired differences.
    "paired_one_tailed_test",
    "PairedTest",
    "significance_marks",
    # Deferral curves and their areas (AURSAC, AURDAC).
    "DeferralCurves",
    "deferral_curves",
    "aursac",
    "aurdac",
)

# Deferral outcomes and workload.
from l2d_jax.metrics._deferral import deferral_rates
from l2d_jax.metrics._deferral import model_coverage
from l2d_jax.metrics._deferral import system_accuracy
from l2d_jax.metrics._deferral import system_predictions
from l2d_jax.metrics._deferral import workload

# Calibration.
from l2d_jax.metrics._calibration import ReliabilityDiagram
from l2d_jax.metrics._calibration import expected_calibration_error
from l2d_jax.metrics._calibration import expert_calibration_errors
from l2d_jax.metrics._calibration import reliability_diagram

# Significance of paired differences.
from l2d_jax.metrics._significance import PairedTest
from l2d_jax.metrics._significance import paired_one_tailed_test
from l2d_jax.metrics._significance import significance_marks

# Deferral curves and their areas (AURSAC, AURDAC).
from l2d_jax.metrics._curves import DeferralCurves
from l2d_jax.metrics._curves import aurdac
from l2d_jax.metrics._curves import aursac
from l2d_jax.metrics._curves import deferral_curves
