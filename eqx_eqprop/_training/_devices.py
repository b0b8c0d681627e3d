"""Data-parallel placement with `jax.sharding`: a mesh over the devices, the batch split
along it, the training state replicated. XLA's SPMD partitioner then runs each device's
share of the batch (the relaxations are per sample) and all-reduces the gradient.

Multi-host (a GPU cluster, or several processes on one machine): start the same command
in every process with `--coordinator HOST:PORT --num-processes N --process-id I` (or set
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); `initialize_distributed`
joins them with `jax.distributed`, the mesh spans every process's devices, the state is
replicated on all of them (`make_array_from_callback`: `device_put` cannot place on
another process's devices), each process loads only its rows of each global batch, the
processes check that they run one configuration on one data set and resume from one
checkpoint, and process 0 alone writes the run directory.
"""

import hashlib
import json
import math
import os
import socket
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec


def _env_int(name: str, value: int | None) -> int | None:
    if value is not None or os.environ.get(name) is None:
        return value
    try:
        return int(os.environ[name])
    except ValueError:
        raise ValueError(f"{name}={os.environ[name]!r} is not an integer.") from None


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: float = 120,
) -> None:
    """`jax.distributed.initialize` when a coordinator is given (arguments or the
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` environment
    variables); nothing for a single process. Checks the setup first and turns a
    coordinator that does not answer within `timeout` seconds (or processes that do not
    all connect) into an error that says what to check."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = _env_int("JAX_NUM_PROCESSES", num_processes)
    process_id = _env_int("JAX_PROCESS_ID", process_id)
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError(
                "--num-processes and --process-id need --coordinator HOST:PORT (the address "
                "of process 0, the same on every process)."
            )
        return
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--coordinator takes HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}."
        )
    if num_processes is None or process_id is None:
        raise ValueError("with --coordinator, give --num-processes N and --process-id I too.")
    if num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {num_processes}.")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
            f"give each process a different id from 0 to {num_processes - 1}."
        )
    if not timeout > 0:
        raise ValueError(f"the coordinator timeout must be positive seconds, got {timeout}.")
    # XLA aborts the process (SIGABRT, a C++ stack trace) when the rendezvous times out;
    # a watchdog says what went wrong first and exits with the CLI's error status
    watchdog = threading.Timer(
        timeout, _rendezvous_failed, (coordinator, num_processes, process_id, timeout)
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(math.ceil(timeout)) + 30,
        )
    finally:
        watchdog.cancel()


def _answers(coordinator: str) -> bool:
    host, _, port = coordinator.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def _rendezvous_failed(coordinator, num_processes, process_id, timeout) -> None:
    if process_id == 0:
        why = f"not all {num_processes} processes joined it"
    elif _answers(coordinator):
        why = "it answers, but not all processes joined"
    else:
        why = "nothing answers there: is process 0 running, with this address?"
    sys.stderr.write(
        f"eqprop-train: process {process_id} of {num_processes} could not start the run at "
        f"{coordinator} within {timeout:g} s ({why}). Start all {num_processes} processes "
        "with the same --coordinator (process 0's host and a free port) and "
        "--num-processes, each with its own --process-id, and check that every host can "
        "reach that port; --coordinator-timeout sets how long to wait.\n"
    )
    sys.stderr.flush()
    os._exit(2)


def fingerprint(*things) -> np.ndarray:
    """Eight int32 words of a SHA-256 of JSON-able things and arrays: what processes
    compare to know that they run the same configuration on the same data."""
    h = hashlib.sha256()
    for thing in things:
        if isinstance(thing, np.ndarray):
            h.update(str((thing.shape, thing.dtype)).encode())
            h.update(np.ascontiguousarray(thing).tobytes())
        else:
            h.update(json.dumps(thing, sort_keys=True, default=str).encode())
    return np.frombuffer(h.digest(), np.int32).copy()


def check_same_on_every_process(value: np.ndarray, what: str, advice: str) -> None:
    """Raise on every process when `value` (a small int32 array) is not the same on all
    processes, naming those that differ from process 0; nothing for one process."""
    if jax.process_count() == 1:
        return
    values = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int32)))
    differ = [i for i in range(len(values)) if not np.array_equal(values[i], values[0])]
    if differ:
        raise ValueError(
            f"process(es) {', '.join(map(str, differ))} {what} than process 0: {advice}"
        )


def barrier(name: str) -> None:
    """Every process waits here for the others (nothing for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


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

    def put_global_batch(self, *arrays):
        """`put_batch` of this process's rows of arrays that every process holds whole
        (an evaluation batch)."""
        if jax.process_count() > 1:
            rows = self.local_rows(len(arrays[0]))
            arrays = tuple(a[rows] for a in arrays)
        return self.put_batch(*arrays)

    def replicate(self, tree):
        """`tree` (host or single-device arrays, the same on every process) as arrays
        replicated on every device of the mesh, of every process."""
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(self._global_replicated, tree)

    def _global_replicated(self, x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = self._global_replicated(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])

    @property
    def writes(self) -> bool:
        """Whether this process writes files (process 0)."""
        return jax.process_index() == 0
