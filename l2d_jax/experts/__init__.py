"""Experts: annotation data model, confusion matrices, selection, simulators."""

from l2d_jax.experts._annotations import Annotations
from l2d_jax.experts._annotations import confusion_matrices
from l2d_jax.experts._annotations import drop_unusable_experts
from l2d_jax.experts._annotations import expert_accuracy
from l2d_jax.experts._annotations import keep_bottom_fraction
from l2d_jax.experts._annotations import leave_one_out_confusions
from l2d_jax.experts._annotations import subsample_n_shots
# --- simulators (issue 3) ---
# --- end simulators ---
