"""DP by the implicit function theorem: differentiate the converged shooting states.

At convergence U_{n+1} = F_n(U_n; theta) with U_0 = y0. For a cotangent g on the states,
the adjoint states solve the backward affine recurrence

    lambda_N = g_N,    lambda_n = g_n + J_n^T lambda_{n+1},    J_n = dF_n/dU at U_n,

and the gradients are dL/dy0 = lambda_0 and dL/dtheta = sum_n (dF_n/dtheta)^T lambda_{n+1}.
Every J_n and every parameter VJP is computed for all chunks in parallel; the recurrence
runs on the same scans as the Newton correction (sequential or associative). Memory does
not grow with the number of PinT iterations, because the forward loop is not recorded.

This is the gradient of the exact sequential fine solution; it equals the gradient of the
PinT solution to the PinT tolerance.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from nodepint.mesh import shard_leading
from nodepint.pint.scans import SCANS
from nodepint.pint.solve import PintSolution, pint_solve


@eqx.filter_custom_vjp
def _solve(vjp_arg, settings, fine, coarse, field, tau, key, guess, kept):
    y0, args = vjp_arg
    return pint_solve(
        settings, fine, coarse, field, y0, tau, args, key, guess, loop="lax", kept=kept
    )


@_solve.def_fwd
def _solve_fwd(perturbed, vjp_arg, settings, fine, coarse, field, tau, key, guess, kept):
    sol = _solve.fn(vjp_arg, settings, fine, coarse, field, tau, key, guess, kept)
    return sol, sol.states


@_solve.def_bwd
def _solve_bwd(
    states, grad_obj, perturbed, vjp_arg, settings, fine, coarse, field, tau, key, guess, kept
):
    y0, args = vjp_arg
    g = grad_obj.states
    if g is None:
        g = jnp.zeros_like(states)
    size = states.shape[-1]

    # -- J_n for every chunk in parallel (forward mode, d JVPs per chunk)
    eye = jnp.eye(size, dtype=states.dtype)
    jvps = jax.vmap(fine.jvp, in_axes=(None, 0, 0, 0, None, None))
    starts = shard_leading(states[:-1], settings.mesh, "time")
    jac = shard_leading(jvps(field, starts, tau[:-1], tau[1:], args, eye), settings.mesh, "time")

    # -- the adjoint recurrence, run backwards in chunk order as a forward scan
    w = jnp.flip(jnp.swapaxes(jac, -1, -2), axis=0)
    v = jnp.broadcast_to(eye, w.shape)
    b = jnp.flip(g[:-1], axis=0)
    adjoint = jnp.flip(SCANS[settings.scan](w, v, b, g[-1]), axis=0)

    # -- parameter gradient: one VJP per chunk, all chunks in parallel, summed
    params, static = eqx.partition(args, eqx.is_inexact_array)

    def chunk_vjp(u, t_start, t_end, cotangent):
        def end_state(p):
            return fine(field, u, t_start, t_end, eqx.combine(p, static))

        _, pullback = jax.vjp(end_state, params)
        return pullback(cotangent)[0]

    per_chunk = jax.vmap(chunk_vjp)(starts, tau[:-1], tau[1:], adjoint[1:])
    grad_params = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_chunk)
    return adjoint[0], grad_params


def pint_solve_implicit(
    settings, fine, coarse, field, y0, tau, args, key, guess=None, kept=None
) -> PintSolution:
    """`pint_solve` whose reverse-mode derivative comes from the adjoint recurrence above."""
    return _solve((y0, args), settings, fine, coarse, field, tau, key, guess, kept)
