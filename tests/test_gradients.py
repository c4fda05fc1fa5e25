"""DP gradients of a PinT solve: implicit and unrolled against the sequential solve and
central finite differences."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

from nodepint.config import Config
from nodepint.pipeline import build


def _setup(method, basis):
    cfg = Config()
    cfg.problem.name = "lorenz"
    cfg.problem.n_trajectories = 8
    cfg.problem.n_obs = 9
    cfg.integrator.fine.steps = 32
    cfg.pint.name, cfg.pint.method, cfg.pint.basis, cfg.pint.chunks = method, method, basis, 4
    cfg.model.width = 8
    _, data, model, solver, _ = build(cfg)
    x, y = data.train.inputs[:3], data.train.targets[:3]
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, s):
        outputs, _ = s.predict_batch(eqx.combine(p, static), x, jr.PRNGKey(0))
        return jnp.mean((outputs - y) ** 2)

    return params, solver, loss


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("method,basis", [("parareal", "none"), ("newton", "random1d")])
def test_implicit_unroll_and_finite_differences_agree(method, basis):
    params, solver, loss = _setup(method, basis)
    grad = eqx.filter_jit(jax.grad(loss))
    implicit = _flat(grad(params, solver))
    unrolled = _flat(grad(params, dataclasses.replace(solver, grad="unroll")))
    sequential = _flat(grad(params, solver.with_method("sequential")))
    scale = jnp.max(jnp.abs(sequential))
    # All three differentiate the same fine solution; they differ by the PinT tolerance
    # (1e-10) amplified by the flow, far below 1e-6.
    assert float(jnp.max(jnp.abs(implicit - sequential)) / scale) < 1e-6
    assert float(jnp.max(jnp.abs(unrolled - sequential)) / scale) < 1e-6

    # Central differences along a random direction: truncation ~h^2 and round-off
    # ~1e-16/h, both below 1e-8 relative at h = 1e-5, so 1e-4 is a safe bound.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(jr.PRNGKey(7), len(leaves))
    direction = treedef.unflatten(
        [jr.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )
    h = 1e-5
    value = eqx.filter_jit(loss)

    def shifted(sign):
        p = jax.tree_util.tree_map(lambda a, d: a + sign * h * d, params, direction)
        return value(p, solver)

    finite = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = jnp.dot(implicit, _flat(direction))
    assert abs(float(finite - analytic)) <= 1e-4 * abs(float(analytic))
