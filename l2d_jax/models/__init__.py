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
]

from l2d_jax.models._cnn import SmallCNN
from l2d_jax.models._count import count_params
from l2d_jax.models._mlp import MLP
from l2d_jax.models._wide_resnet import WideResNet
