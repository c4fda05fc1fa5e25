"""The 1-D heat equation u_t = kappa u_xx + f(t, x) on a periodic interval [0, L).

Method of lines: u is sampled at N equally spaced points x_i = i L / N (periodic boundary,
so u_N = u_0 and there is no boundary value to prescribe), and u_xx is replaced by the
second-order central difference (u_{i+1} - 2 u_i + u_{i-1}) / dx^2. The distributed source
f is an explicit argument of the vector field, so that a controller can drive it. For data
generation it is the fixed field f(x) = source_amplitude * sin(source_mode * 2 pi x / L).

Accuracy of the semi-discretisation: the Fourier mode exp(i k x) is an eigenvector of the
difference operator with eigenvalue -kappa (4 / dx^2) sin^2(k dx / 2)
= -kappa k^2 (1 - (k dx)^2 / 12 + O((k dx)^4)), so its decay rate has relative error
about (k dx)^2 / 12 against the exact rate kappa k^2.

The neural ODE does not see the grid: its state is the field's coordinates in a reduced
basis of `model.latent_size` vectors, chosen by `problem.params.basis` (see
`nodepint.problems.reduced_basis`). Inputs and outputs stay the whole grid field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, Split, reference_solve, trajectory_dataset
from nodepint.problems.reduced_basis import check_basis_params, snapshot_basis

MIN_GRID_POINTS, MAX_GRID_POINTS = 64, 256


class HeatArgs(NamedTuple):
    """Arguments of `heat_field`: diffusivity, grid spacing and the distributed source."""

    kappa: float
    dx: float
    # The source f on the grid: an array (points,) held constant in time, or a function
    # t -> array (points,), for instance a control signal.
    source: Float[Array, " points"] | Callable[[float], Float[Array, " points"]]


def laplacian(u: Float[Array, "... points"], dx: float) -> Float[Array, "... points"]:
    """Second-order central difference of u_xx on a periodic grid of spacing dx."""
    return (jnp.roll(u, -1, axis=-1) - 2.0 * u + jnp.roll(u, 1, axis=-1)) / dx**2


def heat_field(t, u: Float[Array, " points"], args: HeatArgs) -> Float[Array, " points"]:
    """du/dt = kappa u_xx + f(t, x) on the grid, in diffrax's f(t, y, args) form."""
    source = args.source(t) if callable(args.source) else args.source
    return args.kappa * laplacian(u, args.dx) + source


def discrete_decay_rate(kappa: float, wavenumber: float, dx: float) -> float:
    """Decay rate of the Fourier mode of `wavenumber` under the semi-discrete heat equation."""
    return kappa * 4.0 / dx**2 * np.sin(wavenumber * dx / 2.0) ** 2


class Heat(Problem):
    name = "heat"
    default_params = {
        "grid_points": 64,
        "length": 2.0 * np.pi,
        "kappa": 0.1,
        # Initial conditions: a constant plus Fourier modes 1..modes with Gaussian
        # coefficients scaled by 1/wavenumber, so they are smooth.
        "modes": 3,
        "source_amplitude": 0.0,
        "source_mode": 1,
        # Reduced basis of the neural ODE's state: pod, random or learned.
        "basis": "pod",
    }

    def check_params(self):
        p = self.params
        n = p["grid_points"]
        if not (isinstance(n, int) and MIN_GRID_POINTS <= n <= MAX_GRID_POINTS):
            raise ConfigError(
                f"problem.params.grid_points={n!r} is invalid: it must be an integer from "
                f"{MIN_GRID_POINTS} to {MAX_GRID_POINTS}."
            )
        for key in ("length", "kappa"):
            if not p[key] > 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be > 0.")
        for key in ("modes", "source_mode"):
            if not (isinstance(p[key], int) and 1 <= p[key] < n // 2):
                raise ConfigError(
                    f"problem.params.{key}={p[key]!r} is invalid: it must be an integer from 1 "
                    f"to {n // 2 - 1} (below the grid's Nyquist wavenumber)."
                )
        check_basis_params(p["basis"], n)

    @property
    def input_size(self) -> int:
        return self.params["grid_points"]

    @property
    def output_size(self) -> int:
        return self.params["grid_points"]

    @property
    def dx(self) -> float:
        return self.params["length"] / self.params["grid_points"]

    def grid(self) -> np.ndarray:
        return np.arange(self.params["grid_points"]) * self.dx

    def wavenumber(self, mode: int) -> float:
        """Angular wavenumber 2 pi mode / L of the Fourier mode number `mode`."""
        return 2.0 * np.pi * mode / self.params["length"]

    def true_vector_field(self):
        return heat_field

    def field_args(self, source=None) -> HeatArgs:
        """`HeatArgs` with the configured fixed source, or with `source` when given."""
        p = self.params
        if source is None:
            shape = np.sin(self.wavenumber(p["source_mode"]) * self.grid())
            source = jnp.asarray(p["source_amplitude"] * shape)
        return HeatArgs(p["kappa"], self.dx, source)

    def initial_states(self, key: PRNGKeyArray, n: int) -> Float[Array, "batch points"]:
        """Random smooth fields: c + sum_k (a_k cos(k x) + b_k sin(k x)) / k, Gaussian c, a, b."""
        modes = self.params["modes"]
        coefficients = np.asarray(jr.normal(key, (n, 2 * modes + 1)))
        x = self.grid()
        fields = np.repeat(coefficients[:, :1], x.size, axis=1)
        for m in range(1, modes + 1):
            k = self.wavenumber(m)
            fields += (
                coefficients[:, 2 * m - 1, None] * np.cos(k * x)
                + coefficients[:, 2 * m, None] * np.sin(k * x)
            ) / m
        return jnp.asarray(fields)

    def make_data(self, key):
        c = self.cfg
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        y0s = self.initial_states(ic_key, c.n_trajectories)
        clean = reference_solve(
            heat_field,
            y0s,
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )
        return trajectory_dataset(data_key, np.asarray(clean), ts, c, field=True)

    def check_reduced_basis(self, rank: int) -> None:
        check_basis_params(self.params["basis"], self.output_size, rank)

    def reduced_basis(self, train: Split, rank: int, key: PRNGKeyArray):
        snapshots = np.asarray(train.targets).reshape(-1, self.output_size)
        return snapshot_basis(self.params["basis"], snapshots, rank, key)
