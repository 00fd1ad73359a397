"""Data: loaders for real annotation data sets and simulated data.

Loaders read numpy/csv/json/zip only (never pickle) from a ``data_dir``.
"""

# --- real annotation loaders (issue 2) ---
# --- end real annotation loaders ---
# --- synthetic pools (issue 2) ---
# --- end synthetic pools ---
# --- images and mixture of Gaussians (issue 3) ---
# --- end images and mixture of Gaussians ---
