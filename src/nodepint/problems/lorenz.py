"""The Lorenz system, chaotic at the classical parameters sigma=10, rho=28, beta=8/3."""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset


def lorenz_field(t, y, args):
    sigma, rho, beta = args
    x, v, z = y[..., 0], y[..., 1], y[..., 2]
    return jnp.stack([sigma * (v - x), x * (rho - z) - v, x * v - beta * z], axis=-1)


class Lorenz(Problem):
    name = "lorenz"
    default_params = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0, "burn_in": 20.0}

    def check_params(self):
        for key in ("sigma", "beta", "burn_in"):
            if not self.params[key] > 0:
                raise ConfigError(
                    f"problem.params.{key}={self.params[key]} is invalid: it must be > 0."
                )

    input_size = 3
    output_size = 3
    output_names = ("x", "y", "z")

    def true_vector_field(self):
        return lorenz_field

    def field_args(self):
        p = self.params
        return jnp.array([p["sigma"], p["rho"], p["beta"]])

    def initial_states(self, key, n):
        """States on the attractor: points of one long trajectory after a burn-in."""
        c = self.cfg
        burn_in = self.params["burn_in"]
        # Sample times far apart relative to the largest Lyapunov exponent (about 0.9), so
        # the initial states are close to independent draws from the attractor.
        times = np.sort(burn_in + np.asarray(jr.uniform(key, (n,))) * 10.0 * n)
        times = np.concatenate([[0.0], times])
        start = jnp.array([1.0, 1.0, 1.0])
        ys = reference_solve(
            lorenz_field,
            start[None],
            jnp.asarray(times),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return ys[0, 1:]

    def make_data(self, key):
        c = self.cfg
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        y0s = self.initial_states(ic_key, c.n_trajectories)
        clean = reference_solve(
            lorenz_field,
            y0s,
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return trajectory_dataset(data_key, np.asarray(clean), ts, c)
