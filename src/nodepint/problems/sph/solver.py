"""Weakly compressible SPH in two dimensions, written in JAX.

Discretisation (all sums run over neighbours j within the kernel support 2h):

- kernel: Wendland C2, W(r, h) = 7 / (4 pi h^2) (1 - q/2)^4 (2q + 1), q = r / h < 2
  (H. Wendland, Adv. Comput. Math. 4 (1995) 389; normalised so that its integral over the
  plane is 1);
- density: continuity equation d rho_i/dt = sum_j m_j (v_i - v_j) . grad_i W_ij;
- pressure: Tait equation of state p = B ((rho / rho0)^gamma - 1) + p_background,
  B = rho0 c0^2 / gamma, gamma = 7; the speed of sound c0 is chosen about ten times the
  largest flow speed, which keeps density variations near 1 % (weak compressibility);
- momentum: the symmetric pressure gradient
  -sum_j m_j (p_i / rho_i^2 + p_j / rho_j^2) grad_i W_ij, plus gravity;
- viscosity: the laminar term of J. P. Morris, P. J. Fox and Y. Zhu, J. Comput. Phys. 136
  (1997) 214, sum_j m_j (mu_i + mu_j) r_ij . grad_i W_ij / (rho_i rho_j (r_ij^2 + eta^2))
  v_ij with mu = rho nu and eta = 0.01 h, which approximates nu times the Laplacian of v;
  optionally also Monaghan's artificial viscosity (J. J. Monaghan, Annu. Rev. Astron.
  Astrophys. 30 (1992) 543) with coefficient `alpha`, for the dam break;
- neighbours: all pairs, masked by the kernel's compact support. This is vectorised but
  takes O(n^2) memory and work; the scenes here use up to about 600 particles. In a
  periodic box the distance vectors use the minimum-image convention, which needs a box
  side of at least 4h;
- walls: fixed boundary particles (the "dynamic boundary" of Crespo, Gomez-Gesteira and
  Dalrymple 2007): they carry density and pressure through the same equations but do not
  move.

The right-hand side is an ordinary vector field f(t, state, params). Time integration is
diffrax's Tsit5 with a constant step from the acoustic CFL condition (see `stable_step`).
"""

from __future__ import annotations

from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float


class ParticleState(NamedTuple):
    positions: Float[Array, "particles 2"]
    velocities: Float[Array, "particles 2"]
    densities: Float[Array, " particles"]


class SPHParams(eqx.Module):
    """Physical and numerical constants of one SPH system."""

    mass: float
    smoothing_length: float
    rest_density: float
    sound_speed: float
    viscosity: float  # kinematic viscosity nu of the Morris term
    # Monaghan artificial viscosity coefficient, 0 for none. It is static because it
    # selects code paths.
    alpha: float = eqx.field(static=True)
    gravity: Float[Array, " 2"]  # noqa: F821 - jaxtyping axis size, not a name
    box: Float[Array, " 2"]
    # Mask of the moving (fluid) particles; the others are fixed wall particles.
    moving: Bool[Array, " particles"]
    background_pressure: float = 0.0
    # Coefficient delta of the density diffusion term of delta-SPH; 0 turns it off.
    density_diffusion: float = eqx.field(static=True, default=0.0)
    gamma: float = eqx.field(static=True, default=7.0)
    periodic: bool = eqx.field(static=True, default=True)


def wendland_c2(r: Array, h: float) -> Array:
    """Wendland C2 kernel in two dimensions, support radius 2h."""
    q = r / h
    shape = jnp.where(q < 2.0, (1.0 - 0.5 * q) ** 4 * (2.0 * q + 1.0), 0.0)
    return 7.0 / (4.0 * jnp.pi * h**2) * shape


def wendland_c2_gradient_factor(r: Array, h: float) -> Array:
    """F(r) with grad_i W(|r_ij|) = F(r) r_ij: dW/dr / r = -5 alpha_D (1 - q/2)^3 / h^2.

    Written without the division by r, so it stays finite for coincident particles.
    """
    q = r / h
    shape = jnp.where(q < 2.0, (1.0 - 0.5 * q) ** 3, 0.0)
    return -5.0 * 7.0 / (4.0 * jnp.pi * h**2) * shape / h**2


def tait_pressure(density: Array, params: SPHParams) -> Array:
    b = params.rest_density * params.sound_speed**2 / params.gamma
    ratio = density / params.rest_density
    return b * (ratio**params.gamma - 1.0) + params.background_pressure


def tait_density(pressure: Array, params: SPHParams) -> Array:
    """Inverse of `tait_pressure`: the density that has `pressure`."""
    b = params.rest_density * params.sound_speed**2 / params.gamma
    excess = (pressure - params.background_pressure) / b
    return params.rest_density * (excess + 1.0) ** (1.0 / params.gamma)


def pair_vectors(positions: Array, params: SPHParams) -> Array:
    """r_ij = x_i - x_j for all pairs (particles, particles, 2), minimum image if periodic."""
    r = positions[:, None, :] - positions[None, :, :]
    if params.periodic:
        r = r - params.box * jnp.round(r / params.box)
    return r


