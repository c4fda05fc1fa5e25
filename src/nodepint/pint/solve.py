"""Level 1: the PinT iteration over the shooting states U_0 ... U_N of one trajectory.

Each iteration evaluates the fine propagator on every chunk at once (vmapped over chunks),
then applies the method's correction along the chunks:

    jacobi     U_{n+1} <- F_n(U_n)
    parareal   U_{n+1} <- G_n(U'_n) + F_n(U_n) - G_n(U_n)
    newton     U_{n+1} <- F_n(U_n) + A_n (U'_n - U_n),   A_n = W_n V_n^T  (see bases.py)

where U' is the new iterate. The loop stops when the defect F_n(U_n) - U_{n+1} is within
tolerance on every chunk. Iteration k makes the first k chunks exact whatever the
correction, because a chunk whose start state no longer changes receives F_n of an exact
state. So every method reaches the sequential fine solution after at most N iterations,
and the loop stops there even when the defect test has not yet passed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from nodepint.integrators import Propagator, VectorField
from nodepint.mesh import shard_leading
from nodepint.pint.bases import jacobian_factors, project_jacobian
from nodepint.pint.scans import SCANS


class PintSettings(eqx.Module):
    """Static choices of a PinT solve (hashable, so they can close over a jitted function)."""

    method: str = eqx.field(static=True)
    basis: str = eqx.field(static=True)
    chunks: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_iters: int = eqx.field(static=True)
    scan: str = eqx.field(static=True)
    # Krylov directions of the `sensitivity` basis.
    rank: int = eqx.field(static=True, default=1)
    # A_n is scaled by 1 / (1 + damping): 0 is Newton, large values approach Jacobi.
    damping: float = eqx.field(static=True, default=0.0)
    # Divergence: the defect grows this many iterations in a row while max_iters < chunks
    # (0: never).
    divergence_window: int = eqx.field(static=True, default=3)
    # A jax.sharding.Mesh whose `time` axis shards the chunk axis of the fine solves; None
    # on a single device.
    mesh: Any = eqx.field(static=True, default=None)


class PintSolution(NamedTuple):
    states: Float[Array, "chunks+1 state"]
    # Corrections applied; 0 when the initial guess already met the tolerance.
    iterations: Int[Array, ""]
    # Defect norm after 0, 1, ... corrections (the stopping test passes at <= 1).
    residuals: Float[Array, " max_iters+1"]
    converged: Bool[Array, ""]
    # The defect grew for `divergence_window` iterations in a row and the loop stopped.
    diverged: Bool[Array, ""]


def _defect_norm(fine_ends, states, rtol, atol):
    """Largest over chunks of the weighted RMS norm of the defect F_n(U_n) - U_{n+1}.

    Weights are 1 / (atol + rtol |U|), as an ODE solver measures its local error.
    """
    ends = states[1:]
    scale = atol + rtol * jnp.maximum(jnp.abs(fine_ends), jnp.abs(ends))
    return jnp.max(jnp.sqrt(jnp.mean(((fine_ends - ends) / scale) ** 2, axis=-1)))


def sweep(propagator, field, y0, tau, args, jumps=None) -> Float[Array, "chunks+1 state"]:
    """Propagate chunk after chunk: U_{n+1} = P_n(U_n) + jumps_n (no jumps: zero)."""

    def step(y, inputs):
        t_start, t_end, jump = inputs
        y_next = propagator(field, y, t_start, t_end, args) + jump
        return y_next, y_next

    if jumps is None:
        jumps = jnp.zeros((tau.shape[0] - 1, *y0.shape), dtype=y0.dtype)
    _, ys = jax.lax.scan(step, y0, (tau[:-1], tau[1:], jumps))
    return jnp.concatenate([y0[None], ys])


def sequential_states(fine: Propagator, field, y0, tau, args) -> Float[Array, "chunks+1 state"]:
    """Compute the reference U_{n+1} = F_n(U_n), one chunk after the other."""
    return sweep(fine, field, y0, tau, args)


def _fine_ends(fine, field, states, tau, args, mesh=None):
    """F_n(U_n) for every chunk, in parallel (sharded over the mesh's `time` axis)."""
    fine_all = jax.vmap(fine, in_axes=(None, 0, 0, 0, None))
    starts = shard_leading(states[:-1], mesh, "time")
    return shard_leading(fine_all(field, starts, tau[:-1], tau[1:], args), mesh, "time")


def _factors(settings, propagator, field, states, tau, args, key, kept):
    w, v = jacobian_factors(
        settings.basis, propagator, field, states, tau, args, key, kept, settings.rank
    )
    w, v = shard_leading(w, settings.mesh, "time"), shard_leading(v, settings.mesh, "time")
    return w / (1.0 + settings.damping), v


def _correct(settings, fine, coarse, field, states, fine_ends, y0, tau, args, key, kept):
    """The correction of one PinT iteration, given F_n(U_n) of every chunk."""
    if settings.method == "jacobi":
        return jnp.concatenate([y0[None], fine_ends])

    if settings.method == "parareal":
        coarse_all = jax.vmap(coarse, in_axes=(None, 0, 0, 0, None))
        jump = fine_ends - coarse_all(field, states[:-1], tau[:-1], tau[1:], args)
        # Krylov-enhanced parareal: in the span of V_n, replace the coarse linearisation by
        # the fine one, adding (J_F - J_G) V V^T (U'_n - U_n) to the coarse prediction.
        # Both linearisations use the fine propagator's basis, and damping scales their
        # difference as it scales A_n for newton.
        w_fine, v = jacobian_factors(
            settings.basis, fine, field, states, tau, args, key, kept, settings.rank
        )
        w_fine = shard_leading(w_fine, settings.mesh, "time")
        w_coarse = project_jacobian(settings.basis, coarse, field, states, tau, args, v)
        w = (w_fine - w_coarse) / (1.0 + settings.damping)

        def step(y, inputs):
            t_start, t_end, jump_n, w_n, v_n, u_n = inputs
            y_next = coarse(field, y, t_start, t_end, args) + jump_n + w_n @ (v_n.T @ (y - u_n))
            return y_next, y_next

        inputs = (tau[:-1], tau[1:], jump, w, v, states[:-1])
        _, ys = jax.lax.scan(step, y0, inputs)
        return jnp.concatenate([y0[None], ys])

    # -- newton: the affine recurrence for the update e_n = U'_n - U_n
    # The Jacobian approximation carries no derivative (jvp stops it): at convergence it
    # multiplies an update of zero, so the fixed point and its derivative do not depend on it.
    w, v = _factors(settings, fine, field, states, tau, args, key, kept)
    b = fine_ends - states[1:]
    e0 = y0 - states[0]
    updates = SCANS[settings.scan](w, v, b, e0)
    return states + updates


def pint_solve(
    settings: PintSettings,
    fine: Propagator,
    coarse: Propagator,
    field: VectorField,
    y0: Float[Array, " state"],
    tau: Float[Array, " chunks+1"],
    args: PyTree,
    key: PRNGKeyArray,
    guess: Float[Array, "chunks+1 state"] | None = None,
    loop: str = "checkpointed",
    kept: Float[Array, "state rank"] | None = None,
) -> PintSolution:
    """Solve for the shooting states of one trajectory.

    Args:
        settings: method, basis, tolerances and iteration limit.
        fine, coarse: the chunk propagators.
        field: vector field f(t, y, args).
        y0: initial state.
        tau: chunk boundaries.
        args: passed to `field` (the model's parameters); derivatives flow through it.
        key: random key for the random bases; iteration k uses fold_in(key, k).
        guess: initial shooting states (a warm start); None means a coarse sweep.
        kept: the kept basis of the `growing` basis; None for the others.
        loop: "checkpointed" records the iterations for reverse-mode differentiation
            (unrolled DP); "lax" records nothing and cannot be differentiated in reverse.

    Returns:
        The shooting states, iteration count, residual history and convergence flag.
    """
    # residuals[k] is the defect after k corrections; NaN where no iterate was formed.
    residuals0 = jnp.full((settings.max_iters + 1,), jnp.nan, dtype=y0.dtype)
    if settings.method == "sequential":
        states = sequential_states(fine, field, y0, tau, args)
        return PintSolution(
            states, jnp.array(0), residuals0.at[0].set(0.0), jnp.array(True), jnp.array(False)
        )

    if guess is None:
        guess = sweep(coarse, field, y0, tau, args)
    # An unstable coarse propagator can overflow; the iteration still converges from the
    # constant guess U_n = y0, so use that where the guess is not finite.
    guess = jnp.where(jnp.isfinite(guess), guess, y0).at[0].set(y0)

    # N iterations make every method exact, so a growing defect counts as divergence (and
    # ends the loop) only when max_iters < N. Transient growth is normal for jacobi and
    # random bases on chaotic problems before the exact front arrives.
    stop_on_divergence = settings.max_iters < settings.chunks

    def cond(carry):
        k, _, _, _, done, diverged, _, _ = carry
        return (k < settings.max_iters) & ~done & ~(diverged & stop_on_divergence)

    def body(carry):
        k, states, fine_ends, residuals, _, diverged, growth, size = carry
        new = _correct(
            settings,
            fine,
            coarse,
            field,
            states,
            fine_ends,
            y0,
            tau,
            args,
            jr.fold_in(key, k),
            kept,
        )
        # The fine solves of the new iterate serve both its defect and the next correction.
        new_ends = _fine_ends(fine, field, new, tau, args, settings.mesh)
        defect = _defect_norm(new_ends, new, settings.rtol, settings.atol)
        k = k + 1
        done = (defect <= 1.0) | (k >= settings.chunks)
        # Divergence is judged on the unweighted defect, because the weighted one saturates
        # at 1/rtol once the iterates themselves blow up.
        new_size = jnp.max(jnp.abs(new_ends - new[1:]))
        growth = jnp.where(new_size > size, growth + 1, 0)
        diverged = diverged | (
            stop_on_divergence
            & ~done
            & (settings.divergence_window > 0)
            & (growth >= settings.divergence_window)
        )
        residuals = residuals.at[k].set(defect)
        return k, new, new_ends, residuals, done, diverged, growth, new_size

    ends = _fine_ends(fine, field, guess, tau, args, settings.mesh)
    defect = _defect_norm(ends, guess, settings.rtol, settings.atol)
    size = jnp.max(jnp.abs(ends - guess[1:]))
    false = jnp.array(False)
    init = (
        jnp.array(0),
        guess,
        ends,
        residuals0.at[0].set(defect),
        defect <= 1.0,
        false,
        jnp.array(0),
        size,
    )
    k, states, _, residuals, done, diverged, _, _ = eqx.internal.while_loop(
        cond, body, init, max_steps=settings.max_iters, kind=loop
    )
    return PintSolution(states, k, residuals, done, diverged)


def observe(
    fine: Propagator,
    field: VectorField,
    states: Float[Array, "chunks+1 state"],
    tau: Float[Array, " chunks+1"],
    ts: Float[Array, " times"],
    args: PyTree,
    mesh=None,
) -> Float[Array, "times state"]:
    """The trajectory at the observation times `ts`, from converged shooting states.

    Every chunk is solved again from its start state (in parallel, sharded over the mesh's
    `time` axis), saving at all `ts` clipped into the chunk; each time then takes its value
    from the chunk that contains it.
    """
    chunks = states.shape[0] - 1
    clipped = jnp.clip(ts[None, :], tau[:-1, None], tau[1:, None])
    dense_all = jax.vmap(fine.dense, in_axes=(None, 0, 0, 0, None, 0))
    starts = shard_leading(states[:-1], mesh, "time")
    values = dense_all(field, starts, tau[:-1], tau[1:], args, clipped)
    owner = jnp.clip(jnp.searchsorted(tau, ts, side="right") - 1, 0, chunks - 1)
    return values[owner, jnp.arange(ts.shape[0])]
