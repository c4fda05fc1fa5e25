"""The cost J(u) of a control and its gradient, by DP or by direct adjoint looping (DAL).

Both solve the forward problem through the run's PinT solver (`TimeSolver`), on the
cost-augmented system of `nodepint.control.system`.

* `dp`: reverse-mode autodiff through the PinT solve. It uses the adjoint recurrence at
  the converged shooting states, or the recorded iterations when the solver's mode is
  `unroll`. This is the exact gradient of the discrete J.
* `dal`: the continuous adjoint. With the Hamiltonian H = lambda^T F(t, s, phi) of the
  augmented system (= L + a^T f), the costate solves lambda' = -dH/ds backward from
  lambda(t1) = (dPhi/dy, 1), and dJ/dphi = integral of dH/dphi dt, where dH/dphi is dH/du
  chained through the parametrisation u_phi(t).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nodepint.control.system import ControlTask, augmented_field
from nodepint.gradients import pint_solve_implicit
from nodepint.pint import pint_solve


def solve_states(solver, task: ControlTask, control, key, loop: str = "lax"):
    """Shooting states (chunks+1, state+1) of the augmented system under `control`."""
    args = (task, control)
    if solver.grad != "unroll" and loop != "lax":
        return pint_solve_implicit(
            solver.settings,
            solver.fine,
            solver.coarse,
            augmented_field,
            task.initial(),
            solver.tau,
            args,
            key,
        )
    return pint_solve(
        solver.settings,
        solver.fine,
        solver.coarse,
        augmented_field,
        task.initial(),
        solver.tau,
        args,
        key,
        loop=loop,
    )


def cost(solver, task: ControlTask, control, key):
    """J(u) through the PinT solve, differentiable in reverse mode by the solver's mode."""
    sol = solve_states(solver, task, control, key, loop="checkpointed")
    return task.objective(sol.states[-1]), sol


def dp_value_and_grad(solver, task: ControlTask, control, key):
    """(J, dJ/dphi, PinT solution) by autodiff through the PinT solve."""

    def objective(c):
        return cost(solver, task, c, key)

    (value, sol), grad = eqx.filter_value_and_grad(objective, has_aux=True)(control)
    return value, grad, sol


def dal_value_and_grad(solver, task: ControlTask, control, key):
    """(J, dJ/dphi, PinT solution) by the continuous adjoint, every chunk in parallel.

    The forward PinT solve leaves the states S_n at the chunk boundaries. The costate is
    linear, lambda(t) = A_n(t) lambda(tau_{n+1}) on chunk n, so each chunk integrates,
    backward from tau_{n+1} to tau_n and independently of the others,

        s' = F(t, s),                   s(tau_{n+1}) = S_{n+1}
        A' = -(dF/ds)^T A,              A(tau_{n+1}) = I
        G' = -(dF/dphi)^T A,            G(tau_{n+1}) = 0

    with the fine propagator's diffrax solver and steps. Then lambda_N = (dPhi/dy, 1),
    lambda_n = A_n lambda_{n+1} (a short linear recurrence over the chunks), and
    dJ/dphi = sum_n G_n lambda_{n+1}, because G_n lambda_{n+1} = integral over chunk n of
    dH/dphi dt. The state s is integrated backward from the stored boundary state rather
    than stored densely. Over one chunk that adds an error of the fine solver's order.
    """
    sol = solve_states(solver, task, control, key, loop="lax")
    states = jax.lax.stop_gradient(sol.states)
    value = task.objective(states[-1])
    size = states.shape[-1]

    params, static = eqx.partition(control, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    n_params = flat.shape[0]

    def field(t, s, p):
        return augmented_field(t, s, (task, eqx.combine(unravel(p), static)))

    # -- one chunk's backward solve of (s, A, G), packed in one vector for diffrax
    def backward_field(t, packed, p):
        s = packed[:size]
        columns = jnp.reshape(packed[size:], (size + n_params, size))
        a = columns[:size]
        f, pullback = jax.vjp(lambda s_, p_: field(t, s_, p_), s, p)
        d_s, d_p = jax.vmap(pullback, in_axes=1, out_axes=1)(a)
        return jnp.concatenate([f, -d_s.ravel(), -d_p.ravel()])

    start = jnp.concatenate([jnp.eye(size), jnp.zeros((n_params, size))]).astype(states.dtype)

    def chunk(s_end, t_start, t_end):
        packed = jnp.concatenate([s_end, start.ravel()])
        out = solver.fine(backward_field, packed, t_end, t_start, flat)
        columns = jnp.reshape(out[size:], (size + n_params, size))
        return columns[:size], columns[size:]

    transitions, sensitivities = jax.vmap(chunk)(states[1:], solver.tau[:-1], solver.tau[1:])

    # -- costate at the chunk boundaries: lambda_n = A_n lambda_{n+1}, from lambda_N
    y_end = states[-1, :-1]
    terminal_grad = jax.grad(lambda y: task.terminal(task.plant.physical(y)))(y_end)
    costate_end = jnp.concatenate([terminal_grad, jnp.ones((1,), dtype=states.dtype)])

    def back(costate, transition):
        previous = transition @ costate
        return previous, costate

    _, costates_after = jax.lax.scan(back, costate_end, transitions, reverse=True)

    # -- gradient: sum over chunks of integral of dH/dphi = G_n lambda_{n+1}
    flat_grad = jnp.einsum("npk,nk->p", sensitivities, costates_after)
    return value, unravel(flat_grad), sol
