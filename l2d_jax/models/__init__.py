"""Flax NNX models: classifiers with deferral heads, context encoders, rejectors.

Every classifier maps an input batch to ``[batch, num_classes + num_experts]``
logits: the K class logits first, then one deferral logit per expert.
Image models take NHWC inputs. The population models (L2D-Pop) read an
expert through a context set of its answers; the EA-L2D rejector reads it
through its Beta-posterior profile.
"""

__all__ = [
    # Classifiers with deferral heads.
    "MLP",
    "SmallCNN",
    "WideResNet",
    # Context-set encoders and the population model (L2D-Pop).
    "ContextEncoder",
    "ExpertCorrectnessPredictor",
    "PopulationL2D",
    # Expert-agnostic rejector (EA-L2D).
    "EARejector",
    # Utilities.
    "count_params",
]

# Classifiers with deferral heads.
from l2d_jax.models._cnn import SmallCNN
from l2d_jax.models._mlp import MLP
from l2d_jax.models._wide_resnet import WideResNet

# Context-set encoders and the population model (L2D-Pop).
from l2d_jax.models._context_encoder import ContextEncoder
from l2d_jax.models._population import ExpertCorrectnessPredictor
from l2d_jax.models._population import PopulationL2D

# Expert-agnostic rejector (EA-L2D).
from l2d_jax.models._ea_rejector import EARejector

# Utilities.
from l2d_jax.models._count import count_params
