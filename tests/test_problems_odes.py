"""van_der_pol, duffing, kuramoto and custom problems: data generators against known
properties, the stiffness check, and fixed-step implicit solves inside the PinT chunks."""

import dataclasses
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from nodepint.config import Config, ConfigError, ProblemConfig
from nodepint.pipeline import build
from nodepint.problems import make_problem
from nodepint.problems.base import ReferenceSolveError, reference_solve
from nodepint.problems.duffing import duffing_energy
from nodepint.problems.kuramoto import order_parameter
from nodepint.problems.van_der_pol import van_der_pol_field
from nodepint.stiffness import check_stiffness, stability_bound

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _problem(name, **kw):
    return make_problem(ProblemConfig(name=name, **kw))


# -- duffing


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_duffing_energy_conserved(alpha):
    # The tolerances of conf/problem/duffing.yaml. At 1e-10 the drift reached 1.6e-8.
    problem = _problem(
        "duffing",
        reference_rtol=1e-12,
        reference_atol=1e-12,
        params={"delta": 0.0, "gamma": 0.0, "alpha": alpha},
    )
    ts = np.linspace(0.0, 10.0, 101)
    ys = np.asarray(problem.trajectories(jr.PRNGKey(0), 8, ts))
    args = problem.field_args()
    energy = np.asarray(duffing_energy(ys, args))
    # Relative to the sum of the energy's terms in absolute value, which stays away from 0
    # where E itself crosses 0 in the double well.
    x, v = ys[..., 0], ys[..., 1]
    scale = np.mean(v**2 / 2 + abs(alpha) * x**2 / 2 + x**4 / 4, axis=1, keepdims=True)
    drift = np.abs(energy - energy[:, :1]) / scale
    assert drift.max() < 1e-8


@pytest.mark.slow
def test_duffing_damping_loses_energy():
    problem = _problem("duffing")
    ts = np.linspace(0.0, 10.0, 11)
    energy = np.asarray(
        duffing_energy(problem.trajectories(jr.PRNGKey(1), 8, ts), problem.field_args())
    )
    # dE/dt = -delta v^2 <= 0 without forcing.
    assert np.all(np.diff(energy, axis=1) <= 1e-10)


# -- van der Pol


@pytest.mark.parametrize("mu", [0.1, 0.5])
def test_van_der_pol_amplitude_near_two(mu):
    # Averaging gives a limit cycle of amplitude 2 + O(mu) for small mu (Strogatz, Nonlinear
    # Dynamics and Chaos, section 7.6). Trajectories start inside and outside
    # the cycle and are read after 30 periods, when they have converged to it.
    problem = _problem("van_der_pol", mu=mu)
    ts = np.linspace(30.0, 32.0, 401)
    y0s = jnp.array([[0.5, 0.0], [3.0, 0.0]])
    full_ts = np.concatenate([[0.0], ts])
    ys = np.asarray(
        reference_solve(
            van_der_pol_field, y0s, jnp.asarray(full_ts), problem.field_args(), 1e-10, 1e-10
        )
    )
    amplitude = np.abs(ys[:, 1:, 0]).max(axis=1)
    np.testing.assert_allclose(amplitude, 2.0, rtol=0.01)


def test_problem_mu_sets_van_der_pol_damping():
    assert _problem("van_der_pol", mu=5.0).params["mu"] == 5.0
    assert _problem("van_der_pol", params={"mu": 5.0}).params["mu"] == 5.0
    with pytest.raises(ConfigError, match="problem.mu=3.0"):
        _problem("lorenz", mu=3.0)
    with pytest.raises(ConfigError, match="disagree"):
        _problem("van_der_pol", mu=3.0, params={"mu": 4.0})
    with pytest.raises(ConfigError, match="problem.mu=-1"):
        _problem("van_der_pol", mu=-1.0)


def test_van_der_pol_stiff_uses_implicit_reference():
    assert isinstance(_problem("van_der_pol", mu=1000.0).reference_solver(), diffrax.Kvaerno5)
    assert isinstance(_problem("van_der_pol", mu=1.0).reference_solver(), diffrax.Dopri8)


# -- stiffness check


def test_stability_bounds_match_taylor_polynomials():
    # Euler, Heun and Bosh3 advance the solution with the Taylor polynomial of exp(z) of
    # order 1, 2 and 3, whose real stability intervals are [-2, 0], [-2, 0] and about
    # [-2.5127, 0]. The grid step of stability_bound is 0.01.
    assert stability_bound("euler") == pytest.approx(2.0, abs=0.011)
    assert stability_bound("heun") == pytest.approx(2.0, abs=0.011)
    assert stability_bound("bosh3") == pytest.approx(2.5127, abs=0.011)
    assert 3.0 < stability_bound("tsit5") < 4.0


