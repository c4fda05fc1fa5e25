"""Fine and coarse propagators: one chunk's solve with a diffrax solver chosen by name."""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float, PyTree

from nodepint.config import IntegratorConfig

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "implicit_euler": diffrax.ImplicitEuler,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno5": diffrax.Kvaerno5,
}
# Implicit solvers solve a nonlinear system in every stage. They are A-stable (diffrax
# 0.7 documents all three as A-L stable), so stability does not bound their step size.
IMPLICIT_SOLVERS = ("implicit_euler", "kvaerno3", "kvaerno5")


ROOT_FIND_MAX_STEPS = 30


def make_solver(name: str, rtol: float, atol: float) -> diffrax.AbstractSolver:
    """Build the diffrax solver `name`, with a Newton root finder at `rtol`/`atol` if implicit.

    Diffrax takes an implicit solver's root-finding tolerances from an adaptive step-size
    controller and raises a ValueError under `ConstantStepSize`, which has none. Passing
    the root finder explicitly makes the fixed-step implicit solves of the PinT chunks work.
    Newton, not diffrax's default chord method: with fixed steps a failed root find cannot
    be retried with a smaller step, and the chord method reported "Nonlinear solve
    diverged" on a van_der_pol smoke run whose coarse implicit Euler step was 0.5.
    """
    if name in IMPLICIT_SOLVERS:
        # NOTE: 30 Newton iterations per stage (diffrax's default is 10) is a guess. A
        # van_der_pol run at mu = 1000 failed with either limit until its coarse step shrank.
        return SOLVERS[name](
            root_finder=optx.Newton(rtol=rtol, atol=atol), root_find_max_steps=ROOT_FIND_MAX_STEPS
        )
    return SOLVERS[name]()


# A vector field in diffrax's convention: f(t, y, args) -> dy/dt.
VectorField = Callable[[Float[Array, ""], Float[Array, " state"], PyTree], Float[Array, " state"]]


class Propagator(eqx.Module):
    """Solve the ODE over one chunk [t0, t1] with fixed steps or adaptive steps."""

    solver: diffrax.AbstractSolver
    steps: int = eqx.field(static=True)
    adaptive: bool = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def _solve(self, field, y0, t0, t1, args, saveat, adjoint):
        dt0 = (t1 - t0) / self.steps
        if self.adaptive:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
            max_steps = self.max_steps
        else:
            controller = diffrax.ConstantStepSize()
            # One spare step: rounding in t0 + k * dt0 can leave a last step of ~1e-16.
            max_steps = self.steps + 1
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            self.solver,
            t0,
            t1,
            dt0,
            y0,
            args=args,
            saveat=saveat,
            stepsize_controller=controller,
            max_steps=max_steps,
            adjoint=adjoint,
        ).ys

    def __call__(self, field: VectorField, y0, t0, t1, args) -> Float[Array, " state"]:
        """The state at t1; differentiable in reverse mode."""
        saveat = diffrax.SaveAt(t1=True)
        return self._solve(field, y0, t0, t1, args, saveat, diffrax.RecursiveCheckpointAdjoint())[0]

    def jvp(self, field: VectorField, y0, t0, t1, args, tangents) -> Float[Array, "state rank"]:
        """Jacobian-vector products of the chunk's flow map at y0, one per column of `tangents`.

        Uses forward-mode differentiation of the solve; `y0` and `args` are treated as
        constants (no reverse-mode derivative passes through the result).
        """
        y0 = jax.lax.stop_gradient(y0)
        args = jax.tree_util.tree_map(
            lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, args
        )
        saveat = diffrax.SaveAt(t1=True)

        def flow(y):
            return self._solve(field, y, t0, t1, args, saveat, diffrax.ForwardMode())[0]

        def one(v):
            return jax.jvp(flow, (y0,), (v,))[1]

        return jax.vmap(one, in_axes=1, out_axes=1)(tangents)

    def dense(self, field: VectorField, y0, t0, t1, args, ts) -> Float[Array, "times state"]:
        """The states at times `ts` (clipped into [t0, t1] by the caller)."""
        saveat = diffrax.SaveAt(ts=ts)
        return self._solve(field, y0, t0, t1, args, saveat, diffrax.RecursiveCheckpointAdjoint())


def make_propagators(cfg: IntegratorConfig, chunks: int) -> tuple[Propagator, Propagator]:
    """Build the fine and coarse propagators for a span split into `chunks` chunks."""
    fine = Propagator(
        solver=make_solver(cfg.fine.solver, cfg.fine.rtol, cfg.fine.atol),
        steps=max(cfg.fine.steps // chunks, 1),
        adaptive=cfg.fine.adaptive,
        rtol=cfg.fine.rtol,
        atol=cfg.fine.atol,
        max_steps=cfg.fine.max_steps,
    )
    coarse = Propagator(
        solver=make_solver(cfg.coarse.solver, cfg.fine.rtol, cfg.fine.atol),
        steps=cfg.coarse.steps_per_chunk,
        adaptive=False,
        rtol=cfg.fine.rtol,
        atol=cfg.fine.atol,
        max_steps=cfg.coarse.steps_per_chunk + 1,
    )
    return fine, coarse


def chunk_boundaries(t0: float, t1: float, chunks: int) -> Float[Array, " chunks+1"]:
    """Equally spaced chunk boundaries tau_0 = t0 < ... < tau_N = t1."""
    return jnp.linspace(t0, t1, chunks + 1)
