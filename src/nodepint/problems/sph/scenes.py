"""Initial particle states of the generated SPH scenes: Taylor-Green vortex and dam break.

Both use nondimensional units with rest density 1. Each scene returns the particle
parameters (`SPHParams`) shared by all its trajectories and a batch of initial states.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from nodepint.problems.sph.solver import ParticleState, SPHParams, tait_density

# Ratio of the speed of sound to the largest flow speed: Mach 0.1 keeps the density within
# about 1 % of rest (density variation ~ Mach^2), the usual weakly compressible choice.
SOUND_SPEED_RATIO = 10.0


def lattice(nx: int, ny: int, dx: float, origin=(0.0, 0.0)) -> np.ndarray:
    """Cell-centred square lattice of nx * ny points with spacing dx, shape (nx * ny, 2)."""
    x = origin[0] + (np.arange(nx) + 0.5) * dx
    y = origin[1] + (np.arange(ny) + 0.5) * dx
    gx, gy = np.meshgrid(x, y, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def taylor_green_velocity(positions, amplitude, shift, wavenumber):
    """u = -U cos(k(x - x0)) sin(k(y - y0)), v = U sin(k(x - x0)) cos(k(y - y0))."""
    x = wavenumber * (positions[..., 0] - shift[..., None, 0])
    y = wavenumber * (positions[..., 1] - shift[..., None, 1])
    u = -amplitude[..., None] * jnp.cos(x) * jnp.sin(y)
    v = amplitude[..., None] * jnp.sin(x) * jnp.cos(y)
    return jnp.stack([u, v], axis=-1)


def taylor_green(
    key: PRNGKeyArray,
    n: int,
    particles_per_side: int,
    viscosity: float,
    smoothing_ratio: float,
    amplitude_range: tuple[float, float] = (0.5, 1.0),
    background_pressure: float = 0.0,
    density_diffusion: float = 0.0,
) -> tuple[SPHParams, ParticleState, dict]:
    """Taylor-Green vortices in the periodic unit box with random amplitude and phase.

    The vortex has one period per box side (k = 2 pi) and decays as exp(-2 nu k^2 t) in
    velocity. Each trajectory draws its amplitude U from `amplitude_range` and a shift
    (x0, y0) uniform in the box; the initial densities follow the vortex's pressure
    p = -U^2 / 4 (cos 2k(x - x0) + cos 2k(y - y0)) through the inverse Tait equation.

    NOTE: without particle shifting or a transport-velocity correction the particle lattice
    distorts after about one eddy turnover, and from t = 0.25 at U = 1 (16 x 16 particles,
    h = 2 dx) the kinetic energy falls faster than exp(-4 nu k^2 t).
    """
    dx = 1.0 / particles_per_side
    k = 2.0 * np.pi
    amp_key, shift_key = jr.split(key)
    amplitude = jr.uniform(amp_key, (n,), minval=amplitude_range[0], maxval=amplitude_range[1])
    shift = jr.uniform(shift_key, (n, 2))
    positions = jnp.asarray(lattice(particles_per_side, particles_per_side, dx))
    params = SPHParams(
        mass=dx**2,
        smoothing_length=smoothing_ratio * dx,
        rest_density=1.0,
        sound_speed=SOUND_SPEED_RATIO * amplitude_range[1],
        viscosity=viscosity,
        alpha=0.0,
        gravity=jnp.zeros(2),
        box=jnp.ones(2),
        moving=jnp.ones(positions.shape[0], dtype=bool),
        background_pressure=background_pressure,
        density_diffusion=density_diffusion,
        periodic=True,
    )
    velocities = taylor_green_velocity(positions[None], amplitude, shift, k)
    xs = k * (positions[None, :, 0] - shift[:, None, 0])
    ys = k * (positions[None, :, 1] - shift[:, None, 1])
    pressure = background_pressure - (amplitude[:, None] ** 2) / 4.0 * (
        jnp.cos(2 * xs) + jnp.cos(2 * ys)
    )
    states = ParticleState(
        jnp.broadcast_to(positions, velocities.shape),
        velocities,
        tait_density(pressure, params),
    )
    info = {
        "amplitude": amplitude,
        "shift": shift,
        "wavenumber": k,
        "max_speed": amplitude_range[1],
    }
    return params, states, info


def dam_break(
    key: PRNGKeyArray,
    n: int,
    column_particles: tuple[int, int],
    viscosity: float,
    alpha: float,
    smoothing_ratio: float,
    push: float = 0.1,
    density_diffusion: float = 0.0,
) -> tuple[SPHParams, ParticleState, dict]:
    """Set up a water column of width 0.5 and height 1 in a tank of width 2, gravity 1.

    The tank has a floor and two side walls of fixed boundary particles, in as many layers
    as cover the kernel support 2h. Its top is open: particles
    that splash above the side walls are not held back. Each trajectory starts the column with a
    random uniform horizontal velocity in [-push, push] sqrt(g H), the only random input.
    The box is not periodic.
    """
    nx, ny = column_particles
    dx = 1.0 / ny
    width, tank_height = 2.0, 1.5
    layers = int(np.ceil(2.0 * smoothing_ratio))
    fluid = lattice(nx, ny, dx)
    tank_nx = int(round(width / dx))
    floor = lattice(tank_nx + 2 * layers, layers, dx, origin=(-layers * dx, -layers * dx))
    wall_ny = int(round(tank_height / dx))
    left = lattice(layers, wall_ny, dx, origin=(-layers * dx, 0.0))
    right = lattice(layers, wall_ny, dx, origin=(width, 0.0))
    positions = jnp.asarray(np.concatenate([fluid, floor, left, right]))
    moving = jnp.arange(positions.shape[0]) < fluid.shape[0]

    height, gravity = ny * dx, 1.0
    # The front reaches about 2 sqrt(2 g H) (shallow-water dam-break speed).
    max_speed = 2.0 * np.sqrt(2.0 * gravity * height)
    params = SPHParams(
        mass=dx**2,
        smoothing_length=smoothing_ratio * dx,
        rest_density=1.0,
        sound_speed=SOUND_SPEED_RATIO * max_speed,
        viscosity=viscosity,
        alpha=alpha,
        gravity=jnp.array([0.0, -gravity]),
        box=jnp.array([width, tank_height]),
        moving=moving,
        density_diffusion=density_diffusion,
        periodic=False,
    )
    # Hydrostatic start: p = rho0 g (H - y) in the fluid, rest density in the walls.
    depth = jnp.where(moving, height - positions[:, 1], 0.0)
    density = tait_density(params.rest_density * gravity * depth, params)
    push_speed = push * np.sqrt(gravity * height)
    u0 = jr.uniform(key, (n,), minval=-push_speed, maxval=push_speed)
    velocities = jnp.zeros((n, *positions.shape))
    velocities = velocities.at[..., 0].set(jnp.where(moving, u0[:, None], 0.0))
    states = ParticleState(
        jnp.broadcast_to(positions, velocities.shape),
        velocities,
        jnp.broadcast_to(density, (n, positions.shape[0])),
    )
    return params, states, {"max_speed": max_speed}
