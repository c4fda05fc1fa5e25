"""Reduced bases for problems whose outputs are whole fields (heat, sph).

Such a problem observes hundreds of values per time, but its neural ODE, and so the state
that the PinT solver iterates on, only gets `model.latent_size` coordinates. The encoder
projects a field on an orthonormal basis V (columns), the decoder maps the coordinates back
with V, which is the pseudo-inverse of V^T because the columns are orthonormal.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import ConfigError

BASIS_KINDS = ("pod", "random", "learned")


class ReducedBasis(NamedTuple):
    """An initial orthonormal basis and whether training may change it."""

    # (outputs, rank), orthonormal columns.
    vectors: Float[Array, "outputs rank"]
    # False for `pod` and `random` (a fixed projection); True for `learned`, where the
    # encoder and decoder start from these vectors and are trained as linear maps.
    trainable: bool


def check_basis_params(kind: str, size: int, rank: int | None = None) -> None:
    """Raise `ConfigError` for an unknown basis kind or a rank the field cannot hold."""
    if kind not in BASIS_KINDS:
        raise ConfigError(
            f"problem.params.basis={kind!r} is invalid: choose one of {', '.join(BASIS_KINDS)}."
        )
    if rank is not None and not 1 <= rank <= size:
        raise ConfigError(
            f"model.latent_size={rank} is invalid for a field of {size} values: the reduced "
            f"basis needs 1 <= latent_size <= {size}."
        )


def snapshot_basis(
    kind: str,
    snapshots: Float[Array, "samples outputs"],
    rank: int,
    key: PRNGKeyArray,
) -> ReducedBasis:
    """Build a `kind` basis of `rank` vectors for fields like the rows of `snapshots`.

    `pod` takes the leading right singular vectors of the snapshot matrix (proper orthogonal
    decomposition, uncentred: the data are already normalised). `random` and `learned`
    start from the QR factor of a Gaussian matrix, which is independent of the data.
    """
    snapshots = np.asarray(snapshots, dtype=np.float64)
    size = snapshots.shape[1]
    check_basis_params(kind, size, rank)
    if kind == "pod":
        if rank > snapshots.shape[0]:
            raise ConfigError(
                f"model.latent_size={rank} is invalid with problem.params.basis=pod: the "
                f"training data hold only {snapshots.shape[0]} snapshots. Lower the rank or "
                "generate more trajectories."
            )
        _, _, vt = np.linalg.svd(snapshots, full_matrices=False)
        vectors = vt[:rank].T
    else:
        gaussian = np.asarray(jr.normal(key, (size, rank)), dtype=np.float64)
        vectors, _ = np.linalg.qr(gaussian)
    return ReducedBasis(jnp.asarray(vectors), kind == "learned")


def pod_energy(snapshots: np.ndarray, rank: int) -> float:
    """Fraction of the snapshots' squared norm that the leading `rank` POD modes capture."""
    singular = np.linalg.svd(np.asarray(snapshots), compute_uv=False)
    return float(np.sum(singular[:rank] ** 2) / np.sum(singular**2))
