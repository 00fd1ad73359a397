"""Metrics: deferral workload, significance tests, calibration."""

__all__ = (
    "coverage",
    "deferral_rates",
    "expected_calibration_error",
    "expert_calibration_errors",
    "paired_one_tailed_test",
    "PairedTest",
    "reliability_diagram",
    "ReliabilityDiagram",
    "significance_marks",
    "system_accuracy",
    "system_predictions",
    "workload",
)


# --- workload and significance (issue 2) ---
from l2d_jax.conformal._deferral import workload
from l2d_jax.metrics._significance import PairedTest
from l2d_jax.metrics._significance import paired_one_tailed_test
from l2d_jax.metrics._significance import significance_marks
# --- end workload and significance ---
# --- calibration and deferral metrics (issue 3) ---
from l2d_jax.metrics._calibration import ReliabilityDiagram
from l2d_jax.metrics._calibration import expected_calibration_error
from l2d_jax.metrics._calibration import expert_calibration_errors
from l2d_jax.metrics._calibration import reliability_diagram
from l2d_jax.metrics._deferral import coverage
from l2d_jax.metrics._deferral import deferral_rates
from l2d_jax.metrics._deferral import system_accuracy
from l2d_jax.metrics._deferral import system_predictions
# --- end calibration and deferral metrics ---
