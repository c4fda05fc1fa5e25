"""The optimal-control loop: solve, gradient (DP or DAL), optax update, repeat."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import equinox as eqx
import jax.random as jr
import numpy as np
import optax

from nodepint.config import ControlConfig
from nodepint.control.gradients import dal_value_and_grad, dp_value_and_grad
from nodepint.control.system import ControlTask

GRADIENTS = {"dp": dp_value_and_grad, "dal": dal_value_and_grad}


class ControlRun(NamedTuple):
    """The control with the lowest cost seen, and the loop's record."""

    control: Any
    # J at every iterate, in order; the last entry is the cost at the final iterate.
    costs: list[float]
    best_cost: float
    iterations: int
    # The loop stopped because |J_k - J_{k-1}| <= control.tol * max(1, |J_k|).
    converged: bool
    seconds: float
    # PinT iterations of each forward solve.
    pint_iterations: list[int]


def optimise_control(
    method: str, solver, task: ControlTask, control0, cfg: ControlConfig, key
) -> ControlRun:
    """Minimise J(u) over the control's parameters with Adam at control.lr.

    Stops when the change in J between two iterates is at most control.tol relative to
    max(1, |J|), or after control.iterations gradient evaluations.
    """
    value_and_grad = GRADIENTS[method]
    optimizer = optax.adam(cfg.lr)
    params, static = eqx.partition(control0, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    @eqx.filter_jit
    def step(params, opt_state, task, key):
        control = eqx.combine(params, static)
        value, grad, sol = value_and_grad(solver, task, control, key)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, value, sol.iterations

    start = time.perf_counter()
    costs: list[float] = []
    pint_iterations: list[int] = []
    best_params, best_cost, converged = params, np.inf, False
    for k in range(cfg.iterations):
        new_params, opt_state, value, iterations = step(params, opt_state, task, jr.fold_in(key, k))
        value = float(value)
        if not np.isfinite(value):
            break
        costs.append(value)
        pint_iterations.append(int(iterations))
        if value < best_cost:
            best_params, best_cost = params, value
        if k > 0 and abs(costs[-1] - costs[-2]) <= cfg.tol * max(1.0, abs(value)):
            converged = True
            break
        params = new_params
    return ControlRun(
        eqx.combine(best_params, static),
        costs,
        float(best_cost),
        len(costs),
        converged,
        time.perf_counter() - start,
        pint_iterations,
    )
