"""One sharded, resumable optax trainer used by every L2D method.

``Trainer`` runs a jitted train step (``loss_fn(model, batch) -> (loss,
aux)``) data-parallel over a ``('data',)`` mesh, evaluates in eval mode,
stops early on a validation metric, checkpoints with orbax and resumes
exactly. ``EpochBatches`` gives a data order that is a pure function of
``(seed, epoch)``.
"""

__all__ = [
    "CPU_COMPILER_OPTIONS",
    "CheckpointError",
    "EpochBatches",
    "NonFiniteError",
    "Trainer",
    "adam_cosine",
    "cosine_schedule",
    "data_mesh",
    "default_compiler_options",
    "load_checkpoint",
    "read_jsonl",
    "sgd_cosine",
    "shard_batch",
]

from l2d_jax.training._batching import EpochBatches
from l2d_jax.training._checkpoint import CheckpointError
from l2d_jax.training._checkpoint import load_checkpoint
from l2d_jax.training._log import read_jsonl
from l2d_jax.training._mesh import data_mesh
from l2d_jax.training._mesh import shard_batch
from l2d_jax.training._optimizers import adam_cosine
from l2d_jax.training._optimizers import cosine_schedule
from l2d_jax.training._optimizers import sgd_cosine
from l2d_jax.training._trainer import CPU_COMPILER_OPTIONS
from l2d_jax.training._trainer import NonFiniteError
from l2d_jax.training._trainer import Trainer
from l2d_jax.training._trainer import default_compiler_options
