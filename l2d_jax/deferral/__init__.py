"""Deferral rules: who answers each input.

One encoding for the whole package: a decision is an int array where 0 means
the model (agent 0) answers and ``j >= 1`` means expert ``j`` answers, expert
``j`` being expert id ``j - 1`` of ``Annotations`` and column ``j - 1`` of
``expert_predictions`` arrays.
"""

__all__ = (
    "MODEL",
    "argmax_deferral",
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
)

from l2d_jax.deferral._argmax import MODEL
from l2d_jax.deferral._argmax import argmax_deferral

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
