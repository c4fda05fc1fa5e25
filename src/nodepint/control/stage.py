"""The optimal-control stage of a run: optimise on the learned model, optimise the
reference on the true system by the same method, and evaluate both on the true system."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from nodepint.config import Config
from nodepint.control.evaluate import control_signal, reference_cost, trajectory
from nodepint.control.optimise import ControlRun, optimise_control
from nodepint.control.parametrisations import make_control
from nodepint.control.system import learned_task, true_task
from nodepint.integrators import chunk_boundaries
from nodepint.training import TimeSolver


class ControlOutcome(NamedTuple):
    """Data of the control figure: trajectories in data units and the control signals."""

    problem: str
    output_names: tuple[str, ...]
    ts: np.ndarray
    # The found control u* applied to the learned model and to the true system, and the
    # reference control u_ref (optimised on the true system) applied to the true system.
    learned: np.ndarray
    true: np.ndarray
    reference: np.ndarray
    control: np.ndarray
    reference_control: np.ndarray
    # J per iteration of the optimisation on the learned model (empty for dp_dp) and of
    # the reference optimisation.
    costs: list[float]
    reference_costs: list[float]


def control_span(cfg: Config) -> tuple[float, float]:
    """[t0, t1] of the control task: control.horizon long, or the problem's span."""
    t0 = cfg.problem.t0
    return t0, t0 + (cfg.control.horizon or (cfg.problem.t1 - t0))


def control_solver(cfg: Config, solver: TimeSolver) -> TimeSolver:
    """Stretch the run's PinT solver over the control span.

    The chunk count grows with the span (rounded to a whole multiple of pint.chunks), so
    every chunk keeps about the training chunks' length and the same fine steps.
    """
    t0, t1 = control_span(cfg)
    multiple = max(1, round((t1 - t0) / (cfg.problem.t1 - cfg.problem.t0)))
    chunks = cfg.pint.chunks * multiple
    settings = dataclasses.replace(
        solver.settings, chunks=chunks, max_iters=cfg.pint.max_iters or chunks
    )
    tau = chunk_boundaries(t0, t1, chunks)
    return dataclasses.replace(solver, settings=settings, tau=tau, ts=tau)


def initial_control(cfg: Config, problem, key, dtype):
    t0, t1 = control_span(cfg)
    return make_control(
        cfg.control, problem.control_size, t0, t1, problem.control_bound(), key, dtype
    )


def run_control(
    cfg: Config, problem, data, model, solver, key, joint: tuple[Any, int, float] | None = None
) -> tuple[ControlOutcome, dict[str, Any]]:
    """Find u* on the learned model (or take the jointly trained one) and evaluate it.

    `joint` is (control, iterations, seconds) of combo dp_dp's joint optimisation.
    Returns the figure's data and the `control` section of summary.json.
    """
    dtype = data.mean.dtype
    method = cfg.combo.control
    solver = control_solver(cfg, solver)
    t0, t1 = control_span(cfg)
    learned = learned_task(problem, model, data.mean, data.std)
    true = true_task(problem, dtype)
    start = initial_control(cfg, problem, key, dtype)

    # -- u* on the learned model
    if joint is None:
        found: ControlRun = optimise_control(method, solver, learned, start, cfg.control, key)
        u_star, iterations, seconds, costs = (
            found.control,
            found.iterations,
            found.seconds,
            found.costs,
        )
        converged = found.converged
    else:
        u_star, iterations, seconds = joint
        costs, converged = [], None

    # -- u_ref on the true system, by the same method from the same start
    reference = optimise_control(method, solver, true, start, cfg.control, key)

    # -- both controls on the true system, by the same reference solve
    true_cost = reference_cost(true, u_star, t0, t1)
    best_true_cost = reference_cost(true, reference.control, t0, t1)
    learned_cost = reference_cost(learned, u_star, t0, t1)
    gap = (true_cost - best_true_cost) / abs(best_true_cost)

    ts = np.linspace(t0, t1, 201)
    outcome = ControlOutcome(
        problem.name,
        problem.output_names,
        ts,
        trajectory(learned, u_star, ts),
        trajectory(true, u_star, ts),
        trajectory(true, reference.control, ts),
        control_signal(u_star, jnp.asarray(ts)),
        control_signal(reference.control, jnp.asarray(ts)),
        costs,
        reference.costs,
    )
    summary = {
        "method": "joint_dp" if joint is not None else method,
        "parametrisation": cfg.control.parametrisation,
        "true_cost": true_cost,
        "reference_cost": best_true_cost,
        "gap": gap,
        "learned_cost": learned_cost,
        "iterations": int(iterations),
        "seconds": float(seconds),
        "converged": converged,
        "reference_iterations": reference.iterations,
        "reference_seconds": reference.seconds,
        "reference_converged": reference.converged,
    }
    return outcome, summary
