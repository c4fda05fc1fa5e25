"""Loader for external particle trajectories stored as HDF5.

Layout (one group per trajectory, read in sorted order of the group names):

    /<trajectory>/time        float, shape (times,), increasing, the same in every group
    /<trajectory>/positions   float, shape (times, particles, 2)
    /<trajectory>/velocities  float, shape (times, particles, 2)

Every trajectory has the same number of particles. Other groups, datasets and attributes
are ignored. Positions are read and checked but only the velocities are learned.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from nodepint.config import ConfigError

DATASETS = ("time", "positions", "velocities")


class ParticleTrajectories(NamedTuple):
    times: np.ndarray  # (times,)
    positions: np.ndarray  # (trajectories, times, particles, 2)
    velocities: np.ndarray  # (trajectories, times, particles, 2)
    names: tuple[str, ...]


def _layout_error(path: Path, detail: str) -> ConfigError:
    return ConfigError(
        f"problem.params.file={str(path)!r} does not have the particle trajectory layout: "
        f"{detail}. Each trajectory must be a group with datasets time (times,), positions "
        "(times, particles, 2) and velocities (times, particles, 2); see docs/problems.md."
    )


def load_particle_trajectories(path: str | Path) -> ParticleTrajectories:
    """Read every trajectory group of the HDF5 file at `path`, checking the layout."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"problem.params.file={str(path)!r} was not found: give the path of an HDF5 file "
            "of particle trajectories (relative paths start at the working directory)."
        )
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ConfigError(
            f"problem.params.file={str(path)!r} could not be opened as HDF5: {error}."
        ) from error

    with handle:
        names = tuple(sorted(k for k in handle if isinstance(handle[k], h5py.Group)))
        if not names:
            raise _layout_error(path, "the file has no groups")
        times, positions, velocities = None, [], []
        for name in names:
            group = handle[name]
            missing = [d for d in DATASETS if d not in group]
            if missing:
                raise _layout_error(path, f"group {name!r} lacks {', '.join(missing)}")
            t = np.asarray(group["time"], dtype=float)
            x = np.asarray(group["positions"], dtype=float)
            v = np.asarray(group["velocities"], dtype=float)
            if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0):
                raise _layout_error(
                    path, f"{name}/time has shape {t.shape}; it needs 2 or more increasing times"
                )
            for label, array in (("positions", x), ("velocities", v)):
                if array.ndim != 3 or array.shape[0] != t.size or array.shape[2] != 2:
                    raise _layout_error(
                        path,
                        f"{name}/{label} has shape {array.shape}, "
                        f"expected ({t.size}, particles, 2)",
                    )
            if x.shape != v.shape:
                raise _layout_error(
                    path, f"{name}/positions {x.shape} and velocities {v.shape} differ in shape"
                )
            if times is None:
                times = t
            elif t.shape != times.shape or not np.allclose(t, times, rtol=1e-9, atol=1e-12):
                raise _layout_error(path, f"{name}/time differs from the first group's times")
            if positions and x.shape != positions[0].shape:
                raise _layout_error(
                    path,
                    f"{name} has {x.shape[1]} particles, the first group {positions[0].shape[1]}",
                )
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(v))):
                raise _layout_error(path, f"{name} contains NaN or infinite values")
            positions.append(x)
            velocities.append(v)
    return ParticleTrajectories(times, np.stack(positions), np.stack(velocities), names)


def write_particle_trajectories(path, times, positions, velocities, names=None) -> None:
    """Write trajectories in the layout that `load_particle_trajectories` reads."""
    names = names or [f"trajectory_{i:04d}" for i in range(len(positions))]
    with h5py.File(path, "w") as handle:
        for name, x, v in zip(names, positions, velocities, strict=True):
            group = handle.create_group(name)
            group.create_dataset("time", data=np.asarray(times))
            group.create_dataset("positions", data=np.asarray(x))
            group.create_dataset("velocities", data=np.asarray(v))
