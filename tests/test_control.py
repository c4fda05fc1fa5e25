"""Optimal control: the DP (unrolled and implicit) and DAL gradients of the control cost
against each other and against central finite differences, the controlled problems'
data generators, and the optimisation loop."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from nodepint.config import Config, ControlConfig, ProblemConfig
from nodepint.control import (
    dal_value_and_grad,
    dp_value_and_grad,
    learned_task,
    make_control,
    optimise_control,
    true_task,
)
from nodepint.control.evaluate import reference_cost
from nodepint.models import build_model
from nodepint.pipeline import solver_for
from nodepint.problems import make_problem
from nodepint.problems.base import controlled_reference_solve
from nodepint.problems.pendulum import pendulum_energy, pendulum_field


def _solver(grad="implicit", method="parareal", steps=64, chunks=4, t1=2.0):
    cfg = Config()
    cfg.problem.t1 = t1
    cfg.integrator.fine.steps = steps
    cfg.pint.name, cfg.pint.method, cfg.pint.chunks = method, method, chunks
    cfg.train.grad = grad
    return solver_for(cfg, np.linspace(0.0, t1, 5))


def _pendulum(**params):
    return make_problem(ProblemConfig(name="pendulum", t1=2.0, params=params))


def _tasks(problem):
    """The swing-up task on the true pendulum and on an untrained model with a control input."""
    cfg = Config()
    cfg.model.width = 8
    model = build_model(cfg.model, 2, 2, jr.PRNGKey(3), jnp.float64, (1.0, 1.0), 1, 4)
    mean, std = jnp.array([0.1, -0.2]), jnp.array([1.5, 0.8])
    return {
        "true": true_task(problem, jnp.float64),
        "learned": learned_task(problem, model, mean, std),
    }


def _flat(tree):
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.concatenate([leaf.ravel() for leaf in leaves])


def _central_difference(solver, task, control, direction, h):
    params, static = eqx.partition(control, eqx.is_inexact_array)

    @eqx.filter_jit
    def value(p):
        return dp_value_and_grad(solver, task, eqx.combine(p, static), jr.PRNGKey(0))[0]

    def shifted(sign):
        return value(jax.tree_util.tree_map(lambda a, d: a + sign * h * d, params, direction))

    return float((shifted(1.0) - shifted(-1.0)) / (2 * h))


# Four compilations of the augmented solve (implicit, unroll, DAL, the cost alone): several
# minutes on 2 shared cores, so outside the default suite.
@pytest.mark.slow
@pytest.mark.parametrize("plant", ["true", "learned"])
def test_oc_gradients_dp_dal_and_fd_agree(plant):
    problem = _pendulum()
    task = _tasks(problem)[plant]
    control_cfg = ControlConfig(parametrisation="network", width=8, init_scale=1.0)
    control = make_control(control_cfg, 1, 0.0, 2.0, 0.5, jr.PRNGKey(1), jnp.float64)
    key = jr.PRNGKey(0)
    # 64 Tsit5 steps over two time units (h = 1/32, 16 per chunk): the local error
    # ~h^5 ~ 3e-8 times the field's derivatives keeps the continuous (DAL) gradient within
    # ~1e-7 relative of the discrete (DP) one, well inside the 1e-4 bound.
    implicit = eqx.filter_jit(dp_value_and_grad)(_solver("implicit"), task, control, key)[1]
    unrolled = eqx.filter_jit(dp_value_and_grad)(_solver("unroll"), task, control, key)[1]
    adjoint = eqx.filter_jit(dal_value_and_grad)(_solver("implicit"), task, control, key)[1]
    implicit, unrolled, adjoint = map(_flat, (implicit, unrolled, adjoint))
    scale = float(jnp.max(jnp.abs(implicit)))
    assert scale > 0
    assert float(jnp.max(jnp.abs(unrolled - implicit))) <= 1e-4 * scale
    assert float(jnp.max(jnp.abs(adjoint - implicit))) <= 1e-4 * scale

    # Central differences along a random direction, h = 1e-5: truncation ~h^2 ~ 1e-10 and
    # round-off ~1e-16 / h ~ 1e-11 relative, far inside 1e-4.
    params = eqx.filter(control, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(jr.PRNGKey(7), len(leaves))
    direction = treedef.unflatten(
        [jr.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )
    finite = _central_difference(_solver("implicit"), task, control, direction, 1e-5)
    for name, grad in (("implicit", implicit), ("unroll", unrolled), ("dal", adjoint)):
        analytic = float(jnp.dot(grad, _flat(direction)))
        assert abs(finite - analytic) <= 1e-4 * abs(finite), name


@pytest.mark.slow
def test_piecewise_dp_modes_and_fd_agree():
    # Piecewise-constant controls jump inside the fixed-step solve (see PiecewiseConstant),
    # so only the DP modes, which differentiate the same discrete solve, are held to 1e-4.
    problem = _pendulum()
    task = _tasks(problem)["true"]
    control_cfg = ControlConfig(parametrisation="piecewise", intervals=8, init_scale=1.0)
    control = make_control(control_cfg, 1, 0.0, 2.0, 0.5, jr.PRNGKey(1), jnp.float64)
    key = jr.PRNGKey(0)
    implicit = _flat(eqx.filter_jit(dp_value_and_grad)(_solver("implicit"), task, control, key)[1])
    unrolled = _flat(eqx.filter_jit(dp_value_and_grad)(_solver("unroll"), task, control, key)[1])
    scale = float(jnp.max(jnp.abs(implicit)))
    assert float(jnp.max(jnp.abs(unrolled - implicit))) <= 1e-4 * scale
    direction = eqx.filter(control, eqx.is_inexact_array)
    direction = jax.tree_util.tree_map(lambda x: jr.normal(jr.PRNGKey(5), x.shape), direction)
    finite = _central_difference(_solver("implicit"), task, control, direction, 1e-5)
    analytic = float(jnp.dot(implicit, _flat(direction)))
    assert abs(finite - analytic) <= 1e-4 * abs(finite)


def test_pendulum_energy_conserved_without_damping_or_torque():
    problem = _pendulum(damping=0.0)
    y0s = problem.initial_states(jr.PRNGKey(0), 8)
    signals = jnp.zeros((8, problem.signal_intervals, 1))
    ts = jnp.linspace(0.0, 10.0, 41)
    ys = controlled_reference_solve(
        pendulum_field, y0s, signals, ts, problem.field_args(), 1e-10, 1e-10
    )
    energy = pendulum_energy(ys, problem.field_args())
    # Dopri8 at rtol = atol = 1e-10 over ten time units (about 1.6 small-angle periods)
    # keeps E to ~1e-10; the energy is at least m g l (1 - cos(pi)) / 2 away from zero only
    # when it is large, so the drift is measured against max(|E|, 1) = m g l.
    drift = jnp.max(jnp.abs(energy - energy[:, :1]) / jnp.maximum(jnp.abs(energy[:, :1]), 1.0))
    assert float(drift) < 1e-8


def test_pendulum_data_respond_to_torque():
    problem = _pendulum()
    y0 = jnp.zeros((2, 2))
    k = problem.signal_intervals
    signals = jnp.stack([jnp.zeros((k, 1)), jnp.full((k, 1), 0.5)])
    ts = jnp.linspace(0.0, 2.0, 9)
    ys = controlled_reference_solve(
        pendulum_field, y0, signals, ts, problem.field_args(), 1e-10, 1e-10
    )
    # At rest at the bottom, no torque keeps it there; a constant torque turns it.
    np.testing.assert_allclose(ys[0], 0.0, atol=1e-12)
    assert float(ys[1, -1, 0]) > 0.1


def test_harvest_data_inputs_carry_signal():
    cfg = ProblemConfig(name="lotka_volterra_harvest", t1=1.0, n_obs=5, n_trajectories=8)
    problem = make_problem(cfg)
    data = problem.make_data(jr.PRNGKey(0))
    width = problem.input_size + problem.signal_intervals * problem.control_size
    assert data.train.inputs.shape[1] == width
    bound = problem.control_bound()
    assert float(jnp.max(jnp.abs(data.train.inputs[:, 2:]))) <= bound


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dp", "dal"])
def test_optimise_control_lowers_true_cost(method):
    problem = _pendulum()
    task = _tasks(problem)["true"]
    control_cfg = ControlConfig(intervals=8, iterations=15, lr=0.1)
    start = make_control(control_cfg, 1, 0.0, 2.0, 0.5, jr.PRNGKey(1), jnp.float64)
    solver = _solver("implicit", steps=32)
    run = optimise_control(method, solver, task, start, control_cfg, jr.PRNGKey(0))
    assert run.iterations >= 2
    assert run.best_cost < run.costs[0]
    before = reference_cost(task, start, 0.0, 2.0)
    after = reference_cost(task, run.control, 0.0, 2.0)
    assert after < before
    # Every iterate respects the torque bound (tanh squashing).
    ts = jnp.linspace(0.0, 2.0, 50)
    assert float(jnp.max(jnp.abs(jax.vmap(run.control)(ts)))) <= 0.5


@pytest.mark.slow
def test_sequential_solver_gives_same_gradient():
    problem = _pendulum()
    task = _tasks(problem)["learned"]
    control_cfg = ControlConfig(parametrisation="network", width=8, init_scale=1.0)
    control = make_control(control_cfg, 1, 0.0, 2.0, 0.5, jr.PRNGKey(1), jnp.float64)
    parareal = _solver("implicit")
    sequential = dataclasses.replace(parareal).with_method("sequential")
    a = _flat(eqx.filter_jit(dal_value_and_grad)(parareal, task, control, jr.PRNGKey(0))[1])
    b = _flat(eqx.filter_jit(dal_value_and_grad)(sequential, task, control, jr.PRNGKey(0))[1])
    # The PinT states match the sequential ones to the PinT tolerance (1e-10).
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-6 * float(jnp.max(jnp.abs(b)))
