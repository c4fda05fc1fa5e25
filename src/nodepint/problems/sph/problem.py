"""The `sph` problem: learn the dynamics of a reduced basis of particle velocities.

Data come from the JAX SPH solver (`scene=taylor_green` or `scene=dam_break`) or from an
HDF5 file of external trajectories (`scene=hdf5`, `file=PATH`, layout in
`nodepint.problems.sph.hdf5`). Inputs and outputs are the velocities of all moving
particles at one time, flattened as (particle, component). The neural ODE evolves their
coordinates in a reduced basis (`problem.params.basis`, POD by default).
"""

from __future__ import annotations

import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, Split, trajectory_dataset
from nodepint.problems.reduced_basis import check_basis_params, snapshot_basis
from nodepint.problems.sph.hdf5 import ParticleTrajectories, load_particle_trajectories
from nodepint.problems.sph.scenes import dam_break, taylor_green
from nodepint.problems.sph.solver import ParticleState, SPHParams, simulate, stable_step

SCENES = ("taylor_green", "dam_break", "hdf5")


class SPH(Problem):
    name = "sph"
    default_params = {
        "scene": "taylor_green",
        # HDF5 file of particle trajectories, read with scene=hdf5.
        "file": "",
        # Taylor-Green: particles per side of the periodic unit box, and the range of the
        # random vortex amplitude.
        "particles_per_side": 16,
        "amplitude_min": 0.5,
        "amplitude_max": 1.0,
        # Dam break: fluid particles across and up the water column (width 0.5, height 1),
        # and the largest random initial push as a fraction of sqrt(g H).
        "column_particles_x": 8,
        "column_particles_y": 16,
        "push": 0.1,
        # Kinematic viscosity of the Morris term, Monaghan's alpha (0 is off), kernel
        # smoothing length h over the particle spacing, delta-SPH density diffusion.
        "viscosity": 0.02,
        "alpha": 0.0,
        "smoothing_ratio": 2.0,
        "density_diffusion": 0.1,
        # Acoustic CFL number of the time step.
        "cfl": 0.25,
        "basis": "pod",
    }

    def check_params(self):
        p = self.params
        if p["scene"] not in SCENES:
            raise ConfigError(
                f"problem.params.scene={p['scene']!r} is invalid: choose one of "
                f"{', '.join(SCENES)}."
            )
        for key in ("particles_per_side", "column_particles_x", "column_particles_y"):
            if not (isinstance(p[key], int) and p[key] >= 2):
                raise ConfigError(
                    f"problem.params.{key}={p[key]!r} is invalid: it must be an integer >= 2."
                )
        for key in ("viscosity", "alpha", "push", "density_diffusion"):
            if not p[key] >= 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be >= 0.")
        for key in ("amplitude_min", "cfl"):
            if not p[key] > 0:
                raise ConfigError(f"problem.params.{key}={p[key]} is invalid: it must be > 0.")
        if not p["amplitude_max"] >= p["amplitude_min"]:
            raise ConfigError(
                f"problem.params.amplitude_max={p['amplitude_max']} is invalid: it must be at "
                f"least problem.params.amplitude_min={p['amplitude_min']}."
            )
        # The minimum-image convention counts each neighbour once only when the kernel
        # support 2h is at most half the periodic box side.
        if not p["smoothing_ratio"] >= 1.0:
            raise ConfigError(
                f"problem.params.smoothing_ratio={p['smoothing_ratio']} is invalid: it must be "
                "at least 1."
            )
        if p["scene"] == "taylor_green" and not (
            1.0 <= p["smoothing_ratio"] <= p["particles_per_side"] / 4
        ):
            raise ConfigError(
                f"problem.params.smoothing_ratio={p['smoothing_ratio']} is invalid: it must lie "
                f"in [1, particles_per_side / 4 = {p['particles_per_side'] / 4}]."
            )
        check_basis_params(p["basis"], 2)

        self.external: ParticleTrajectories | None = None
        if p["scene"] == "hdf5":
            if not p["file"]:
                raise ConfigError(
                    "problem.params.file is missing: scene=hdf5 reads the particle "
                    "trajectories from that HDF5 file."
                )
            self.external = load_particle_trajectories(p["file"])
            self._check_external()
        elif p["file"]:
            raise ConfigError(
                f"problem.params.file={p['file']!r} is only read with problem.params.scene="
                f"hdf5, not scene={p['scene']}: set the scene or drop the file."
            )

    def _check_external(self):
        data, c = self.external, self.cfg
        count = data.velocities.shape[0]
        if count < c.n_trajectories:
            raise ConfigError(
                f"problem.n_trajectories={c.n_trajectories} is invalid: the file "
                f"{self.params['file']} holds {count} trajectories. Lower it to at most {count}."
            )
        t0, t1 = float(data.times[0]), float(data.times[-1])
        if not (np.isclose(t0, c.t0) and np.isclose(t1, c.t1)):
            raise ConfigError(
                f"problem.t0={c.t0}, problem.t1={c.t1} do not match the file's times "
                f"{t0}..{t1}: set problem.t0={t0} problem.t1={t1}."
            )

    # -- sizes and times

    @property
    def particles(self) -> int:
        """Number of moving (fluid) particles, whose velocities are the outputs."""
        p = self.params
        if self.external is not None:
            return self.external.velocities.shape[2]
        if p["scene"] == "taylor_green":
            return p["particles_per_side"] ** 2
        return p["column_particles_x"] * p["column_particles_y"]

    @property
    def input_size(self) -> int:
        return 2 * self.particles

    @property
    def output_size(self) -> int:
        return 2 * self.particles

    def observation_times(self) -> np.ndarray:
        if self.external is not None:
            return self.external.times
        return super().observation_times()

    # -- data

    def scene(self, key, n: int) -> tuple[SPHParams, ParticleState, dict]:
        """Particle parameters and `n` random initial states of the configured scene."""
        p = self.params
        if p["scene"] == "taylor_green":
            return taylor_green(
                key,
                n,
                p["particles_per_side"],
                p["viscosity"],
                p["smoothing_ratio"],
                (p["amplitude_min"], p["amplitude_max"]),
                density_diffusion=p["density_diffusion"],
            )
        return dam_break(
            key,
            n,
            (p["column_particles_x"], p["column_particles_y"]),
            p["viscosity"],
            p["alpha"],
            p["smoothing_ratio"],
            push=p["push"],
            density_diffusion=p["density_diffusion"],
        )

    def simulate(self, key, n: int) -> tuple[SPHParams, ParticleState]:
        """Run the SPH solver from `n` random initial states; states at the observation times."""
        params, states, info = self.scene(key, n)
        dt = stable_step(params, info["max_speed"], self.params["cfl"])
        return params, simulate(states, params, self.observation_times(), dt)

    def make_data(self, key):
        c = self.cfg
        sim_key, data_key = jr.split(key)
        ts = self.observation_times()
        if self.external is not None:
            velocities = self.external.velocities[: c.n_trajectories]
        else:
            params, states = self.simulate(sim_key, c.n_trajectories)
            moving = np.asarray(params.moving)
            velocities = np.asarray(states.velocities)[:, :, moving]
        if not np.all(np.isfinite(velocities)):
            raise ConfigError(
                "The SPH simulation produced NaN or infinite velocities: lower "
                "problem.params.cfl or raise problem.params.viscosity."
            )
        clean = velocities.reshape(velocities.shape[0], velocities.shape[1], -1)
        return trajectory_dataset(data_key, clean, ts, c, field=True)

    def check_reduced_basis(self, rank: int) -> None:
        check_basis_params(self.params["basis"], self.output_size, rank)

    def reduced_basis(self, train: Split, rank: int, key):
        snapshots = np.asarray(train.targets).reshape(-1, self.output_size)
        return snapshot_basis(self.params["basis"], snapshots, rank, key)