def _stiff_config(solver, adaptive, mu=1000.0):
    cfg = Config()
    cfg.problem.name = "van_der_pol"
    cfg.problem.mu = mu
    cfg.problem.t1 = 2.0
    cfg.pint.chunks = 4
    cfg.integrator.fine.solver = solver
    cfg.integrator.fine.adaptive = adaptive
    cfg.integrator.fine.steps = 64
    return cfg


@pytest.mark.parametrize("solver,adaptive", [("tsit5", False), ("dopri5", True)])
def test_stiffness_check_rejects_explicit_solver(solver, adaptive):
    cfg = _stiff_config(solver, adaptive)
    with pytest.raises(ConfigError) as err:
        check_stiffness(cfg, make_problem(cfg.problem))
    message = str(err.value)
    for part in (f"integrator.fine.solver={solver}", "mu=1000", "stiff", "kvaerno5"):
        assert part in message
    if adaptive:
        assert "integrator.fine.max_steps=4096" in message


def test_stiffness_check_accepts_suitable_solvers():
    for cfg in (_stiff_config("kvaerno5", False), _stiff_config("tsit5", False, mu=1.0)):
        check_stiffness(cfg, make_problem(cfg.problem))


# -- kuramoto


def _order_parameter_late(coupling):
    problem = _problem("kuramoto", params={"n_oscillators": 64, "coupling": coupling, "gamma": 0.5})
    ts = np.linspace(0.0, 40.0, 81)
    theta = problem.phases(jr.PRNGKey(0), 4, ts)
    # Time average over the second half, after the transient.
    return np.asarray(order_parameter(theta))[:, 40:].mean(axis=1), problem.critical_coupling


def test_kuramoto_synchronises_above_critical():
    r, critical = _order_parameter_late(10.0)
    assert critical == 1.0
    # N -> infinity gives r = sqrt(1 - K_c / K) = 0.95 at K = 10 K_c.
    assert np.all(r > 0.9)


def test_kuramoto_incoherent_below_critical():
    r, _ = _order_parameter_late(0.2)
    # Below K_c the N -> infinity order parameter is 0; 64 oscillators fluctuate at about
    # 1 / sqrt(64) = 0.125.
    assert np.all(r < 0.5)


@pytest.mark.slow
def test_kuramoto_observes_unit_circles():
    data = _problem("kuramoto", n_trajectories=8, n_obs=5).make_data(jr.PRNGKey(0))
    assert data.train.targets.shape[-1] == 8
    ys = np.asarray(data.train.targets * data.std + data.mean)
    np.testing.assert_allclose(ys[..., 0::2] ** 2 + ys[..., 1::2] ** 2, 1.0, atol=1e-12)


# -- custom


def _custom(monkeypatch, **params):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    base = {
        "field": "fitzhugh_nagumo:fitzhugh_nagumo",
        "args": [0.7, 0.8, 12.5, 0.5],
        "state_size": 2,
        "initial_low": [-2.0, -1.0],
        "initial_high": [2.0, 2.0],
    }
    return _problem("custom", n_trajectories=8, n_obs=11, t1=5.0, params={**base, **params})


def test_custom_problem_loads_from_import_path(monkeypatch):
    problem = _custom(monkeypatch)
    data = problem.make_data(jr.PRNGKey(0))
    assert problem.input_size == problem.output_size == 2
    assert data.train.targets.shape[1:] == (11, 2)
    # The problem integrates the imported function itself.
    import fitzhugh_nagumo

    assert problem.true_vector_field() is fitzhugh_nagumo.fitzhugh_nagumo
    rate = problem.true_vector_field()(0.0, jnp.array([0.3, 0.1]), problem.field_args())
    np.testing.assert_allclose(rate, [0.3 - 0.009 - 0.1 + 0.5, (0.3 + 0.7 - 0.08) / 12.5])
    # Trajectories start in the configured box.
    starts = np.asarray(problem.initial_states(jr.PRNGKey(1), 100))
    assert np.all(starts >= [-2.0, -1.0])
    assert np.all(starts <= [2.0, 2.0])


