"""Experts: annotation data model, confusion matrices, segregativity, simulators.

``Annotations`` holds who answered what (expert ids from 0). Confusion
matrices and accuracies are estimated from it; ``segregativity`` scores an
expert on a set of classes. Simulators draw the answers of noisy, oracle,
specialised and per-class-accuracy experts from a ``jax.random`` key
(expert ``j``'s key is ``fold_in(key, j)``). Context sets describe an expert
by a few of its answers (L2D-Pop, EA-L2D); Beta posteriors summarise an
expert's per-class accuracy (EA-L2D).

Choosing an expert (``select_expert``) is a decision rule: see
``l2d_jax.deferral``.
"""

__all__ = (
    # The annotation data model and what is estimated from it.
    "Annotations",
    "confusion_matrices",
    "leave_one_out_confusions",
    "expert_accuracy",
    "keep_bottom_fraction",
    "subsample_n_shots",
    "warn_unusable_experts",
    "segregativity",
    # Simulated experts: noisy, oracle, random, specialised.
    "noisy_expert",
    "noisy_experts",
    "oracle_expert",
    "oracle_experts",
    "random_expert",
    "specialised_experts",
    "specialised_oracle_groups",
    # Simulated experts by expertise classes and overlap (EA-L2D).
    "ExpertType",
    "LCB_EXPERT_TYPES",
    "PRIOR_KINDS",
    "split_classes",
    "expertise_mask",
    "sample_expertise",
    "overlap_experts",
    "per_class_accuracy_experts",
    "true_accuracy",
    "type_counts",
    "self_assessed_prior",
    # Populations of experts and their context sets.
    "Context",
    "sample_context",
    "sample_class_context",
    "population_oracle_sets",
    "population_answers",
    "pseudo_expert_labels",
    # Beta-posterior expert profiles.
    "BetaPosterior",
    "beta_posterior",
    "prior_from_self_assessment",
    "class_counts",
    "expertise_class",
    "ea_rejector_features",
)

# The annotation data model and what is estimated from it.
from l2d_jax.experts._annotations import Annotations
from l2d_jax.experts._annotations import confusion_matrices
from l2d_jax.experts._annotations import expert_accuracy
from l2d_jax.experts._annotations import keep_bottom_fraction
from l2d_jax.experts._annotations import leave_one_out_confusions
from l2d_jax.experts._annotations import subsample_n_shots
from l2d_jax.experts._annotations import warn_unusable_experts
from l2d_jax.experts._segregativity import segregativity

# Simulated experts: noisy, oracle, random, specialised.
from l2d_jax.experts._simulators import noisy_expert
from l2d_jax.experts._simulators import noisy_experts
from l2d_jax.experts._simulators import oracle_expert
from l2d_jax.experts._simulators import oracle_experts
from l2d_jax.experts._simulators import random_expert
from l2d_jax.experts._simulators import specialised_experts
from l2d_jax.experts._simulators import specialised_oracle_groups

# Simulated experts by expertise classes and overlap (EA-L2D).
from l2d_jax.experts._ea_experts import ExpertType
from l2d_jax.experts._ea_experts import LCB_EXPERT_TYPES
from l2d_jax.experts._ea_experts import PRIOR_KINDS
from l2d_jax.experts._ea_experts import expertise_mask
from l2d_jax.experts._ea_experts import overlap_experts
from l2d_jax.experts._ea_experts import per_class_accuracy_experts
from l2d_jax.experts._ea_experts import sample_expertise
from l2d_jax.experts._ea_experts import self_assessed_prior
from l2d_jax.experts._ea_experts import split_classes
from l2d_jax.experts._ea_experts import true_accuracy
from l2d_jax.experts._ea_experts import type_counts

# Populations of experts and their context sets.
from l2d_jax.experts._context import Context
from l2d_jax.experts._context import population_answers
from l2d_jax.experts._context import population_oracle_sets
from l2d_jax.experts._context import pseudo_expert_labels
from l2d_jax.experts._context import sample_context
from l2d_jax.experts._ea_experts import sample_class_context

# Beta-posterior expert profiles.
from l2d_jax.experts._beta import BetaPosterior
from l2d_jax.experts._beta import beta_posterior
from l2d_jax.experts._beta import class_counts
from l2d_jax.experts._beta import ea_rejector_features
from l2d_jax.experts._beta import expertise_class
from l2d_jax.experts._beta import prior_from_self_assessment
