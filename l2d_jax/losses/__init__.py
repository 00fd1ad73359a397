"""Losses: multi-expert learning-to-defer surrogates and their estimators.

Losses are per example (``[..., K + J]`` logits in, ``[...]`` losses out);
the caller reduces. Estimators read the logits of a trained surrogate.
"""

__all__ = (
    # Surrogate losses.
    "multi_expert_softmax_loss",
    "multi_expert_ova_loss",
    # Estimators from softmax-surrogate logits.
    "softmax_correctness",
    "softmax_class_probabilities",
    # Estimators from one-vs-all-surrogate logits.
    "ova_correctness",
    "ova_class_probabilities",
    # Top-k deferral.
    "comp_sum_loss",
    "agent_costs",
    "topk_deferral_surrogate",
    "topk_deferral_loss",
    "cardinality_loss",
    "cardinality_surrogate",
    # L2D-Pop and limited demonstrations (issue 8).
    "population_l2d_loss",
    "fixmatch_consistency",
    # Expert-agnostic L2D (EA-L2D, issue 9).
    "EA_WEIGHTINGS",
    "ea_lce_loss",
    "ea_deferral_weight",
)

# Surrogate losses.
from l2d_jax.losses._multi_expert import multi_expert_ova_loss
from l2d_jax.losses._multi_expert import multi_expert_softmax_loss

# Estimators from softmax-surrogate logits.
from l2d_jax.losses._multi_expert import softmax_class_probabilities
from l2d_jax.losses._multi_expert import softmax_correctness

# Estimators from one-vs-all-surrogate logits.
from l2d_jax.losses._multi_expert import ova_class_probabilities
from l2d_jax.losses._multi_expert import ova_correctness

# Top-k deferral.
from l2d_jax.losses._topk import agent_costs
from l2d_jax.losses._topk import cardinality_loss
from l2d_jax.losses._topk import cardinality_surrogate
from l2d_jax.losses._topk_comp_sum import comp_sum_loss
from l2d_jax.losses._topk import topk_deferral_loss
from l2d_jax.losses._topk import topk_deferral_surrogate

# L2D-Pop and limited demonstrations (issue 8).
from l2d_jax.losses._population import fixmatch_consistency
from l2d_jax.losses._population import population_l2d_loss

# Expert-agnostic L2D (EA-L2D, issue 9).
from l2d_jax.losses._ea import EA_WEIGHTINGS
from l2d_jax.losses._ea import ea_deferral_weight
from l2d_jax.losses._ea import ea_lce_loss
