"""DAL, the chunk-parallel continuous adjoint, against the DP gradients (unrolled and
implicit) and central finite differences."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from nodepint.config import Config, ConfigError, validate
from nodepint.integrators import SOLVERS, Propagator, chunk_boundaries
from nodepint.models import Decoder, Encoder, NeuralODE, VectorField
from nodepint.pint import PintSettings
from nodepint.training import TimeSolver

STATE = 3


def _model():
    mlp = eqx.nn.MLP(STATE + 1, STATE, 8, 1, activation=jnp.tanh, key=jr.PRNGKey(0))
    # The output scale makes the flow change the state by O(1) over the span, so that the
    # backward solves have real work to do.
    field = VectorField(mlp, time_dependent=True, output_scale=(2.0,) * STATE)
    return NeuralODE(Encoder(None, 0), field, Decoder(None, STATE))


def _time_solver(method, basis, scan, solver="tsit5", steps=16, chunks=4):
    settings = PintSettings(
        method=method,
        basis=basis,
        chunks=chunks,
        rtol=1e-12,
        atol=1e-12,
        max_iters=chunks,
        scan=scan,
    )
    fine = Propagator(SOLVERS[solver](), steps, False, 1e-8, 1e-8, steps + 1)
    coarse = Propagator(SOLVERS["tsit5"](), 1, False, 1e-8, 1e-8, 2)
    tau = chunk_boundaries(0.0, 1.0, chunks)
    # Seven times on four chunks: on the chunk boundaries (0, 0.5, 1) and inside chunks.
    ts = jnp.linspace(0.0, 1.0, 7)
    return TimeSolver(settings, fine, coarse, tau, ts, grad="implicit")


def _loss_fn():
    model = _model()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    target = jr.normal(jr.PRNGKey(1), (7, STATE))

    # The identity encoder makes the input x the initial state, so d/dx is d/dz0.
    def loss(x, p, solver):
        outputs, _ = solver.predict(eqx.combine(p, static), x, jr.PRNGKey(2))
        return jnp.mean((outputs - target) ** 2)

    x = jnp.array([0.5, -0.3, 0.8])
    return loss, x, params


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(tree)])


def _relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize(
    "method,basis,scan",
    [("parareal", "none", "sequential"), ("newton", "full", "associative")],
)
def test_dal_matches_dp_and_finite_differences(method, basis, scan):
    loss, x, params = _loss_fn()
    solver = _time_solver(method, basis, scan)
    grad = eqx.filter_jit(jax.grad(loss, argnums=(0, 1)))
    by_mode = {
        mode: grad(x, params, dataclasses.replace(solver, grad=mode))
        for mode in ("unroll", "implicit", "dal")
    }
    dal_x, dal_params = by_mode["dal"][0], _flat(by_mode["dal"][1])

    # DP-unroll and DP-implicit differentiate the same discrete solution, to the PinT
    # tolerance (1e-12). DAL differs from them by the error of the backward tsit5 solve, of
    # order (h L)^5 with h = 1/16 and |df/dz| ~ 2: about 1e-7, so 1e-4 leaves a wide margin.
    for mode in ("unroll", "implicit"):
        assert _relative(dal_x, by_mode[mode][0]) <= 1e-4, mode
        assert _relative(dal_params, _flat(by_mode[mode][1])) <= 1e-4, mode
    assert _relative(by_mode["unroll"][0], by_mode["implicit"][0]) <= 1e-8
    assert _relative(_flat(by_mode["unroll"][1]), _flat(by_mode["implicit"][1])) <= 1e-8

    # Central differences along a random direction in (z0, theta): truncation ~h^2 and
    # round-off ~1e-16/h are both below 1e-8 relative at h = 1e-5.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(jr.PRNGKey(7), len(leaves) + 1)
    direction_x = jr.normal(keys[0], x.shape)
    direction = treedef.unflatten(
        [jr.normal(k, leaf.shape) for k, leaf in zip(keys[1:], leaves, strict=True)]
    )
    value = eqx.filter_jit(loss)
    h = 1e-5

    def shifted(sign):
        p = jax.tree_util.tree_map(lambda a, d: a + sign * h * d, params, direction)
        return value(x + sign * h * direction_x, p, solver)

    finite = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = jnp.dot(dal_x, direction_x) + jnp.dot(dal_params, _flat(direction))
    assert abs(float(finite - analytic)) <= 1e-4 * abs(float(analytic))


def test_dal_differs_from_dp_at_solver_order():
    # With Euler steps the continuous adjoint and the discrete gradient differ by O(h):
    # doubling the steps must roughly halve the gap. This checks that DAL really solves the
    # adjoint ODE, rather than reproducing the discrete gradient.
    loss, x, params = _loss_fn()
    grad = eqx.filter_jit(jax.grad(loss, argnums=1))
    gaps = []
    for steps in (8, 16):
        solver = _time_solver("parareal", "none", "sequential", solver="euler", steps=steps)
        dal = _flat(grad(x, params, dataclasses.replace(solver, grad="dal")))
        dp = _flat(grad(x, params, solver))
        gaps.append(_relative(dal, dp))
    assert gaps[0] > 1e-4
    assert 1.5 < gaps[0] / gaps[1] < 2.7


def test_grad_mode_accepts_dal_and_rejects_unknown():
    cfg = Config()
    cfg.problem.name = "lorenz"
    cfg.train.grad = "dal"
    validate(cfg)
    cfg.train.grad = "adjoint"
    with pytest.raises(ConfigError, match="train.grad=.adjoint. is invalid.*dal"):
        validate(cfg)
