"""Losses: learning-to-defer surrogates and their estimators.

Losses are per example (``[..., K + J]`` logits in, ``[...]`` losses out,
any leading batch shape, ``jax.vmap``-able); the caller reduces. Estimators
read the logits of a trained surrogate. Multi-expert softmax and one-vs-all
surrogates; the comp-sum family with the Top-k and cardinality surrogates of
two-stage deferral to a set of agents; the L2D-Pop loss and FixMatch
consistency; the EA-L2D loss.
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
    # Comp-sum family; Top-k and Top-k(x) two-stage deferral.
    "comp_sum_loss",
    "agent_costs",
    "topk_deferral_surrogate",
    "topk_deferral_loss",
    "cardinality_loss",
    "cardinality_surrogate",
    # Deferral to a population (L2D-Pop), limited demonstrations.
    "population_l2d_loss",
    "fixmatch_consistency",
    # Expert-agnostic L2D (EA-L2D).
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

# Comp-sum family; Top-k and Top-k(x) two-stage deferral.
from l2d_jax.losses._topk_comp_sum import comp_sum_loss
from l2d_jax.losses._topk import agent_costs
from l2d_jax.losses._topk import cardinality_loss
from l2d_jax.losses._topk import cardinality_surrogate
from l2d_jax.losses._topk import topk_deferral_loss
from l2d_jax.losses._topk import topk_deferral_surrogate

# Deferral to a population (L2D-Pop), limited demonstrations.
from l2d_jax.losses._population import fixmatch_consistency
from l2d_jax.losses._population import population_l2d_loss

# Expert-agnostic L2D (EA-L2D).
from l2d_jax.losses._ea import EA_WEIGHTINGS
from l2d_jax.losses._ea import ea_deferral_weight
from l2d_jax.losses._ea import ea_lce_loss
