"""Lotka-Volterra predator-prey dynamics: x' = a x - b x y, y' = c x y - d y."""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset


def lotka_volterra_field(t, y, args):
    a, b, c, d = args
    prey, predator = y[..., 0], y[..., 1]
    return jnp.stack([a * prey - b * prey * predator, c * prey * predator - d * predator], -1)


def lotka_volterra_invariant(y, args):
    """V = c x - d ln x + b y - a ln y, constant along every exact trajectory."""
    a, b, c, d = args
    prey, predator = y[..., 0], y[..., 1]
    return c * prey - d * jnp.log(prey) + b * predator - a * jnp.log(predator)


class LotkaVolterra(Problem):
    name = "lotka_volterra"
    default_params = {"a": 1.5, "b": 1.0, "c": 1.0, "d": 3.0}
    input_size = 2
    output_size = 2
    output_names = ("prey", "predator")

    def check_params(self):
        for key, value in self.params.items():
            if not value > 0:
                raise ConfigError(f"problem.params.{key}={value} is invalid: it must be > 0.")

    def true_vector_field(self):
        return lotka_volterra_field

    def field_args(self):
        p = self.params
        return jnp.array([p["a"], p["b"], p["c"], p["d"]])

    def initial_states(self, key, n):
        """Populations drawn between 0.5 and 1.5 times the coexistence equilibrium (d/c, a/b)."""
        p = self.params
        equilibrium = jnp.array([p["d"] / p["c"], p["a"] / p["b"]])
        return equilibrium * jr.uniform(key, (n, 2), minval=0.5, maxval=1.5)

    def make_data(self, key):
        c = self.cfg
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        y0s = self.initial_states(ic_key, c.n_trajectories)
        clean = reference_solve(
            lotka_volterra_field,
            y0s,
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return trajectory_dataset(data_key, np.asarray(clean), ts, c)
