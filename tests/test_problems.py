"""Problem data generators against known properties of the true systems."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from nodepint.config import ConfigError, ProblemConfig
from nodepint.problems import REGISTRY, make_problem
from nodepint.problems.base import reference_solve
from nodepint.problems.lorenz import lorenz_field
from nodepint.problems.lotka_volterra import lotka_volterra_invariant
from nodepint.problems.lynx_hare import load_lynx_hare


def _problem(name, **kw):
    return make_problem(ProblemConfig(name=name, **kw))


def test_lotka_volterra_invariant_conserved():
    problem = _problem("lotka_volterra", t1=5.0, n_obs=51, n_trajectories=8)
    args = problem.field_args()
    y0s = problem.initial_states(jr.PRNGKey(0), 8)
    ys = reference_solve(
        problem.true_vector_field(), y0s, jnp.linspace(0, 5, 51), args, 1e-10, 1e-10
    )
    invariant = lotka_volterra_invariant(ys, args)
    drift = jnp.max(jnp.abs(invariant - invariant[:, :1]) / jnp.abs(invariant[:, :1]))
    # Dopri8 at rtol = atol = 1e-10 over ~1.5 periods keeps V to ~1e-10.
    assert float(drift) < 1e-8


def test_lorenz_equilibrium_stays_fixed():
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    c = np.sqrt(beta * (rho - 1.0))
    equilibria = jnp.array([[c, c, rho - 1.0], [-c, -c, rho - 1.0]])
    ys = reference_solve(
        lorenz_field,
        equilibria,
        jnp.linspace(0.0, 1.0, 5),
        jnp.array([sigma, rho, beta]),
        1e-10,
        1e-10,
    )
    # C+ and C- are equilibria of the Lorenz system (unstable at rho = 28, so only a short
    # span: round-off grows like exp(0.1 t) there).
    np.testing.assert_allclose(ys, jnp.broadcast_to(equilibria[:, None], ys.shape), atol=1e-9)


def test_lorenz_reference_matches_tighter_solve():
    problem = _problem("lorenz", n_trajectories=4)
    y0s = problem.initial_states(jr.PRNGKey(1), 4)
    ts = jnp.linspace(0.0, 1.0, 33)
    args = problem.field_args()
    default = reference_solve(lorenz_field, y0s, ts, args, 1e-10, 1e-10)
    tighter = reference_solve(lorenz_field, y0s, ts, args, 1e-13, 1e-13)
    # Over one time unit the error of a 1e-10 solve stays well below 1e-6 relative.
    assert float(jnp.max(jnp.abs(default - tighter)) / jnp.max(jnp.abs(tighter))) < 1e-6


def test_lorenz_initial_states_on_attractor():
    problem = _problem("lorenz", n_trajectories=16)
    y0s = np.asarray(problem.initial_states(jr.PRNGKey(2), 16))
    # The attractor lies within |x|, |y| < 30 and 0 < z < 55 for the classical parameters.
    assert np.all(np.abs(y0s[:, :2]) < 30)
    assert np.all((y0s[:, 2] > 0) & (y0s[:, 2] < 55))


@pytest.mark.parametrize("name", ["lorenz", "lotka_volterra"])
def test_split_disjoint_and_seeded(name):
    problem = _problem(name, n_trajectories=20, n_obs=5, noise=0.0)
    a = problem.make_data(jr.PRNGKey(0))
    b = problem.make_data(jr.PRNGKey(0))
    c = problem.make_data(jr.PRNGKey(1))
    np.testing.assert_array_equal(a.test.targets, b.test.targets)
    assert not np.array_equal(np.asarray(a.test.inputs), np.asarray(c.test.inputs))
    sizes = [s.inputs.shape[0] for s in (a.train, a.val, a.test)]
    assert sum(sizes) == 20
    starts = np.concatenate([np.asarray(s.inputs) for s in (a.train, a.val, a.test)])
    assert len(np.unique(starts.round(12), axis=0)) == 20
    # Without noise the input is exactly the first observation.
    np.testing.assert_array_equal(a.train.inputs, a.train.targets[:, 0])


def test_noise_level_matches_config():
    clean = _problem("lotka_volterra", n_trajectories=60, n_obs=11, noise=0.0)
    noisy = _problem("lotka_volterra", n_trajectories=60, n_obs=11, noise=0.1)
    a, b = clean.make_data(jr.PRNGKey(0)), noisy.make_data(jr.PRNGKey(0))
    residual = np.asarray(b.train.targets - a.train.targets)
    # noise = 0.1 of each coordinate's standard deviation, i.e. 0.1 in normalised units.
    assert abs(residual.std() - 0.1) < 0.01


def test_lynx_hare_file_matches_published_series():
    years, values = load_lynx_hare()
    assert years[0] == 1900
    assert years[-1] == 1920
    assert len(years) == 21
    # First record of the Hudson's Bay Company series: 30.0 thousand hares, 4.0 thousand lynx.
    np.testing.assert_allclose(values[0], [30.0, 4.0])


def test_lynx_hare_held_out_years():
    data = _problem("lynx_hare", t1=2.0, n_obs=21).make_data(jr.PRNGKey(0))
    train, val, test = (np.asarray(s.mask[0]) for s in (data.train, data.val, data.test))
    assert train[0] == 1.0  # the initial year always trains
    np.testing.assert_array_equal(train + val + test, np.ones(21))
    assert val.sum() >= 1
    assert test.sum() >= 1


def test_digits_split():
    data = _problem("digits", n_trajectories=200).make_data(jr.PRNGKey(0))
    assert data.train.inputs.shape[1] == 64
    labels = np.concatenate([np.asarray(s.targets) for s in (data.train, data.val, data.test)])
    assert len(labels) == 200
    assert set(labels) <= set(range(10))
    assert float(np.max(data.train.inputs)) <= 1.0


def test_unknown_problem_parameter_rejected():
    with pytest.raises(ConfigError, match="problem.params.gamma"):
        _problem("lorenz", params={"gamma": 1.0})


def test_registry_lists_main_problems():
    assert {"lorenz", "lotka_volterra", "lynx_hare", "digits"} <= set(REGISTRY)
