"""Experts: annotation data model, confusion matrices, segregativity, simulators.

Choosing an expert (``select_expert``) is a decision rule: see
``l2d_jax.deferral``.
"""

__all__ = (
    "Annotations",
    "confusion_matrices",
    "expert_accuracy",
    "keep_bottom_fraction",
    "leave_one_out_confusions",
    "noisy_expert",
    "noisy_experts",
    "oracle_expert",
    "oracle_experts",
    "random_expert",
    "segregativity",
    "specialised_experts",
    "specialised_oracle_groups",
    "subsample_n_shots",
    "warn_unusable_experts",
    # Context sets and the synthetic population (L2D-Pop, issue 8).
    "Context",
    "sample_context",
    "population_oracle_sets",
    "population_answers",
    "pseudo_expert_labels",
    # Beta-posterior expert profiles (EA-L2D, issue 9).
    "BetaPosterior",
    "beta_posterior",
    "prior_from_self_assessment",
    "class_counts",
    "expertise_class",
    "ea_rejector_features",
    # Simulated experts of the EA-L2D experiments (issue 9).
    "ExpertType",
    "LCB_EXPERT_TYPES",
    "PRIOR_KINDS",
    "expertise_mask",
    "overlap_experts",
    "per_class_accuracy_experts",
    "sample_class_context",
    "sample_expertise",
    "self_assessed_prior",
    "split_classes",
    "true_accuracy",
    "type_counts",
)


from l2d_jax.experts._annotations import Annotations
from l2d_jax.experts._annotations import confusion_matrices
from l2d_jax.experts._annotations import expert_accuracy
from l2d_jax.experts._annotations import keep_bottom_fraction
from l2d_jax.experts._annotations import leave_one_out_confusions
from l2d_jax.experts._annotations import subsample_n_shots
from l2d_jax.experts._annotations import warn_unusable_experts
from l2d_jax.experts._segregativity import segregativity
# --- simulators (issue 3) ---
from l2d_jax.experts._simulators import noisy_expert
from l2d_jax.experts._simulators import noisy_experts
from l2d_jax.experts._simulators import oracle_expert
from l2d_jax.experts._simulators import oracle_experts
from l2d_jax.experts._simulators import random_expert
from l2d_jax.experts._simulators import specialised_experts
from l2d_jax.experts._simulators import specialised_oracle_groups
# --- end simulators ---
# --- context sets and population (issue 8) ---
from l2d_jax.experts._context import Context
from l2d_jax.experts._context import population_answers
from l2d_jax.experts._context import population_oracle_sets
from l2d_jax.experts._context import pseudo_expert_labels
from l2d_jax.experts._context import sample_context
# --- end context sets and population ---
# --- Beta-posterior expert profiles (EA-L2D, issue 9) ---
from l2d_jax.experts._beta import BetaPosterior
from l2d_jax.experts._beta import beta_posterior
from l2d_jax.experts._beta import class_counts
from l2d_jax.experts._beta import ea_rejector_features
from l2d_jax.experts._beta import expertise_class
from l2d_jax.experts._beta import prior_from_self_assessment
# --- end Beta-posterior expert profiles ---
# --- simulated experts of the EA-L2D experiments (issue 9) ---
from l2d_jax.experts._ea_experts import ExpertType
from l2d_jax.experts._ea_experts import LCB_EXPERT_TYPES
from l2d_jax.experts._ea_experts import PRIOR_KINDS
from l2d_jax.experts._ea_experts import expertise_mask
from l2d_jax.experts._ea_experts import overlap_experts
from l2d_jax.experts._ea_experts import per_class_accuracy_experts
from l2d_jax.experts._ea_experts import sample_class_context
from l2d_jax.experts._ea_experts import sample_expertise
from l2d_jax.experts._ea_experts import self_assessed_prior
from l2d_jax.experts._ea_experts import split_classes
from l2d_jax.experts._ea_experts import true_accuracy
from l2d_jax.experts._ea_experts import type_counts
# --- end EA-L2D experts ---
