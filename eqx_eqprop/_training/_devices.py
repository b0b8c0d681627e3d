"""Data-parallel placement with `jax.sharding`: a mesh over the devices, the batch split
along it, the training state replicated. XLA's SPMD partitioner then runs each device's
share of the batch (the relaxations are per sample) and all-reduces the gradient.

Multi-host (a GPU cluster): start the same command on every host with
`--coordinator HOST:PORT --num-processes N --process-id I` (or set
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); the loop calls
`jax.distributed.initialize`, the mesh spans every process's devices, each process
loads only its rows of each global batch, and process 0 alone writes checkpoints.
"""

import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """`jax.distributed.initialize` when a coordinator is given (arguments or the
    `JAX_COORDINATOR_ADDRESS` environment variable); nothing for a single process."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator is None:
        return
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


class Placement:
    """Where the arrays of a run live: `devices` devices (0: every visible device, on
    every process) in a one-axis mesh `("batch",)`."""

    def __init__(self, devices: int = 0):
        visible = jax.devices()
        n = len(visible) if devices == 0 else devices
        if not 1 <= n <= len(visible):
            raise ValueError(
                f"loop.devices is {devices}, but {len(visible)} device(s) are visible "
                f"({visible[0].platform}); use 0 for all of them. On a CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices."
            )
        if jax.process_count() > 1 and n != len(visible):
            raise ValueError("with several processes, use every device (loop.devices = 0).")
        self.devices = visible[:n]
        self.mesh = jax.sharding.Mesh(np.asarray(self.devices), ("batch",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("batch"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def size(self) -> int:
        return len(self.devices)

    def check_batch(self, batch_size: int, what: str) -> None:
        if batch_size % self.size:
            raise ValueError(
                f"{what} {batch_size} must be a multiple of the {self.size} devices it is "
                "split across."
            )

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process loads."""
        per = batch_size // jax.process_count()
        return slice(jax.process_index() * per, (jax.process_index() + 1) * per)

    def put_batch(self, *arrays):
        """Host arrays of one global batch (this process's rows with several processes)
        as device arrays split along the batch axis."""
        if jax.process_count() > 1:
            return tuple(jax.make_array_from_process_local_data(self.batch, a) for a in arrays)
        return tuple(jax.device_put(a, self.batch) for a in arrays)

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)

    @property
    def writes(self) -> bool:
        """Whether this process writes files (process 0)."""
        return jax.process_index() == 0
