"""A damped pendulum driven by a bounded torque: swing-up from hanging down to upright.

    theta' = omega,    omega' = -(g / l) sin(theta) - damping * omega + u / (m l^2)

with theta = 0 hanging down and theta = pi upright. The default torque bound 0.5 is half of
m g l = 1, so the pendulum cannot be lifted directly and has to be swung up by pumping.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, controlled_reference_solve, trajectory_dataset


def pendulum_field(t, y, u, args):
    gravity, length, mass, damping = args[0], args[1], args[2], args[3]
    theta, omega = y[..., 0], y[..., 1]
    torque = u[..., 0]
    accel = -(gravity / length) * jnp.sin(theta) - damping * omega
    accel = accel + torque / (mass * length**2)
    return jnp.stack([omega, accel], axis=-1)


def pendulum_energy(y, args):
    """E = m l^2 omega^2 / 2 - m g l cos(theta), constant when damping = 0 and u = 0."""
    gravity, length, mass = args[0], args[1], args[2]
    theta, omega = y[..., 0], y[..., 1]
    return 0.5 * mass * length**2 * omega**2 - mass * gravity * length * jnp.cos(theta)


class Pendulum(Problem):
    name = "pendulum"
    default_params = {
        "gravity": 1.0,
        "length": 1.0,
        "mass": 1.0,
        "damping": 0.05,
        # Torque bound |u| <= torque_max.
        "torque_max": 0.5,
        # Target angle of the swing-up (pi: upright).
        "target_angle": float(np.pi),
        # Running cost L = state_weight (1 - cos(theta - target)) + control_weight u^2 and
        # terminal cost Phi = terminal_weight ((1 - cos(theta - target)) + omega^2 / 2).
        # The running misalignment dominates on purpose: an open-loop swing-up ends near an
        # unstable equilibrium, so a heavy terminal cost makes J hypersensitive to the
        # control and to model error.
        "state_weight": 1.0,
        "control_weight": 0.1,
        "terminal_weight": 1.0,
    }
    input_size = 2
    output_size = 2
    output_names = ("theta", "omega")
    control_size = 1
    signal_intervals = 8

    def check_params(self):
        p = self.params
        for key in ("gravity", "length", "mass", "torque_max"):
            if not p[key] > 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be > 0.")
        for key in ("damping", "state_weight", "control_weight", "terminal_weight"):
            if p[key] < 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be >= 0.")

    def field_args(self):
        p = self.params
        return jnp.array([p["gravity"], p["length"], p["mass"], p["damping"]])

    def true_controlled_field(self, t, y, u, args):
        return pendulum_field(t, y, u, args)

    def control_bound(self) -> float:
        return float(self.params["torque_max"])

    def control_initial_state(self) -> np.ndarray:
        return np.array([0.0, 0.0])

    def running_cost(self, y, u):
        p = self.params
        misalignment = 1.0 - jnp.cos(y[0] - p["target_angle"])
        return p["state_weight"] * misalignment + p["control_weight"] * jnp.sum(u**2)

    def terminal_cost(self, y):
        p = self.params
        misalignment = 1.0 - jnp.cos(y[0] - p["target_angle"])
        return p["terminal_weight"] * (misalignment + 0.5 * y[1] ** 2)

    def initial_states(self, key, n):
        """Draw angles uniform on [-pi, pi] and angular velocities uniform on [-2.5, 2.5].

        The velocity range covers the swing-up at the default parameters, whose reference
        solution peaks near |omega| = 2.1, so the training data contain the control
        response along it.
        """
        angle_key, velocity_key = jr.split(key)
        theta = jr.uniform(angle_key, (n,), minval=-np.pi, maxval=np.pi)
        omega = jr.uniform(velocity_key, (n,), minval=-2.5, maxval=2.5)
        return jnp.stack([theta, omega], axis=-1)

    def random_signals(self, key, n):
        """Torques uniform on [-torque_max, torque_max], piecewise constant."""
        bound = self.control_bound()
        shape = (n, self.signal_intervals, self.control_size)
        return jr.uniform(key, shape, minval=-bound, maxval=bound)

    def make_data(self, key):
        c = self.cfg
        ic_key, signal_key, data_key = jr.split(key, 3)
        ts = self.observation_times()
        y0s = self.initial_states(ic_key, c.n_trajectories)
        signals = self.random_signals(signal_key, c.n_trajectories)
        clean = controlled_reference_solve(
            pendulum_field,
            y0s,
            signals,
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return trajectory_dataset(data_key, np.asarray(clean), ts, c, np.asarray(signals))
