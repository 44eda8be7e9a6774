"""The 1-D data-parallel mesh: batch sharded over axis "data", everything else replicated.

This is the pmap pattern written with `jax.jit` and named shardings, as current JAX
recommends. Arrays are built with `make_array_from_callback` so the same code runs on
one device, many devices and many hosts (after `jax.distributed.initialize()`): every
process computes the same global numpy value and each device takes its own slice.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from swin_flax.data.feed import put_global  # defined with the data's feed; used from here too
from swin_flax.errors import UserInputError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise UserInputError(
            f"batch_size {batch_size} must be divisible by the number of devices ({devices}) "
            f"for data parallelism; use e.g. {max(devices, batch_size // devices * devices)}"
        )


def put_replicated(tree, mesh: Mesh):
    """Replicate a pytree (parameters, optimizer state) on every device of the mesh."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: put_global(np.asarray(x), sharding), tree)


def is_main_process() -> bool:
    return jax.process_index() == 0
