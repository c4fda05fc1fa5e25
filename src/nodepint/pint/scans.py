"""The affine recurrence e_{n+1} = W_n V_n^T e_n + b_n over the chunks, by two kinds of scan.

The associative scan composes the affine maps in a tree of depth O(log N). A composition of
low-rank maps keeps the form x -> W C V^T x + b with an r x r core C:

    (W2, C2, V2, b2) o (W1, C1, V1, b1) = (W2, C2 (V2^T W1) C1, V1, W2 C2 V2^T b1 + b2)

so composing costs O(d r^2), never O(d^3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def sequential_scan(
    w: Float[Array, "chunks state rank"],
    v: Float[Array, "chunks state rank"],
    b: Float[Array, "chunks state"],
    e0: Float[Array, " state"],
) -> Float[Array, "chunks+1 state"]:
    """All e_0 ... e_N, by a loop over the chunks."""

    def step(e, wvb):
        w_n, v_n, b_n = wvb
        e_next = w_n @ (v_n.T @ e) + b_n
        return e_next, e_next

    _, es = jax.lax.scan(step, e0, (w, v, b))
    return jnp.concatenate([e0[None], es])


def associative_scan(
    w: Float[Array, "chunks state rank"],
    v: Float[Array, "chunks state rank"],
    b: Float[Array, "chunks state"],
    e0: Float[Array, " state"],
) -> Float[Array, "chunks+1 state"]:
    """All e_0 ... e_N, by a parallel prefix composition of the affine maps."""
    rank = w.shape[-1]
    # Fold e_0 into the first map, which then ignores its input.
    b = b.at[0].add(w[0] @ (v[0].T @ e0))
    w = w.at[0].set(0.0)
    core = jnp.broadcast_to(jnp.eye(rank, dtype=w.dtype), (w.shape[0], rank, rank))

    def compose(earlier, later):
        w1, c1, v1, b1 = earlier
        w2, c2, v2, b2 = later
        mix = jnp.einsum("...dr,...ds->...rs", v2, w1)
        c = c2 @ mix @ c1
        b = (
            jnp.einsum(
                "...dr,...r->...d",
                w2,
                jnp.einsum("...rs,...s->...r", c2, jnp.einsum("...dr,...d->...r", v2, b1)),
            )
            + b2
        )
        return w2, c, v1, b

    _, _, _, es = jax.lax.associative_scan(compose, (w, core, v, b))
    return jnp.concatenate([e0[None], es])


SCANS = {"sequential": sequential_scan, "associative": associative_scan}
