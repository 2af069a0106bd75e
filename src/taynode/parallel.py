"""Data parallelism: the batch sharded over the devices of a `jax.sharding.Mesh`.

Parameters and optimiser state are replicated; every array of a batch is split along its
leading (batch) axis over a one-dimensional mesh named `"batch"`. The jitted training step is
unchanged: XLA partitions it (GSPMD) and inserts the reductions, so the joint-batch solve —
whose step size is shared by the whole batch — reduces its error norm over all shards, and
results equal the single-device run up to floating-point reduction order.

**Several processes** (one per host, or several on one host): every process runs the same
command and first calls `initialize_distributed` (the CLI does, from `--coordinator`,
`--num-processes`, `--process-id` or the environment variables `TAYNODE_COORDINATOR`,
`TAYNODE_NUM_PROCESSES`, `TAYNODE_PROCESS_ID`). `jax.devices()` then spans every process; a mesh
takes the same number of devices from each process, every process loads the same data and
builds the same (global) batch, of which each places only its own shards. Values fetched to the
host are gathered first (`to_host`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["device_count", "eval_mesh", "make_mesh", "replicate", "shard_batch", "initialize_distributed",
           "maybe_initialize_distributed", "is_main_process", "local_copy", "to_host", "DISTRIBUTED_ENV"]

# the environment variables `initialize_distributed` reads (jax 0.10.1 itself reads only JAX_COORDINATOR_ADDRESS)
DISTRIBUTED_ENV = {"coordinator": "TAYNODE_COORDINATOR", "num_processes": "TAYNODE_NUM_PROCESSES",
                   "process_id": "TAYNODE_PROCESS_ID"}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Join a run of several processes: `jax.distributed.initialize` with the given values, once.

    Each value not given comes from its environment variable (`DISTRIBUTED_ENV`). With none of the
    three given or set, nothing happens unless `TAYNODE_DISTRIBUTED=1`, in which case jax detects a
    cluster (SLURM, Open MPI, …). Must run before any JAX computation.

    **Arguments**
    - `coordinator`: `host:port` of process 0's coordination service (the same in every process).
    - `num_processes`: how many processes take part.
    - `process_id`: this process's index in `range(num_processes)`.

    **Returns** whether this process is (now) part of a distributed run.

    **Raises** `ValueError` if only some of the three are given, or they are out of range.
    """
    values = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    for name, var in DISTRIBUTED_ENV.items():
        if values[name] is None and os.environ.get(var):
            values[name] = os.environ[var]
    if jax.distributed.is_initialized():
        return True
    given = {k for k, v in values.items() if v is not None}
    if not given:
        if os.environ.get("TAYNODE_DISTRIBUTED") == "1":
            jax.distributed.initialize()
            return True
        return False
    if given != set(values):
        missing = sorted(set(values) - given)
        env = ", $".join(DISTRIBUTED_ENV.values())
        raise ValueError(f"several processes need a coordinator, num_processes and process_id; missing {missing} "
                         f"(flags --coordinator, --num-processes, --process-id or ${env})")
    try:
        n, i = int(values["num_processes"]), int(values["process_id"])
    except ValueError:
        raise ValueError(f"num_processes and process_id must be integers, got {values['num_processes']!r} and "
                         f"{values['process_id']!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"process_id must be in [0, num_processes) and num_processes >= 1, got {i} and {n}")
    jax.distributed.initialize(coordinator_address=str(values["coordinator"]), num_processes=n, process_id=i)
    return True


def maybe_initialize_distributed() -> None:
    """`initialize_distributed()` from the environment (a no-op when nothing asks for it or it has run)."""
    initialize_distributed()


def is_main_process() -> bool:
    """Whether this is process 0 (the one that writes records and parameters)."""
    return jax.process_index() == 0


def device_count(requested: int, batch_size: int) -> int:
    """How many devices a batch of `batch_size` is sharded over.

    `requested = 0`: the largest number of devices that divides the batch (all of them where the
    batch divides evenly). `requested = n`: exactly n. With several processes, n must be a
    multiple of the process count (each process contributes n / count devices).

    **Raises** `ValueError` if n exceeds the devices present or does not divide the batch.
    """
    available = jax.device_count()
    procs = jax.process_count()
    if requested == 0:
        return max(n for n in range(procs, available + 1, procs) if batch_size % n == 0)
    if requested > available:
        raise ValueError(f"devices must be <= the {available} device(s) present, got {requested}")
    if batch_size % requested:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by devices ({requested}); "
                         "choose another batch size or device count (devices=0 picks one that divides)")
    if requested % procs:
        raise ValueError(f"devices ({requested}) must be a multiple of the {procs} processes (devices=0 picks one)")
    return requested


def eval_mesh(requested: int, batch_size: int, size: int) -> Mesh | None:
    """The mesh an evaluation chunk of `size` examples is sharded over: the training run's device
    count where it divides the chunk, else one device (the results are the same either way)."""
    n = device_count(requested, batch_size)
    return make_mesh(n if size % n == 0 else 1)


def make_mesh(n: int) -> Mesh | None:
    """A one-dimensional mesh `("batch",)` over `n` devices (the first n / count local devices of
    each process, in process order; `device_count` makes n a multiple of the count); None for one
    device (with several processes: each computes on its own first device)."""
    if n == 1:
        return None
    procs = jax.process_count()
    per = n // procs
    devices = [d for p in range(procs)
               for d in sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)[:per]]
    return Mesh(np.array(devices), ("batch",))


def _place(tree, sharding):
    """The arrays of `tree` (the same values in every process) as global arrays placed by `sharding`; each
    process places its own shards (`jax.device_put` where one process holds every device)."""
    if jax.process_count() == 1:
        return jax.device_put(jtu.tree_map(jnp.asarray, tree), sharding)

    def place(leaf):
        host = to_host(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jtu.tree_map(place, tree)


def replicate(tree, mesh: Mesh | None):
    """Every array of `tree` on every device of the mesh (without a mesh: unchanged, or, with
    several processes, a copy local to this process)."""
    if mesh is None:
        return local_copy(tree)
    return _place(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh: Mesh | None):
    """The arrays of a batch split along their leading axis over the mesh (as jax arrays).

    With several processes every process passes the whole batch and places its own shards."""
    if mesh is None:
        return jtu.tree_map(jnp.asarray, tree)
    return _place(tree, NamedSharding(mesh, PartitionSpec("batch")))


def local_copy(tree):
    """The arrays of `tree` as arrays of this process (unchanged in a single process): what a computation
    that mixes them with process-local arrays (an experiment's metrics) needs."""
    if jax.process_count() == 1:
        return tree
    return jtu.tree_map(jnp.asarray, to_host(tree))


def to_host(tree):
    """Every array of `tree` as a numpy array on this host, gathered from every process where it spans
    devices of other processes (`multihost_utils.process_allgather`)."""

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jtu.tree_map(fetch, tree)
