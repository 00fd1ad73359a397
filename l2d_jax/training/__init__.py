"""One sharded, resumable optax trainer used by every L2D method.

``Trainer`` runs a jitted train step (``loss_fn(model, batch) -> (loss,
aux)``) data-parallel over a ``('data',)`` mesh, evaluates in eval mode,
stops early on a validation metric, checkpoints with orbax and resumes
exactly. ``EpochBatches`` gives a host data order that is a pure function of
``(seed, epoch)``; ``DeviceEpochs`` keeps the data on the device and runs a
whole epoch as one ``lax.scan``. ``SeedTrainer`` trains several seeds of a
small model at once (``jax.vmap`` over the stacked states, sharded over a
``('seed',)`` mesh). Trainers of one architecture, optimiser object and loss
function share their compiled programs within a process.
"""

__all__ = [
    # Trainers
    "Trainer",
    "SeedTrainer",
    "NonFiniteError",
    # Data order
    "EpochBatches",
    "DeviceEpochs",
    "epoch_indices",
    "permutation",
    # Devices and compilation
    "data_mesh",
    "seed_mesh",
    "shard_batch",
    "CPU_COMPILER_OPTIONS",
    "cpu_compiler_options",
    "default_compiler_options",
    # Optimisers
    "adam_cosine",
    "cosine_schedule",
    "sgd_cosine",
    # Checkpoints and logs
    "CheckpointError",
    "load_checkpoint",
    "read_jsonl",
]

from l2d_jax.training._batching import DeviceEpochs
from l2d_jax.training._batching import EpochBatches
from l2d_jax.training._batching import epoch_indices
from l2d_jax.training._batching import permutation
from l2d_jax.training._checkpoint import CheckpointError
from l2d_jax.training._checkpoint import load_checkpoint
from l2d_jax.training._log import read_jsonl
from l2d_jax.training._mesh import data_mesh
from l2d_jax.training._mesh import seed_mesh
from l2d_jax.training._mesh import shard_batch
from l2d_jax.training._optimizers import adam_cosine
from l2d_jax.training._optimizers import cosine_schedule
from l2d_jax.training._optimizers import sgd_cosine
from l2d_jax.training._programs import CPU_COMPILER_OPTIONS
from l2d_jax.training._programs import cpu_compiler_options
from l2d_jax.training._programs import default_compiler_options
from l2d_jax.training._seeds import SeedTrainer
from l2d_jax.training._steps import NonFiniteError
from l2d_jax.training._trainer import Trainer