@pytest.mark.parametrize(
    "path,part",
    [
        ("no_such_module_xyz:field", "could not be imported"),
        ("fitzhugh_nagumo:no_such_field", "has no function"),
        ("fitzhugh_nagumo", "module.path:function"),
    ],
)
def test_custom_bad_import_path_error(monkeypatch, path, part):
    with pytest.raises(ConfigError, match=part) as err:
        _custom(monkeypatch, field=path)
    assert f"problem.params.field={path!r}" in str(err.value)


def test_custom_wrong_state_size_error(monkeypatch):
    with pytest.raises(ConfigError, match="initial_low"):
        _custom(monkeypatch, state_size=3)


# -- implicit solvers inside the PinT chunks


def _kvaerno_setup(method, basis):
    cfg = Config()
    cfg.problem.name = "van_der_pol"
    cfg.problem.mu = 1.0
    cfg.problem.t1 = 2.0
    cfg.problem.n_trajectories = 8
    cfg.problem.n_obs = 9
    cfg.integrator.fine.solver = "kvaerno5"
    cfg.integrator.coarse.solver = "implicit_euler"
    cfg.integrator.fine.steps = 16
    # Root-finding tolerance of the implicit stages, below the PinT tolerance of 1e-10.
    cfg.integrator.fine.rtol = cfg.integrator.fine.atol = 1e-12
    cfg.pint.name, cfg.pint.method, cfg.pint.basis, cfg.pint.chunks = method, method, basis, 4
    cfg.model.width = 8
    _, data, model, solver, _ = build(cfg)
    x, y = data.train.inputs[:3], data.train.targets[:3]
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, s):
        outputs, _ = s.predict_batch(eqx.combine(p, static), x, jr.PRNGKey(0))
        return jnp.mean((outputs - y) ** 2)

    return params, static, solver, loss, x


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(tree)])


# Slow: compiling the implicit solves with their derivatives took about 23 minutes for
# both cases on a shared 2-core machine.
@pytest.mark.slow
@pytest.mark.parametrize("method,basis", [("parareal", "none"), ("newton", "random1d")])
def test_kvaerno5_pint_and_gradients(method, basis):
    params, static, solver, loss, x = _kvaerno_setup(method, basis)
    model = eqx.combine(params, static)

    # -- forward: PinT against the sequential fixed-step Kvaerno5 solve
    predict = eqx.filter_jit(lambda s, m: s.predict_batch(m, x, jr.PRNGKey(0))[0])
    pint = predict(solver, model)
    sequential = predict(solver.with_method("sequential"), model)
    # Both iterate the same fine propagator; PinT stops at rtol = atol = 1e-10.
    assert float(jnp.max(jnp.abs(pint - sequential))) < 1e-8

    # -- reverse: implicit and unrolled gradients against the sequential one
    grad = eqx.filter_jit(jax.grad(loss))
    implicit = _flat(grad(params, solver))
    unrolled = _flat(grad(params, dataclasses.replace(solver, grad="unroll")))
    reference = _flat(grad(params, solver.with_method("sequential")))
    scale = jnp.max(jnp.abs(reference))
    # The PinT tolerance (1e-10) amplified by the flow stays far below 1e-6.
    assert float(jnp.max(jnp.abs(implicit - reference)) / scale) < 1e-6
    assert float(jnp.max(jnp.abs(unrolled - reference)) / scale) < 1e-6

    # -- central finite differences along a random direction
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(jr.PRNGKey(7), len(leaves))
    direction = treedef.unflatten(
        [jr.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )
    h = 1e-5
    value = eqx.filter_jit(loss)

    def shifted(sign):
        p = jax.tree_util.tree_map(lambda a, d: a + sign * h * d, params, direction)
        return value(p, solver)

    finite = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = jnp.dot(implicit, _flat(direction))
    # Truncation ~h^2, round-off ~1e-16/h and the root finder's residual (1e-12) divided by
    # h are all below 1e-6 relative, so 1e-4 is a safe bound.
    assert abs(float(finite - analytic)) <= 1e-4 * abs(float(analytic))


def test_reference_solve_step_limit_error():
    def decay(t, y, args):
        return -y

    ts = jnp.linspace(0.0, 1.0, 3)
    ys = reference_solve(decay, jnp.ones((2, 1)), ts, None, 1e-10, 1e-10)
    np.testing.assert_allclose(ys[:, -1, 0], np.exp(-1.0), rtol=1e-9)
    with pytest.raises(ReferenceSolveError, match="failed on 2 of 2 trajectories"):
        reference_solve(decay, jnp.ones((2, 1)), ts, None, 1e-10, 1e-10, max_steps=3)
