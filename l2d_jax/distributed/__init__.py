"""Several processes, one job: JAX's multi-controller runtime for l2d_jax.

``initialize`` joins a job (explicit arguments, the environment set by
``spawn``, or a cluster's auto-detection: ``jax.distributed.initialize()``),
with gloo collectives on CPU and errors that name the coordinator. ``spawn``
starts N local workers on loopback (a free port, watched together, bounded
in time). ``check_same_config`` stops processes started with different
settings. ``map_sharded`` shares independent work items (seeds, settings)
out over the processes and gathers the results in order (``shard_items``,
``interleave``, ``allgather_objects``: JSON and raw array bytes between the
processes, never pickle). ``deferral_sweep`` spreads the
conformal sweep's splits (or scores) over the processes. The ``Trainer``
(``l2d_jax.training``) runs unchanged on one or many processes: it uses
these pieces itself.
"""

__all__ = [
    # Joining a job
    "initialize",
    "is_main_process",
    "check_address",
    "check_process_id",
    # Across processes
    "barrier",
    "allgather",
    "config_hash",
    "check_same_config",
    # Local workers
    "spawn",
    "free_port",
    "worker_env",
    "WorkerError",
    # Sharded computations
    "shard_items",
    "interleave",
    "allgather_objects",
    "map_sharded",
    "deferral_sweep",
    "SWEEP_SHARDS",
    "assign_scores",
]

from l2d_jax.distributed._runtime import allgather
from l2d_jax.distributed._runtime import barrier
from l2d_jax.distributed._runtime import check_address
from l2d_jax.distributed._runtime import check_process_id
from l2d_jax.distributed._runtime import check_same_config
from l2d_jax.distributed._runtime import config_hash
from l2d_jax.distributed._runtime import initialize
from l2d_jax.distributed._runtime import is_main_process
from l2d_jax.distributed._share import allgather_objects
from l2d_jax.distributed._share import interleave
from l2d_jax.distributed._share import map_sharded
from l2d_jax.distributed._share import shard_items
from l2d_jax.distributed._spawn import WorkerError
from l2d_jax.distributed._spawn import free_port
from l2d_jax.distributed._spawn import spawn
from l2d_jax.distributed._spawn import worker_env
from l2d_jax.distributed._sweep import SHARDS as SWEEP_SHARDS
from l2d_jax.distributed._sweep import assign_scores
from l2d_jax.distributed._sweep import deferral_sweep
