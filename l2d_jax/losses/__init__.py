"""Losses: multi-expert learning-to-defer surrogates and their estimators."""

__all__ = [
    "multi_expert_ova_loss",
    "multi_expert_softmax_loss",
    "ova_class_probabilities",
    "ova_correctness",
    "softmax_class_probabilities",
    "softmax_correctness",
]

from l2d_jax.losses._multi_expert import multi_expert_ova_loss
from l2d_jax.losses._multi_expert import multi_expert_softmax_loss
from l2d_jax.losses._multi_expert import ova_class_probabilities
from l2d_jax.losses._multi_expert import ova_correctness
from l2d_jax.losses._multi_expert import softmax_class_probabilities
from l2d_jax.losses._multi_expert import softmax_correctness
