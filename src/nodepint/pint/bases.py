"""Level 2: approximations A_n = W_n V_n^T of each chunk's flow-map Jacobian.

A basis returns the pair (W, V) with V an orthonormal d x r basis and W = J_n V the r
Jacobian-vector products of the fine flow map, for all chunks at once. The Newton
correction then uses A_n e = W_n (V_n^T e), so only r JVPs per chunk are ever formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


def basis_vectors(
    basis: str, key: PRNGKeyArray, chunks: int, size: int, dtype
) -> Float[Array, "chunks state rank"]:
    """The orthonormal basis V_n of every chunk for one iteration."""
    if basis in ("full", "diagonal"):
        return jnp.broadcast_to(jnp.eye(size, dtype=dtype), (chunks, size, size))
    if basis == "random1d":
        # One direction per chunk, drawn afresh each iteration from the key of that iteration.
        v = jr.normal(key, (chunks, size, 1), dtype=dtype)
        return v / jnp.linalg.norm(v, axis=1, keepdims=True)
    if basis == "none":
        return jnp.zeros((chunks, size, 0), dtype=dtype)
    raise ValueError(f"unknown basis {basis!r}")


def jacobian_factors(basis, propagator, field, states, tau, args, key):
    """Return (W, V) with W_n = J_n V_n at the shooting states `states[:-1]`.

    For `diagonal` the full Jacobian is formed and all but its diagonal dropped, so W_n is
    diagonal and V_n = I.
    """
    chunks, size = states.shape[0] - 1, states.shape[1]
    v = basis_vectors(basis, key, chunks, size, states.dtype)
    if v.shape[-1] == 0:
        return v, v
    jvps = jax.vmap(propagator.jvp, in_axes=(None, 0, 0, 0, None, 0))
    w = jvps(field, states[:-1], tau[:-1], tau[1:], args, v)
    if basis == "diagonal":
        # NOTE: the diagonal costs d JVPs here, as much as the full Jacobian; a cheaper
        # estimate would need the structure of the vector field.
        w = jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(w))
    return w, v
