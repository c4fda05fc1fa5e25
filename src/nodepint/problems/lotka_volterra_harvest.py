"""Lotka-Volterra dynamics with a controlled harvesting effort u on the prey:

    x' = a x - b x y - u x,    y' = c x y - d y.

A positive u harvests prey and a negative u restocks them; |u| <= effort_max. The
optimal-control task steers the populations from an initial state away from the
coexistence equilibrium (d/c, a/b) towards it.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, controlled_reference_solve, trajectory_dataset


def harvest_field(t, y, u, args):
    a, b, c, d = args[0], args[1], args[2], args[3]
    prey, predator = y[..., 0], y[..., 1]
    effort = u[..., 0]
    return jnp.stack(
        [a * prey - b * prey * predator - effort * prey, c * prey * predator - d * predator],
        axis=-1,
    )


class LotkaVolterraHarvest(Problem):
    name = "lotka_volterra_harvest"
    default_params = {
        "a": 1.5,
        "b": 1.0,
        "c": 1.0,
        "d": 3.0,
        "effort_max": 0.5,
        # Initial populations of the control task, as fractions of the equilibrium.
        "start_prey": 0.5,
        "start_predator": 1.5,
        # L = state_weight |y - y_eq|^2 + control_weight u^2, Phi = terminal_weight |y - y_eq|^2.
        "state_weight": 1.0,
        "control_weight": 0.1,
        "terminal_weight": 1.0,
    }
    input_size = 2
    output_size = 2
    output_names = ("prey", "predator")
    control_size = 1
    signal_intervals = 10

    def check_params(self):
        p = self.params
        for key in ("a", "b", "c", "d", "effort_max", "start_prey", "start_predator"):
            if not p[key] > 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be > 0.")
        for key in ("state_weight", "control_weight", "terminal_weight"):
            if p[key] < 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be >= 0.")

    def field_args(self):
        p = self.params
        return jnp.array([p["a"], p["b"], p["c"], p["d"]])

    def equilibrium(self) -> np.ndarray:
        p = self.params
        return np.array([p["d"] / p["c"], p["a"] / p["b"]])

    def true_controlled_field(self, t, y, u, args):
        return harvest_field(t, y, u, args)

    def control_bound(self) -> float:
        return float(self.params["effort_max"])

    def control_initial_state(self) -> np.ndarray:
        p = self.params
        return self.equilibrium() * np.array([p["start_prey"], p["start_predator"]])

    def running_cost(self, y, u):
        p = self.params
        distance = jnp.sum((y - jnp.asarray(self.equilibrium())) ** 2)
        return p["state_weight"] * distance + p["control_weight"] * jnp.sum(u**2)

    def terminal_cost(self, y):
        distance = jnp.sum((y - jnp.asarray(self.equilibrium())) ** 2)
        return self.params["terminal_weight"] * distance

    def make_data(self, key):
        c = self.cfg
        ic_key, signal_key, data_key = jr.split(key, 3)
        ts = self.observation_times()
        # Populations between 0.4 and 1.6 times the equilibrium, which contains the control
        # task's initial state at the default parameters.
        y0s = jnp.asarray(self.equilibrium()) * jr.uniform(
            ic_key, (c.n_trajectories, 2), minval=0.4, maxval=1.6
        )
        bound = self.control_bound()
        signals = jr.uniform(
            signal_key,
            (c.n_trajectories, self.signal_intervals, self.control_size),
            minval=-bound,
            maxval=bound,
        )
        clean = controlled_reference_solve(
            harvest_field,
            y0s,
            signals,
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return trajectory_dataset(data_key, np.asarray(clean), ts, c, np.asarray(signals))
