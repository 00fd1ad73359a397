"""Metrics: deferral workload, significance tests, calibration."""

# --- workload and significance (issue 2) ---
# --- end workload and significance ---
# --- calibration and deferral metrics (issue 3) ---
# --- end calibration and deferral metrics ---
