"""The device mesh: axes `data` (the batch), `proj` (level-2 replicas) and `time` (chunks).

A run on one device builds no mesh and places nothing. With a mesh, the solver constrains
the chunk axis of every fine solve to the `time` axis. The vmaps over the batch and the
replicas name `data` and `proj` as their SPMD axes, so XLA partitions the whole step.
On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N` (set before JAX starts)
gives N devices for tests.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nodepint.config import ConfigError, MeshConfig

AXES = ("data", "proj", "time")


def start_distributed(cfg: MeshConfig) -> None:
    """Join JAX's multi-process runtime, configured from the cluster launcher's environment."""
    if cfg.distributed:
        jax.distributed.initialize()


def make_mesh(data: int = 1, proj: int = 1, time: int = 1) -> Mesh | None:
    """Build a mesh of data x proj x time devices, or return None for a single device."""
    needed = data * proj * time
    if needed == 1:
        return None
    devices = jax.devices()
    if needed > len(devices):
        raise ConfigError(
            f"mesh.data x mesh.proj x mesh.time = {data} x {proj} x {time} = {needed} devices, "
            f"but JAX sees {len(devices)} ({jax.default_backend()}): lower the mesh axes, or on "
            f"a CPU set XLA_FLAGS=--xla_force_host_platform_device_count={needed} before "
            "starting the run."
        )
    grid = np.asarray(devices[:needed]).reshape(data, proj, time)
    return Mesh(grid, AXES)


def mesh_from_config(cfg: MeshConfig) -> Mesh | None:
    """Build the run's mesh from the `mesh` config group (None for a single device)."""
    return make_mesh(cfg.data, cfg.proj, cfg.time)


def shard_leading(x, mesh: Mesh | None, axis: str):
    """Constrain the leading axis of `x` to the mesh axis `axis` (no-op without a mesh).

    Inside vmaps, the batched axes take the SPMD axis names their vmaps were given.
    """
    if mesh is None or mesh.shape[axis] == 1:
        return x
    spec = PartitionSpec(axis, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def replicate(tree, mesh: Mesh | None):
    """Place every array of `tree` on all devices of `mesh` (no-op without a mesh).

    The training loop passes every step its inputs this way. A jitted function compiles
    again for inputs laid out differently, and the layouts XLA picks for one step's
    outputs would otherwise feed the next step.
    """
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def spmd_axis(mesh: Mesh | None, axis: str) -> str | None:
    """Return the `spmd_axis_name` for a vmap over an axis sharded on `axis`, or None."""
    if mesh is None or mesh.shape[axis] == 1:
        return None
    return axis
