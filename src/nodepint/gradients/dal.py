"""DAL, direct adjoint looping: the continuous adjoint of a PinT solve, chunk by chunk.

For a loss L of the trajectory of dz/dt = f(t, z; theta), the adjoint a(t) = dL/dz(t)
solves, backward in time,

    da/dt = -(df/dz)^T a,    with a jump a += dL/dz(t_i) at every observation time t_i,

and the gradients are dL/dz0 = a(t0) and dL/dtheta = integral over [t0, t1] of
(df/dtheta)^T a dt. This module solves that system with a diffrax solver on every chunk
[tau_n, tau_{n+1}] at once (vmapped over the chunks), each chunk starting from the shooting
state U_{n+1} that the forward PinT solve stored:

* The forward state is solved backward alongside the adjoint, from U_{n+1}, and not kept
  from a dense forward solve. Memory then stays constant in the number of steps, which is
  the point of an adjoint method. Solving the state backward is unstable for strongly
  dissipative fields, but starting every chunk from its stored boundary state limits that
  drift to one chunk.
* The adjoint is linear in a, so chunk n maps a(tau_{n+1}) to a(tau_n) = Phi_n^T a(tau_{n+1})
  plus the jumps inside the chunk. Phi_n^T comes from one backward solve per chunk with the
  identity matrix as the end value (d adjoint columns, all chunks in parallel). The coupling
  across chunks,

      lambda_N = g_N,    lambda_n = g_n + Phi_n^T lambda_{n+1},

  is the affine recurrence that the Newton correction also uses, so it runs on the same
  sequential or associative scan (`pint.scan`).
* A last backward solve per chunk, started from lambda_{n+1}, accumulates the quadrature
  of (df/dtheta)^T a as extra components of the solved state; the chunks' integrals are
  summed.

The loss reads the trajectory through two functions, and each gets a continuous adjoint.
`pint_solve_dal` differentiates the shooting states U_n (jumps g_n at the chunk boundaries),
and `observe_dal` differentiates the observations that `observe` interpolates inside the
chunks (jumps at the observation times, from a zero adjoint at each chunk's end). By
linearity of the adjoint, their sum is the adjoint of the whole trajectory.

DAL (optimise, then discretise) and DP (discretise, then optimise) gradients differ by the
discretisation error of the backward solve, O(h^p) for a solver of order p; they agree as
the steps shrink.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from nodepint.integrators import Propagator, VectorField
from nodepint.pint.scans import SCANS
from nodepint.pint.solve import PintSettings, PintSolution, observe, pint_solve


def _adjoint_field(field: VectorField, static: PyTree, with_params: bool):
    """Build the right-hand side of (z, a, integral) for a backward diffrax solve.

    With `with_params`, `a` is one adjoint vector and the integral of (df/dtheta)^T a is
    carried along. Without it, `a` is a (state, columns) matrix of adjoint columns and the
    integral slot is None.
    """

    def rhs(t, y, params):
        z, a, _ = y

        def f(z_, p_):
            return field(t, z_, eqx.combine(p_, static))

        dz, pullback = jax.vjp(f, z, params)
        if with_params:
            a_z, a_params = pullback(a)
            return dz, -a_z, jax.tree_util.tree_map(jnp.negative, a_params)
        # Columns of Phi^T: one VJP per column, sharing the linearisation at z.
        a_z = jax.vmap(lambda col: pullback(col)[0], in_axes=1, out_axes=1)(a)
        return dz, -a_z, None

    return rhs


def _solve_backward(fine: Propagator, rhs, y, t_from, t_to, chunk_length, params):
    """Solve the adjoint system from t_from down to t_to <= t_from with the fine solver.

    With fixed steps, the segment takes whole steps of at most the forward step size
    chunk_length / fine.steps, so a full chunk takes exactly the forward step count and a
    segment of length zero takes none. Adaptive propagators use their own tolerances.
    """
    span = t_to - t_from
    if fine.adaptive:
        controller = diffrax.PIDController(rtol=fine.rtol, atol=fine.atol)
        dt0 = span / fine.steps
        max_steps = fine.max_steps
    else:
        controller = diffrax.ConstantStepSize()
        # The 1e-9 keeps rounding in span / h from adding a step of ~1e-16.
        count = jnp.maximum(jnp.ceil(jnp.abs(span) * fine.steps / chunk_length - 1e-9), 1.0)
        dt0 = span / count
        max_steps = fine.steps + 1
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        fine.solver,
        t_from,
        t_to,
        dt0,
        y,
        args=params,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    return jax.tree_util.tree_map(lambda leaf: leaf[0], sol.ys)


def _zeros_like_params(params):
    return jax.tree_util.tree_map(jnp.zeros_like, params)


# ---------------------------------------------------------------------------------------
# The shooting states


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
    _, args = vjp_arg
    g = grad_obj.states
    if g is None:
        g = jnp.zeros_like(states)
    params, static = eqx.partition(args, eqx.is_inexact_array)
    size = states.shape[-1]
    eye = jnp.eye(size, dtype=states.dtype)

    # -- Phi_n^T for every chunk in parallel: the adjoint matrix from the identity at tau_{n+1}
    # TODO: for large states, solve only r adjoint columns in the span of a level-2 basis,
    # as the Newton correction does, in place of all d columns.
    matrix_rhs = _adjoint_field(field, static, with_params=False)

    def transposed_flow(u_end, t_start, t_end):
        y = (u_end, eye, None)
        _, a, _ = _solve_backward(fine, matrix_rhs, y, t_end, t_start, t_end - t_start, params)
        return a

    phi_t = jax.vmap(transposed_flow)(states[1:], tau[:-1], tau[1:])

    # -- lambda_n = g_n + Phi_n^T lambda_{n+1}, run backwards in chunk order as a forward scan
    w = jnp.flip(phi_t, axis=0)
    v = jnp.broadcast_to(eye, w.shape)
    b = jnp.flip(g[:-1], axis=0)
    adjoint = jnp.flip(SCANS[settings.scan](w, v, b, g[-1]), axis=0)

    # -- dL/dtheta: the quadrature of (df/dtheta)^T a along every chunk, in parallel, summed
    # NOTE: every chunk carries a parameter-sized integral through the solver's stages at
    # once, so this pass needs memory of order chunks x stages x parameters.
    vector_rhs = _adjoint_field(field, static, with_params=True)

    def chunk_integral(u_end, a_end, t_start, t_end):
        y = (u_end, a_end, _zeros_like_params(params))
        _, _, integral = _solve_backward(
            fine, vector_rhs, y, t_end, t_start, t_end - t_start, params
        )
        return integral

    per_chunk = jax.vmap(chunk_integral)(states[1:], adjoint[1:], tau[:-1], tau[1:])
    grad_params = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_chunk)
    return adjoint[0], grad_params


def pint_solve_dal(
    settings: PintSettings,
    fine: Propagator,
    coarse: Propagator,
    field: VectorField,
    y0: Float[Array, " state"],
    tau: Float[Array, " chunks+1"],
    args: PyTree,
    key: PRNGKeyArray,
    guess: Float[Array, "chunks+1 state"] | None = None,
    kept: Float[Array, "state rank"] | None = None,
) -> PintSolution:
    """`pint_solve` whose reverse-mode derivative is the chunk-parallel continuous adjoint.

    The derivative reaches `y0` and the inexact arrays of `args`.

    Warning:
        The backward pass solves a (state x state) adjoint matrix on every chunk, so its
        cost grows with the square of the state size, as the `full` Newton basis does.
    """
    return _solve((y0, args), settings, fine, coarse, field, tau, key, guess, kept)


# ---------------------------------------------------------------------------------------
# The observations inside the chunks


@eqx.filter_custom_vjp
def _observe(vjp_arg, fine, field, tau, ts):
    states, args = vjp_arg
    return observe(fine, field, states, tau, ts, args)


@_observe.def_fwd
def _observe_fwd(perturbed, vjp_arg, fine, field, tau, ts):
    return _observe.fn(vjp_arg, fine, field, tau, ts), None


@_observe.def_bwd
def _observe_bwd(residual, grad_obj, perturbed, vjp_arg, fine, field, tau, ts):
    states, args = vjp_arg
    if grad_obj is None:
        grad_obj = jnp.zeros((ts.shape[0], states.shape[-1]), dtype=states.dtype)
    params, static = eqx.partition(args, eqx.is_inexact_array)
    chunks = states.shape[0] - 1
    # The same chunk ownership and clipping as `observe`: time i is read from chunk owner[i]
    # at clip(ts[i], tau_n, tau_{n+1}), so a time on a boundary belongs to the later chunk
    # and t1 to the last one.
    owner = jnp.clip(jnp.searchsorted(tau, ts, side="right") - 1, 0, chunks - 1)
    rhs = _adjoint_field(field, static, with_params=True)

    def chunk_adjoint(n, u_end, t_start, t_end):
        owned = owner == n
        length = t_end - t_start

        # The chunk's own observation times, latest first, then the times of other chunks
        # moved onto t_start with no jump. Step k of the scan then handles the k-th latest
        # observation of every chunk at once. A scan over the global time order would
        # leave all chunks but one idle on each segment, and the vmapped while loops would
        # take N times the steps.
        local = jnp.where(owned, jnp.clip(ts, t_start, t_end), t_start)
        order = jnp.argsort(-local, stable=True)
        times = local[order]
        jumps = jnp.where(owned[:, None], grad_obj, 0.0)[order]

        # Solve down to each time t_k, then add the jump dL/dz(t_k).
        def step(carry, inputs):
            y, t_now = carry
            t_next, jump = inputs
            z, a, integral = _solve_backward(fine, rhs, y, t_now, t_next, length, params)
            return ((z, a + jump, integral), t_next), None

        y_end = (u_end, jnp.zeros_like(u_end), _zeros_like_params(params))
        (y, t_now), _ = jax.lax.scan(step, (y_end, t_end), (times, jumps))
        _, a, integral = _solve_backward(fine, rhs, y, t_now, t_start, length, params)
        return a, integral

    a_start, per_chunk = jax.vmap(chunk_adjoint)(jnp.arange(chunks), states[1:], tau[:-1], tau[1:])
    # The observations never read U_N itself: the last chunk is solved again from U_{N-1}.
    grad_states = jnp.concatenate([a_start, jnp.zeros_like(states[-1:])])
    grad_params = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), per_chunk)
    return grad_states, grad_params


def observe_dal(
    fine: Propagator,
    field: VectorField,
    states: Float[Array, "chunks+1 state"],
    tau: Float[Array, " chunks+1"],
    ts: Float[Array, " times"],
    args: PyTree,
) -> Float[Array, "times state"]:
    """`observe` whose reverse-mode derivative is the continuous adjoint inside every chunk.

    Each chunk's backward solve starts from its stored end state U_{n+1} and a zero adjoint,
    and the adjoint jumps by the cotangent of every observation that the chunk owns.
    """
    return _observe((states, args), fine, field, tau, ts)
