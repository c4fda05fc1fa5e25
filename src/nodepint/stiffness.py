"""A check, before data generation and compilation, that an explicit fine solver can step
through a stiff problem, and the message for a solve that reached its step limit.

A neural ODE that fits the data reproduces its fast time scale, so the fine solver of the
trained model meets the spectral radius rho of the true vector field's Jacobian. The
eigenvalues do not change under the affine normalisation of the data. An explicit
Runge-Kutta step h is stable on the negative real axis only while h * rho is within the
solver's stability bound. An adaptive explicit solve therefore needs about
chunk * rho / bound steps per chunk.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from nodepint.config import Config, ConfigError
from nodepint.integrators import IMPLICIT_SOLVERS, ROOT_FIND_MAX_STEPS, SOLVERS

# diffrax's message when an adaptive solve reaches max_steps (diffrax 0.7, RESULTS).
MAX_STEPS_MESSAGE = "maximum number of solver steps was reached"
# optimistix's message when the root finder of an implicit stage runs out of iterations,
# which a fixed-step solve cannot recover from by shrinking the step (optimistix 0.1).
ROOT_FIND_MESSAGE = "maximum number of steps was reached in the nonlinear solver"


@functools.cache
def stability_bound(solver: str) -> float:
    """Compute the largest b such that [-b, 0] lies in explicit `solver`'s stability region.

    One step of size 1 of the diagonal system y' = z * y from y = 1 returns the stability
    function R(z) for a grid of z at once; the bound is where |R| first exceeds 1.
    """
    grid = np.linspace(0.0, 8.0, 801)
    step = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, z: z * y),
        SOLVERS[solver](),
        0.0,
        1.0,
        1.0,
        jnp.ones(len(grid)),
        args=-jnp.asarray(grid),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=2,
    ).ys[0]
    # 1e-6 covers float32 round-off in |R| near 1.
    unstable = np.nonzero(np.abs(np.asarray(step)) > 1.0 + 1e-6)[0]
    return float(grid[unstable[0] - 1]) if len(unstable) else float(grid[-1])


def spectral_radius(field, args, states: np.ndarray, t: float) -> float:
    """Compute the max over `states` of the spectral radius of `field`'s Jacobian at `t`."""
    jacobians = jax.vmap(jax.jacfwd(lambda y: field(t, y, args)))(jnp.asarray(states))
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(jacobians)))))


def check_stiffness(cfg: Config, problem) -> None:
    """Raise `ConfigError` when the explicit fine solver cannot run the stiff `problem`.

    Checks only problems that return probe states (van_der_pol), and only the fine
    propagator: a coarse propagator is inexact by design, and parareal corrects it.
    """
    states = problem.stiffness_probe_states()
    fine = cfg.integrator.fine
    if states is None or fine.solver in IMPLICIT_SOLVERS:
        return
    rho = spectral_radius(problem.true_vector_field(), problem.field_args(), states, cfg.problem.t0)
    bound = stability_bound(fine.solver)
    chunk = (cfg.problem.t1 - cfg.problem.t0) / cfg.pint.chunks
    advice = (
        "The problem is stiff: use the implicit integrator (integrator=kvaerno5), or make "
        "the problem less stiff."
    )
    if fine.adaptive:
        needed = chunk * rho / bound
        if needed > fine.max_steps:
            raise ConfigError(
                f"integrator.fine.solver={fine.solver} (adaptive, explicit) cannot solve "
                f"{problem.describe()} within its step limit: the Jacobian's spectral radius "
                f"is {rho:.3g}, so stability alone needs about {needed:.3g} steps per chunk "
                f"of length {chunk:.3g}, above integrator.fine.max_steps={fine.max_steps}. "
                + advice
            )
        return
    h = chunk / max(fine.steps // cfg.pint.chunks, 1)
    stable_steps = int(np.ceil(rho * (cfg.problem.t1 - cfg.problem.t0) / bound))
    if h * rho > bound:
        raise ConfigError(
            f"integrator.fine.solver={fine.solver} (explicit, fixed steps) is unstable on "
            f"{problem.describe()}: the Jacobian's spectral radius is {rho:.3g}, so the step "
            f"{h:.3g} gives h * rho = {h * rho:.3g}, beyond the stability bound "
            f"{bound:.3g} of {fine.solver} on the negative real axis. Stability would need "
            f"integrator.fine.steps >= {stable_steps}. " + advice
        )


def step_limit_message(cfg: Config, error: Exception) -> str | None:
    """Return the message for `error` if a solve reached diffrax's step limit or an implicit
    stage's Newton iteration limit, else None."""
    fine = cfg.integrator.fine
    problem = cfg.problem.name
    if cfg.problem.mu is not None:
        problem += f" with mu={cfg.problem.mu:g}"
    if ROOT_FIND_MESSAGE in str(error):
        return (
            f"the implicit solver {fine.solver} failed to solve its stage equations within "
            f"{ROOT_FIND_MAX_STEPS} Newton iterations on problem {problem}, with fixed steps "
            f"(integrator.fine.steps={fine.steps}). Raise integrator.fine.steps, or lower "
            "optim.lr if the failure came after some epochs of training."
        )
    if MAX_STEPS_MESSAGE not in str(error):
        return None
    return (
        f"a solve reached its step limit (integrator.fine.max_steps={fine.max_steps}) with "
        f"integrator.fine.solver={fine.solver} on problem {problem}. The problem "
        "or the learned vector field may be stiff: use the implicit integrator "
        "(integrator=kvaerno5), or raise integrator.fine.max_steps."
    )
