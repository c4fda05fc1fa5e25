"""The PinT engine against the sequential fine solve, on known systems."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from nodepint.config import IntegratorConfig
from nodepint.integrators import chunk_boundaries, make_propagators
from nodepint.pint import PintSettings, observe, pint_solve, sequential_states
from nodepint.pint.bases import grow_basis
from nodepint.pint.scans import associative_scan, sequential_scan
from nodepint.problems.lorenz import lorenz_field
from nodepint.problems.lotka_volterra import lotka_volterra_field

CHUNKS = 8


def linear_field(t, y, a):
    return a @ y


def _linear_matrix():
    # A damped rotation plus a weak coupling: non-normal, with eigenvalues -0.3 +/- 2i, -1.
    return jnp.array([[-0.3, 2.0, 0.0], [-2.0, -0.3, 0.5], [0.0, 0.0, -1.0]])


SYSTEMS = {
    "lorenz": (lorenz_field, jnp.array([10.0, 28.0, 8.0 / 3.0]), jnp.array([1.0, 1.0, 20.0]), 1.0),
    "lotka_volterra": (
        lotka_volterra_field,
        jnp.array([1.5, 1.0, 1.0, 3.0]),
        jnp.array([2.0, 1.0]),
        5.0,
    ),
    "linear": (linear_field, _linear_matrix(), jnp.array([1.0, -0.5, 0.25]), 3.0),
}

PAIRS = [
    ("jacobi", "none", "sequential"),
    ("parareal", "none", "sequential"),
    ("newton", "full", "sequential"),
    ("newton", "full", "associative"),
    ("newton", "diagonal", "sequential"),
    ("newton", "diagonal", "associative"),
    ("newton", "random1d", "sequential"),
    ("newton", "random1d", "associative"),
    ("newton", "growing", "sequential"),
    ("newton", "growing", "associative"),
    ("newton", "sensitivity", "sequential"),
    ("newton", "sensitivity", "associative"),
    ("parareal", "random1d", "sequential"),
    ("parareal", "sensitivity", "sequential"),
]


def _setup(system, steps=128):
    field, args, y0, t1 = SYSTEMS[system]
    cfg = IntegratorConfig()
    cfg.fine.steps = steps
    fine, coarse = make_propagators(cfg, CHUNKS)
    tau = chunk_boundaries(0.0, t1, CHUNKS)
    return field, args, y0, fine, coarse, tau


def _settings(method, basis, scan, rtol=1e-10, atol=1e-10, **kw):
    return PintSettings(method, basis, CHUNKS, rtol, atol, CHUNKS, scan, rank=2, **kw)


def _kept(size):
    return grow_basis(jnp.zeros((size, 0)), 2, jr.PRNGKey(5))


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("method,basis,scan", PAIRS)
def test_method_matches_sequential(system, method, basis, scan):
    field, args, y0, fine, coarse, tau = _setup(system)
    reference = sequential_states(fine, field, y0, tau, args)
    settings = _settings(method, basis, scan)
    kept = _kept(y0.shape[0])
    sol = jax.jit(
        lambda y, a, k: pint_solve(settings, fine, coarse, field, y, tau, a, k, kept=kept)
    )(y0, args, jr.PRNGKey(3))
    assert bool(sol.converged)
    assert 0 <= int(sol.iterations) <= CHUNKS
    # The defect tolerance is 1e-10 relative per chunk; errors can grow by the flow's
    # amplification over the span (Lorenz over one time unit: ~1e2), so 1e-7 has margin.
    deviation = jnp.max(jnp.abs(sol.states - reference)) / jnp.max(jnp.abs(reference))
    assert float(deviation) < 1e-7


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_jacobi_exact_after_chunk_count(system):
    field, args, y0, fine, coarse, tau = _setup(system)
    reference = sequential_states(fine, field, y0, tau, args)
    # A tolerance no iterate can meet: only the exactness after N iterations stops the loop.
    settings = _settings("jacobi", "none", "sequential", rtol=1e-300, atol=1e-300)
    sol = pint_solve(settings, fine, coarse, field, y0, tau, args, jr.PRNGKey(0))
    assert int(sol.iterations) == CHUNKS
    np.testing.assert_allclose(sol.states, reference, rtol=0, atol=1e-12)


def test_exact_newton_linear_one_iteration():
    field, args, y0, fine, coarse, tau = _setup("linear")
    settings = _settings("newton", "full", "sequential")
    sol = pint_solve(settings, fine, coarse, field, y0, tau, args, jr.PRNGKey(0))
    # The flow map of a linear ODE is affine, so one exact Newton step solves it.
    assert int(sol.iterations) == 1
    assert bool(sol.converged)


def test_newton_lorenz_few_iterations():
    field, args, y0, fine, coarse, tau = _setup("lorenz")
    sol = pint_solve(
        _settings("newton", "full", "sequential"), fine, coarse, field, y0, tau, args, jr.PRNGKey(0)
    )
    # Quadratic convergence from the coarse sweep: far fewer than N iterations.
    assert int(sol.iterations) <= 4


def test_warm_start_from_solution_needs_no_iteration():
    field, args, y0, fine, coarse, tau = _setup("lotka_volterra")
    reference = sequential_states(fine, field, y0, tau, args)
    for method, basis, scan in PAIRS:
        sol = pint_solve(
            _settings(method, basis, scan),
            fine,
            coarse,
            field,
            y0,
            tau,
            args,
            jr.PRNGKey(0),
            guess=reference,
            kept=_kept(2),
        )
        assert int(sol.iterations) == 0, method + "/" + basis


def test_residual_history_ends_within_tolerance():
    field, args, y0, fine, coarse, tau = _setup("lotka_volterra")
    sol = pint_solve(
        _settings("parareal", "none", "sequential"),
        fine,
        coarse,
        field,
        y0,
        tau,
        args,
        jr.PRNGKey(0),
    )
    k = int(sol.iterations)
    history = np.asarray(sol.residuals)
    assert np.all(np.isfinite(history[: k + 1]))
    assert history[k] <= 1.0 or k == CHUNKS
    assert np.all(np.isnan(history[k + 1 :]))


def test_scans_agree_to_roundoff():
    key = jr.PRNGKey(0)
    n, d, r = 33, 5, 2
    kw, kv, kb, ke = jr.split(key, 4)
    w = 0.5 * jr.normal(kw, (n, d, r))
    v = jnp.linalg.qr(jr.normal(kv, (n, d, r)))[0]
    b = jr.normal(kb, (n, d))
    e0 = jr.normal(ke, (d,))
    expected = [e0]
    for i in range(n):
        expected.append(w[i] @ (v[i].T @ expected[-1]) + b[i])
    expected = jnp.stack(expected)
    np.testing.assert_allclose(sequential_scan(w, v, b, e0), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(associative_scan(w, v, b, e0), expected, rtol=1e-12, atol=1e-12)


def test_observe_matches_single_solve():
    field, args, y0, fine, coarse, tau = _setup("linear")
    states = sequential_states(fine, field, y0, tau, args)
    ts = jnp.linspace(0.0, 3.0, 13)
    values = observe(fine, field, states, tau, ts, args)
    exact = jnp.stack([jax.scipy.linalg.expm(_linear_matrix() * t) @ y0 for t in ts])
    # Tsit5 with 16 steps per chunk of 3/8: local error ~1e-9, so 1e-7 overall.
    np.testing.assert_allclose(values, exact, rtol=0, atol=1e-7)


def test_sensitivity_full_rank_matches_newton_iterations():
    field, args, y0, fine, coarse, tau = _setup("lorenz")
    newton = pint_solve(
        _settings("newton", "full", "sequential"), fine, coarse, field, y0, tau, args, jr.PRNGKey(0)
    )
    settings = PintSettings(
        "newton", "sensitivity", CHUNKS, 1e-10, 1e-10, CHUNKS, "associative", rank=3
    )
    krylov = pint_solve(settings, fine, coarse, field, y0, tau, args, jr.PRNGKey(0))
    # A Krylov basis of rank d spans the whole state space: the correction is exact Newton.
    assert int(krylov.iterations) == int(newton.iterations)


def test_damping_keeps_convergence():
    field, args, y0, fine, coarse, tau = _setup("lorenz")
    reference = sequential_states(fine, field, y0, tau, args)
    sol = pint_solve(
        _settings("newton", "full", "sequential", damping=1.0),
        fine,
        coarse,
        field,
        y0,
        tau,
        args,
        jr.PRNGKey(0),
    )
    assert bool(sol.converged)
    deviation = jnp.max(jnp.abs(sol.states - reference)) / jnp.max(jnp.abs(reference))
    assert float(deviation) < 1e-7


def test_divergence_detected_and_stops_short_solve():
    # Parareal with an unstable coarse propagator: explicit Euler with one step of 3/8 on
    # y' = -50 y amplifies by |1 - 18.75| per chunk, so the defect grows every iteration.
    cfg = IntegratorConfig()
    cfg.fine.steps = 8 * 64
    cfg.coarse.solver = "euler"
    fine, coarse = make_propagators(cfg, CHUNKS)
    tau = chunk_boundaries(0.0, 3.0, CHUNKS)
    rate = -50.0 * jnp.eye(2)
    settings = PintSettings(
        "parareal", "none", CHUNKS, 1e-10, 1e-10, CHUNKS - 2, "sequential", divergence_window=2
    )
    sol = pint_solve(
        settings, fine, coarse, linear_field, jnp.array([1.0, 0.5]), tau, rate, jr.PRNGKey(0)
    )
    assert bool(sol.diverged)
    assert not bool(sol.converged)
    assert int(sol.iterations) < CHUNKS - 2


def test_grow_basis_orthonormal_and_keeps_span():
    kept = grow_basis(jnp.zeros((5, 0)), 2, jr.PRNGKey(0))
    grown = grow_basis(kept, 2, jr.PRNGKey(1))
    np.testing.assert_allclose(grown.T @ grown, jnp.eye(4), atol=1e-12)
    # The old directions stay in the span of the new basis.
    np.testing.assert_allclose(grown @ (grown.T @ kept), kept, atol=1e-12)
    assert grow_basis(grown, 5, jr.PRNGKey(2)).shape == (5, 5)
