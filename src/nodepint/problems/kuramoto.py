"""The Kuramoto model of N coupled phase oscillators,

    theta_i' = omega_i + (K / N) sum_j sin(theta_j - theta_i),

with natural frequencies omega_i from a Lorentzian (Cauchy) distribution of half-width
gamma centred at 0. For N -> infinity the oscillators synchronise above the critical
coupling K_c = 2 / (pi g(0)) = 2 gamma, with order parameter r = sqrt(1 - K_c / K)
(Kuramoto 1975, Lecture Notes in Physics 39, 420; Strogatz 2000, Physica D 143, 1-20).

The neural ODE observes (cos theta_i, sin theta_i) for each oscillator. Phases taken modulo
2 pi jump at the wrap, which no smooth vector field reproduces, and unwrapped phases of
oscillators that do not lock drift without bound, out of the range of the training data.
The (cos, sin) pairs are bounded and smooth, and they determine the phases.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset


def kuramoto_field(t, theta, args):
    """Mean-field form: theta_i' = omega_i + K r sin(psi - theta_i), O(N) per call."""
    omega, coupling = args
    c, s = jnp.mean(jnp.cos(theta)), jnp.mean(jnp.sin(theta))
    return omega + coupling * (s * jnp.cos(theta) - c * jnp.sin(theta))


def lorentzian_frequencies(n: int, gamma: float) -> np.ndarray:
    """Quantiles (i - 1/2) / n of the Lorentzian of half-width `gamma`, i = 1..n.

    A deterministic sample: its empirical distribution converges to the Lorentzian, and it
    avoids the extreme frequencies that the heavy tail gives a random sample of few
    oscillators. It is symmetric about 0, so the mean phase does not drift.
    """
    quantiles = (np.arange(1, n + 1) - 0.5) / n
    return gamma * np.tan(np.pi * (quantiles - 0.5))


def order_parameter(theta):
    """r = |mean_j exp(i theta_j)| over the last axis."""
    return jnp.hypot(jnp.mean(jnp.cos(theta), -1), jnp.mean(jnp.sin(theta), -1))


def to_observations(theta):
    """(..., N) phases -> (..., 2N) observations (cos theta_1, sin theta_1, cos theta_2, ...)."""
    pairs = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    return pairs.reshape(*theta.shape[:-1], 2 * theta.shape[-1])


class Kuramoto(Problem):
    name = "kuramoto"
    default_params = {"n_oscillators": 4, "coupling": 2.0, "gamma": 0.5}
    output_size = property(lambda self: 2 * int(self.params["n_oscillators"]))
    input_size = output_size

    def check_params(self):
        n = self.params["n_oscillators"]
        if not (isinstance(n, int) and n >= 2):
            raise ConfigError(
                f"problem.params.n_oscillators={n} is invalid: it must be an integer >= 2."
            )
        for key in ("coupling", "gamma"):
            if not self.params[key] >= 0:
                raise ConfigError(
                    f"problem.params.{key}={self.params[key]} is invalid: it must be >= 0."
                )

    @property
    def output_names(self):
        n = int(self.params["n_oscillators"])
        return tuple(f"{f}(theta_{i + 1})" for i in range(n) for f in ("cos", "sin"))

    @property
    def critical_coupling(self) -> float:
        """K_c = 2 gamma, for the Lorentzian frequency distribution as N -> infinity."""
        return 2.0 * float(self.params["gamma"])

    def describe(self):
        p = self.params
        return (
            f"kuramoto with {p['n_oscillators']} oscillators, coupling {p['coupling']:g} "
            f"(critical {self.critical_coupling:g})"
        )

    def field_args(self):
        p = self.params
        omega = lorentzian_frequencies(int(p["n_oscillators"]), float(p["gamma"]))
        return (jnp.asarray(omega), jnp.asarray(float(p["coupling"])))

    def initial_states(self, key, n):
        """Phases uniform in [0, 2 pi)."""
        return jr.uniform(key, (n, int(self.params["n_oscillators"])), maxval=2 * jnp.pi)

    def phases(self, key, n, ts):
        """Phase trajectories (n, times, N) from a Dopri8 reference solve."""
        c = self.cfg
        return reference_solve(
            kuramoto_field,
            self.initial_states(key, n),
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )

    def make_data(self, key):
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        theta = self.phases(ic_key, self.cfg.n_trajectories, ts)
        return trajectory_dataset(data_key, np.asarray(to_observations(theta)), ts, self.cfg)
