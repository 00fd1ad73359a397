"""Experts: annotation data model, confusion matrices, selection, simulators."""

__all__ = (
    "Annotations",
    "confusion_matrices",
    "drop_unusable_experts",
    "expert_accuracy",
    "keep_bottom_fraction",
    "leave_one_out_confusions",
    "noisy_expert",
    "noisy_experts",
    "oracle_expert",
    "oracle_experts",
    "random_expert",
    "segregativity",
    "select_expert",
    "specialised_experts",
    "specialised_oracle_groups",
    "subsample_n_shots",
    "TIE_BREAKS",
)


from l2d_jax.experts._annotations import Annotations
from l2d_jax.experts._annotations import confusion_matrices
from l2d_jax.experts._annotations import drop_unusable_experts
from l2d_jax.experts._annotations import expert_accuracy
from l2d_jax.experts._annotations import keep_bottom_fraction
from l2d_jax.experts._annotations import leave_one_out_confusions
from l2d_jax.experts._annotations import subsample_n_shots
from l2d_jax.experts._segregativity import segregativity
from l2d_jax.experts._selection import TIE_BREAKS
from l2d_jax.experts._selection import select_expert
# --- simulators (issue 3) ---
from l2d_jax.experts._simulators import noisy_expert
from l2d_jax.experts._simulators import noisy_experts
from l2d_jax.experts._simulators import oracle_expert
from l2d_jax.experts._simulators import oracle_experts
from l2d_jax.experts._simulators import random_expert
from l2d_jax.experts._simulators import specialised_experts
from l2d_jax.experts._simulators import specialised_oracle_groups
# --- end simulators ---
