"""The Duffing oscillator x'' + delta x' + alpha x + beta x^3 = gamma cos(omega t).

State (x, v) with v = x'. Without damping and forcing (delta = gamma = 0) the energy
E = v^2/2 + alpha x^2/2 + beta x^4/4 is conserved. The defaults (alpha = -1, beta = 1,
delta = 0.2, gamma = 0) give a damped double well whose trajectories settle into one of
the wells at x = +-1.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset


def duffing_field(t, y, args):
    delta, alpha, beta, gamma, omega = args
    x, v = y[..., 0], y[..., 1]
    force = gamma * jnp.cos(omega * t)
    return jnp.stack([v, force - delta * v - alpha * x - beta * x**3], axis=-1)


def duffing_energy(y, args):
    """E = v^2/2 + alpha x^2/2 + beta x^4/4, conserved when delta = gamma = 0."""
    _, alpha, beta, _, _ = args
    x, v = y[..., 0], y[..., 1]
    return v**2 / 2 + alpha * x**2 / 2 + beta * x**4 / 4


class Duffing(Problem):
    """Forced trajectories (gamma != 0) need `model.time_dependent=true`, because the
    forcing phase depends on t and every trajectory starts at t0."""

    name = "duffing"
    default_params = {"delta": 0.2, "alpha": -1.0, "beta": 1.0, "gamma": 0.0, "omega": 1.2}
    input_size = 2
    output_size = 2
    output_names = ("x", "v")

    def check_params(self):
        p = self.params
        for key in ("delta", "beta", "gamma", "omega"):
            if not p[key] >= 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be >= 0.")

    def true_vector_field(self):
        return duffing_field

    def field_args(self):
        p = self.params
        return jnp.array([p["delta"], p["alpha"], p["beta"], p["gamma"], p["omega"]])

    def initial_states(self, key, n):
        """x uniform in [-1.5, 1.5], v uniform in [-1, 1]."""
        return jr.uniform(key, (n, 2), minval=-1.0, maxval=1.0) * jnp.array([1.5, 1.0])

    def trajectories(self, key, n, ts):
        """Clean trajectories (n, times, 2) from a Dopri8 reference solve."""
        c = self.cfg
        return reference_solve(
            duffing_field,
            self.initial_states(key, n),
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )

    def make_data(self, key):
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        clean = self.trajectories(ic_key, self.cfg.n_trajectories, ts)
        return trajectory_dataset(data_key, np.asarray(clean), ts, self.cfg)
