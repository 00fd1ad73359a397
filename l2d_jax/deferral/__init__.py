"""Deferral rules: who answers each input.

One encoding for the whole package: a decision is an int array where 0 means
the model (agent 0) answers and ``j >= 1`` means expert ``j`` answers, expert
``j`` being expert id ``j - 1`` of ``Annotations`` and column ``j - 1`` of
``expert_predictions`` arrays.
"""

__all__ = (
    "MODEL",
    "argmax_deferral",
)

from l2d_jax.deferral._argmax import MODEL
from l2d_jax.deferral._argmax import argmax_deferral
