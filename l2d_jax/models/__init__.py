"""Flax NNX classifiers with deferral heads.

Every model maps an input batch to ``[batch, num_classes + num_experts]``
logits: the K class logits first, then one deferral logit per expert.
Image models take NHWC inputs.
"""

__all__ = [
    "MLP",
    "SmallCNN",
    "WideResNet",
    "count_params",
    # L2D-Pop: context-set encoders and the population model (issue 8).
    "ContextEncoder",
    "ExpertCorrectnessPredictor",
    "PopulationL2D",
    # Expert-agnostic L2D rejector (EA-L2D, issue 9).
    "EARejector",
]

from l2d_jax.models._cnn import SmallCNN
from l2d_jax.models._count import count_params
from l2d_jax.models._mlp import MLP
from l2d_jax.models._wide_resnet import WideResNet

# L2D-Pop: context-set encoders and the population model (issue 8).
from l2d_jax.models._context_encoder import ContextEncoder
from l2d_jax.models._population import ExpertCorrectnessPredictor
from l2d_jax.models._population import PopulationL2D

# Expert-agnostic L2D rejector (EA-L2D, issue 9).
from l2d_jax.models._ea_rejector import EARejector
