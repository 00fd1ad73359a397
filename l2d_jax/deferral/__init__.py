"""Deferral rules: who answers each input.

One encoding for the whole package: a decision is an int array where 0 means
the model (agent 0) answers and ``j >= 1`` means expert ``j`` answers, expert
``j`` being expert id ``j - 1`` of ``Annotations`` and column ``j - 1`` of
``expert_predictions`` arrays. -1 marks a decision that cannot be made (NaN
input, or no valid annotator; possible only under jit).
"""

__all__ = (
    # The encoding.
    "MODEL",
    # Learned deferral: argmax over class and deferral logits.
    "argmax_deferral",
    # Choosing one annotator among a point's candidates.
    "select_expert",
    "TIE_BREAKS",
    # Training-free conformal deferral (per point and prefix set).
    "STRATEGIES",
    "Outcomes",
    "strategy_scores",
    "strategy_outcomes",
    "outcomes_from_slots",
    "posterior_lcb",
    # Top-k and Top-k(x) deferral to a set of agents.
    "SET_RULES",
    "SET_METRICS",
    "REGRESSION_LOSSES",
    "top_k_agents",
    "bayes_optimal_agents",
    "select_cardinality",
    "top_kx_agents",
    "at_cardinality",
    "set_predictions",
    "set_losses",
    "set_budgets",
    "expected_budget",
    "expected_cardinality",
    # Deferral margins over the best class logit, and deciding by them.
    "deferral_priority",
    "expert_priorities",
    "defer_by_priority",
)

# The encoding.
from l2d_jax.deferral._argmax import MODEL

# Learned deferral: argmax over class and deferral logits.
from l2d_jax.deferral._argmax import argmax_deferral

# Choosing one annotator among a point's candidates.
from l2d_jax.deferral._selection import TIE_BREAKS
from l2d_jax.deferral._selection import select_expert

# Training-free conformal deferral (per point and prefix set).
from l2d_jax.deferral._strategies import STRATEGIES
from l2d_jax.deferral._strategies import Outcomes
from l2d_jax.deferral._strategies import outcomes_from_slots
from l2d_jax.deferral._strategies import posterior_lcb
from l2d_jax.deferral._strategies import strategy_outcomes
from l2d_jax.deferral._strategies import strategy_scores

# Top-k and Top-k(x) deferral to a set of agents.
from l2d_jax.deferral._topk import REGRESSION_LOSSES
from l2d_jax.deferral._topk import SET_METRICS
from l2d_jax.deferral._topk import SET_RULES
from l2d_jax.deferral._topk import at_cardinality
from l2d_jax.deferral._topk import bayes_optimal_agents
from l2d_jax.deferral._topk import expected_budget
from l2d_jax.deferral._topk import expected_cardinality
from l2d_jax.deferral._topk import select_cardinality
from l2d_jax.deferral._topk import set_budgets
from l2d_jax.deferral._topk import set_losses
from l2d_jax.deferral._topk import set_predictions
from l2d_jax.deferral._topk import top_k_agents
from l2d_jax.deferral._topk import top_kx_agents

# Deferral margins over the best class logit, and deciding by them.
from l2d_jax.deferral._population import deferral_priority
from l2d_jax.deferral._priority import defer_by_priority
from l2d_jax.deferral._priority import expert_priorities
