"""Data parallelism: the batch sharded over the devices of a `jax.sharding.Mesh`.

Parameters and optimiser state are replicated; every array of a batch is split along its
leading (batch) axis over a one-dimensional mesh named `"batch"`. The jitted training step is
unchanged: XLA partitions it (GSPMD) and inserts the reductions, so the joint-batch solve —
whose step size is shared by the whole batch — reduces its error norm over all shards, and
results equal the single-device run up to floating-point reduction order.

Several hosts: call `jax.distributed.initialize()` on every host before anything else (set
`TAYNODE_DISTRIBUTED=1` to have `taynode` do it; the coordinator address, process count and
process id come from the environment, e.g. SLURM, or from `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); `jax.devices()` then spans every host.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["device_count", "eval_mesh", "make_mesh", "replicate", "shard_batch", "maybe_initialize_distributed"]

_initialized = False


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` once, when `TAYNODE_DISTRIBUTED=1`."""
    global _initialized
    if os.environ.get("TAYNODE_DISTRIBUTED") == "1" and not _initialized:
        jax.distributed.initialize()
        _initialized = True


def device_count(requested: int, batch_size: int) -> int:
    """How many devices a batch of `batch_size` is sharded over.

    `requested = 0`: the largest number of local devices that divides the batch (all of them
    where the batch divides evenly). `requested = n`: exactly n.

    **Raises** `ValueError` if n exceeds the devices present or does not divide the batch.
    """
    available = jax.device_count()
    if requested == 0:
        return max(n for n in range(1, available + 1) if batch_size % n == 0)
    if requested > available:
        raise ValueError(f"devices must be <= the {available} device(s) present, got {requested}")
    if batch_size % requested:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by devices ({requested}); "
                         "choose another batch size or device count (devices=0 picks one that divides)")
    return requested


def eval_mesh(requested: int, batch_size: int, size: int) -> Mesh | None:
    """The mesh an evaluation chunk of `size` examples is sharded over: the training run's device
    count where it divides the chunk, else one device (the results are the same either way)."""
    n = device_count(requested, batch_size)
    return make_mesh(n if size % n == 0 else 1)


def make_mesh(n: int) -> Mesh | None:
    """A one-dimensional mesh `("batch",)` over the first `n` devices; None for one device."""
    if n == 1:
        return None
    return Mesh(np.array(jax.devices()[:n]), ("batch",))


def replicate(tree, mesh: Mesh | None):
    """Every array of `tree` on every device of the mesh (unchanged without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh: Mesh | None):
    """The arrays of a batch split along their leading axis over the mesh (as jax arrays)."""
    if mesh is None:
        return jtu.tree_map(jnp.asarray, tree)
    return jax.device_put(jtu.tree_map(jnp.asarray, tree), NamedSharding(mesh, PartitionSpec("batch")))
