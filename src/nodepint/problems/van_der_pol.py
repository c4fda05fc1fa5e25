"""The van der Pol oscillator x'' - mu (1 - x^2) x' + x = 0, stiff when mu is large.

The state is (x, w) in Lienard's coordinates, w = mu (x - x^3/3) - x', so that

    dx/dt = mu (x - x^3/3) - w,    dw/dt = x.

Unlike (x, x'), both coordinates stay bounded relative to their range when mu is large
(x' reaches about mu during the fast jumps of the relaxation oscillation), and the form
is regular at mu = 0, where it is the harmonic oscillator.

Time is rescaled, s = t / T, with T an estimate of the limit-cycle period: 2 pi for small
mu and (3 - 2 ln 2) mu, the leading term of the relaxation-oscillation period, for large
mu (the standard relaxation-oscillation estimate, derived in Strogatz, Nonlinear Dynamics
and Chaos, section 7.5). One time unit of the
problem is then about one period for every mu, so one span and one set of observation
times suit mu = 1 and mu = 1000 alike. The stiffness ratio does not change with the time
unit: at mu = 1000 the jumps take about 1e-6 time units against a period of about one.
"""

from __future__ import annotations

import math

import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset

# Above this mu the reference solve switches from Dopri8 to the implicit Kvaerno5. At
# mu = 10 the fast and slow time scales differ by about mu^2 = 100, where an explicit
# solver at rtol = 1e-10 still takes accuracy-limited steps.
STIFF_MU = 10.0


def van_der_pol_field(t, y, args):
    """Lienard form in rescaled time: dy/ds = T (mu (x - x^3/3) - w, x)."""
    mu, time_scale = args[0], args[1]
    x, w = y[..., 0], y[..., 1]
    return time_scale * jnp.stack([mu * (x - x**3 / 3.0) - w, x], axis=-1)


def period_estimate(mu: float) -> float:
    """Estimated limit-cycle period in the original time t (see the module docstring)."""
    return max(2.0 * math.pi, (3.0 - 2.0 * math.log(2.0)) * mu)


class VanDerPol(Problem):
    name = "van_der_pol"
    # time_scale None means period_estimate(mu).
    default_params = {"mu": 1.0, "time_scale": None}
    input_size = 2
    output_size = 2
    output_names = ("x", "w = mu (x - x^3/3) - dx/dt")

    def check_params(self):
        mu, time_scale = self.params["mu"], self.params["time_scale"]
        if not isinstance(mu, int | float) or mu < 0:
            raise ConfigError(
                f"problem.mu={mu} is invalid: the damping mu of van_der_pol must be a number >= 0."
            )
        if time_scale is not None and not time_scale > 0:
            raise ConfigError(
                f"problem.params.time_scale={time_scale} is invalid: it must be > 0, or null "
                "for the estimated limit-cycle period."
            )

    @property
    def time_scale(self) -> float:
        scale = self.params["time_scale"]
        return float(scale) if scale is not None else period_estimate(float(self.params["mu"]))

    @property
    def stiff(self) -> bool:
        return float(self.params["mu"]) > STIFF_MU

    def describe(self):
        return f"van_der_pol with mu={self.params['mu']:g}"

    def true_vector_field(self):
        return van_der_pol_field

    def field_args(self):
        return jnp.array([float(self.params["mu"]), self.time_scale])

    def w_range(self) -> float:
        # On the limit cycle w spans about mu (x - x^3/3) at x = +-1, that is +-2 mu / 3.
        return max(2.0, 2.0 * float(self.params["mu"]) / 3.0)

    def initial_states(self, key, n):
        """x uniform in [-2, 2], w uniform in [-w_range, w_range]."""
        unit = jr.uniform(key, (n, 2), minval=-1.0, maxval=1.0)
        return unit * jnp.array([2.0, self.w_range()])

    def stiffness_probe_states(self):
        # The Jacobian [[T mu (1 - x^2), -T], [T, 0]] does not depend on w, and its spectral
        # radius is largest at the edge of the initial range, x = +-2, which the
        # trajectories visit (the limit cycle reaches |x| = 2 for every mu).
        x = np.linspace(-2.0, 2.0, 9)
        return np.stack([x, np.zeros_like(x)], axis=-1)

    def reference_solver(self) -> diffrax.AbstractSolver:
        if not self.stiff:
            return diffrax.Dopri8()
        # Newton, not diffrax's default chord method, for the stage equations. On 64
        # trajectories at mu = 1000 and rtol = atol = 1e-8, the chord method took a median of
        # 4e4 steps and one trajectory ran past 2e5; Newton took at most 928.
        c = self.cfg
        return diffrax.Kvaerno5(
            root_finder=optx.Newton(rtol=c.reference_rtol, atol=c.reference_atol)
        )

    def trajectories(self, key, n, ts):
        """Clean trajectories (n, times, 2) from a reference solve."""
        c = self.cfg
        return reference_solve(
            van_der_pol_field,
            self.initial_states(key, n),
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
            solver=self.reference_solver(),
            # PI coefficients within the range that diffrax 0.7's PIDController docstring
            # suggests for mildly stiff problems.
            pcoeff=0.3 if self.stiff else 0.0,
            icoeff=0.4 if self.stiff else 1.0,
        )

    def make_data(self, key):
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        clean = self.trajectories(ic_key, self.cfg.n_trajectories, ts)
        return trajectory_dataset(data_key, np.asarray(clean), ts, self.cfg)