def sph_field(t, state: ParticleState, params: SPHParams) -> ParticleState:
    """Time derivative of positions, velocities and densities, in diffrax's f(t, y, args)."""
    x, v, rho = state
    h = params.smoothing_length
    m = params.mass

    # -- pair geometry; the self pair has r_ij = 0 and contributes nothing below.
    r = pair_vectors(x, params)
    dist2 = jnp.sum(r**2, axis=-1)
    dist = jnp.sqrt(dist2 + 1e-300)  # the tiny shift keeps the gradient of sqrt finite at 0
    grad_w = wendland_c2_gradient_factor(dist, h)[..., None] * r  # grad_i W_ij
    v_ij = v[:, None, :] - v[None, :, :]

    # -- continuity
    drho = m * jnp.sum(jnp.sum(v_ij * grad_w, axis=-1), axis=1)
    eta2 = (0.01 * h) ** 2
    if params.density_diffusion:
        # delta-SPH density diffusion (Molteni and Colagrossi, Comput. Phys. Commun. 180
        # (2009) 861): delta h c0 sum_j m_j / rho_j psi_ij . grad_i W_ij with
        # psi_ij = 2 (rho_j - rho_i) (x_j - x_i) / (r_ij^2 + eta^2). It damps the spurious
        # high-frequency density noise of the continuity equation. Here r = x_i - x_j,
        # hence the minus sign.
        psi = 2.0 * (rho[None, :] - rho[:, None]) / (dist2 + eta2)
        diffusion = -jnp.sum(psi * jnp.sum(r * grad_w, axis=-1) / rho[None, :], axis=1)
        drho = drho + params.density_diffusion * h * params.sound_speed * m * diffusion

    # -- pressure gradient
    p = tait_pressure(rho, params)
    p_over_rho2 = p / rho**2
    pressure_term = (p_over_rho2[:, None] + p_over_rho2[None, :])[..., None] * grad_w
    accel = -m * jnp.sum(pressure_term, axis=1)

    # -- laminar viscosity (Morris et al. 1997)
    mu = rho * params.viscosity
    r_dot_grad = jnp.sum(r * grad_w, axis=-1)
    weight = (mu[:, None] + mu[None, :]) * r_dot_grad / (rho[:, None] * rho[None, :])
    weight = weight / (dist2 + eta2)
    accel = accel + m * jnp.sum(weight[..., None] * v_ij, axis=1)

    # -- artificial viscosity (Monaghan 1992), only for approaching pairs
    if params.alpha:
        v_dot_r = jnp.sum(v_ij * r, axis=-1)
        mu_ij = h * v_dot_r / (dist2 + eta2)
        rho_mean = 0.5 * (rho[:, None] + rho[None, :])
        pi_ij = jnp.where(v_dot_r < 0.0, -params.alpha * params.sound_speed * mu_ij / rho_mean, 0)
        accel = accel - m * jnp.sum(pi_ij[..., None] * grad_w, axis=1)

    # -- gravity; wall particles neither move nor accelerate
    accel = accel + params.gravity
    moving = params.moving[:, None]
    return ParticleState(
        jnp.where(moving, v, 0.0),
        jnp.where(moving, accel, 0.0),
        drho,
    )


def stable_step(params: SPHParams, max_speed: float, cfl: float = 0.25) -> float:
    """Constant time step: min of the acoustic CFL and viscous limits (Morris et al. 1997).

    dt <= cfl h / (c0 + max_speed) and dt <= 0.125 h^2 / nu.
    """
    h = params.smoothing_length
    dt = cfl * h / (params.sound_speed + max_speed)
    if params.viscosity > 0:
        dt = min(dt, 0.125 * h**2 / params.viscosity)
    return float(dt)


def simulate(states: ParticleState, params: SPHParams, ts: np.ndarray, dt: float) -> ParticleState:
    """Integrate a batch of initial `states` (leading axis batch) and save them at `ts`.

    Returns states with axes (batch, times, ...). Positions are wrapped into the box when
    it is periodic. `ts` must be concrete (NumPy): it fixes the number of steps.
    """
    ts = np.asarray(ts, dtype=float)
    steps = int(np.ceil((ts[-1] - ts[0]) / dt))
    return _simulate(states, params, jnp.asarray(ts), float(ts[-1] - ts[0]), steps)


@eqx.filter_jit
def _simulate(states, params, ts, span, steps):
    def one(state):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(sph_field),
            diffrax.Tsit5(),
            ts[0],
            ts[-1],
            span / steps,
            state,
            args=params,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=steps + 1,
        ).ys

    out = jax.vmap(one)(states)
    if params.periodic:
        out = out._replace(positions=jnp.mod(out.positions, params.box))
    return out


def kinetic_energy(state: ParticleState, params: SPHParams) -> Array:
    """Kinetic energy of the moving particles, 0.5 sum_i m |v_i|^2 (any leading axes)."""
    speed2 = jnp.sum(state.velocities**2, axis=-1)
    return 0.5 * params.mass * jnp.sum(jnp.where(params.moving, speed2, 0.0), axis=-1)
