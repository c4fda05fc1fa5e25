"""Level 2: approximations A_n = W_n V_n^T of each chunk's flow-map Jacobian.

A basis gives, for all chunks at once, an orthonormal d x r basis V_n and W_n = J_n V_n,
the r Jacobian-vector products of the fine flow map. The corrections then use
A_n e = W_n (V_n^T e), so only r JVPs per chunk are formed, never the d x d Jacobian
(except for `full` and `diagonal`).

| basis       | V_n                                                                 |
| ----------- | ------------------------------------------------------------------- |
| full        | the identity (r = d)                                                |
| diagonal    | the identity, and W_n keeps only the diagonal of J_n                |
| random1d    | one random unit vector per chunk, redrawn every iteration           |
| growing     | a kept basis shared by all chunks, grown between epochs by training |
| sensitivity | Krylov: v_1 random, v_{j+1} = orth(J_n v_j), built one JVP at a time |
| none        | empty (r = 0)                                                       |
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

BASES = ("full", "diagonal", "random1d", "growing", "sensitivity", "none")


def grow_basis(
    kept: Float[Array, "state rank"], extra: int, key: PRNGKeyArray
) -> Float[Array, "state rank+extra"]:
    """Append `extra` random directions to `kept` and re-orthonormalise (QR), keeping the
    span of `kept`. The rank never exceeds the state size."""
    size = kept.shape[0]
    extra = min(extra, size - kept.shape[1])
    if extra <= 0:
        return kept
    fresh = jr.normal(key, (size, extra), dtype=kept.dtype)
    q, _ = jnp.linalg.qr(jnp.concatenate([kept, fresh], axis=1))
    return q


def _krylov(propagator, field, y0, t0, t1, args, key, rank):
    """V = [v_1 .. v_r] with v_{j+1} = orth(J v_j) and W = J V, for one chunk.

    The JVPs are sequential in j (each direction depends on the last), so this basis adds
    no parallelism of its own. A direction that vanishes after orthogonalisation (J v_j in
    the span so far) is replaced by a random one.
    """
    size = y0.shape[0]
    v = jr.normal(key, (size,), dtype=y0.dtype)
    v = v / jnp.linalg.norm(v)
    vs, ws = [], []
    for j in range(rank):
        w = propagator.jvp(field, y0, t0, t1, args, v[:, None])[:, 0]
        vs.append(v)
        ws.append(w)
        if j + 1 == rank:
            break
        basis = jnp.stack(vs, axis=1)
        candidate = w - basis @ (basis.T @ w)
        backup = jr.normal(jr.fold_in(key, j + 1), (size,), dtype=y0.dtype)
        backup = backup - basis @ (basis.T @ backup)
        norm = jnp.linalg.norm(candidate)
        small = norm <= 1e-10 * jnp.maximum(jnp.linalg.norm(w), 1e-300)
        candidate = jnp.where(small, backup, candidate)
        v = candidate / jnp.linalg.norm(candidate)
    return jnp.stack(ws, axis=1), jnp.stack(vs, axis=1)


def jacobian_factors(basis, propagator, field, states, tau, args, key, kept=None, rank=1):
    """Return (W, V), each (chunks, d, r), with W_n = J_n V_n at the states `states[:-1]`.

    Args:
        basis: one of BASES.
        propagator: the propagator whose flow map is linearised.
        kept: the (d, r) basis of `growing`; ignored otherwise.
        rank: the number of Krylov directions of `sensitivity`; ignored otherwise.
    """
    chunks, size, dtype = states.shape[0] - 1, states.shape[1], states.dtype
    if basis == "none":
        empty = jnp.zeros((chunks, size, 0), dtype=dtype)
        return empty, empty
    if basis == "sensitivity":
        keys = jr.split(key, chunks)
        krylov = jax.vmap(_krylov, in_axes=(None, None, 0, 0, 0, None, 0, None))
        return krylov(
            propagator, field, states[:-1], tau[:-1], tau[1:], args, keys, min(rank, size)
        )

    if basis in ("full", "diagonal"):
        v = jnp.broadcast_to(jnp.eye(size, dtype=dtype), (chunks, size, size))
    elif basis == "random1d":
        # One direction per chunk, drawn afresh each iteration from that iteration's key.
        v = jr.normal(key, (chunks, size, 1), dtype=dtype)
        v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    elif basis == "growing":
        v = jnp.broadcast_to(kept.astype(dtype), (chunks, *kept.shape))
    else:
        raise ValueError(f"unknown basis {basis!r}; expected one of {BASES}")
    return project_jacobian(basis, propagator, field, states, tau, args, v), v


def project_jacobian(basis, propagator, field, states, tau, args, v):
    """Compute W_n = J_n V_n for given bases V_n, for all chunks in parallel.

    For `diagonal` only the diagonal of W_n = J_n is kept.
    """
    if v.shape[-1] == 0:
        # Rank 0 (parareal without a basis). Skipping the JVPs also avoids vmapping an
        # implicit solver's root find over an empty axis, which fails inside equinox's
        # unvmap_max (equinox 0.13) with "zero-size array to reduction operation max".
        return jnp.zeros_like(v)
    jvps = jax.vmap(propagator.jvp, in_axes=(None, 0, 0, 0, None, 0))
    w = jvps(field, states[:-1], tau[:-1], tau[1:], args, v)
    if basis == "diagonal":
        # NOTE: the diagonal costs d JVPs here, as much as the full Jacobian; a cheaper
        # estimate would need the structure of the vector field.
        w = jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(w))
    return w
