"""A user's own ODE: the vector field is given by import path in the YAML file.

    problem:
      name: custom
      params:
        field: mypackage.mymodule:my_field   # f(t, y, args) -> dy/dt, written with jax.numpy
        args: [1.0, 0.5]                     # passed to the field as a float array
        state_size: 2
        initial_low: [-1.0, -1.0]            # initial states uniform in [low, high]
        initial_high: [1.0, 1.0]
        output_names: [x, v]

Data come from a Dopri8 reference solve, as for the built-in problems. See
docs/custom_problem.md for a worked example.
"""

from __future__ import annotations

import importlib

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Problem, reference_solve, trajectory_dataset


def load_field(path: str):
    """Import `module.path:attribute` and return the attribute, or raise ConfigError."""
    module_name, _, attribute = str(path).partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"problem.params.field={path!r} is invalid: write it as 'module.path:function', "
            "for example 'mypackage.fields:pendulum'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"problem.params.field={path!r} is invalid: module {module_name!r} could not be "
            f"imported ({err}). Install it or put its folder on PYTHONPATH."
        ) from err
    field = getattr(module, attribute, None)
    if not callable(field):
        raise ConfigError(
            f"problem.params.field={path!r} is invalid: module {module_name!r} has no "
            f"function {attribute!r}."
        )
    return field


def _bound(value, size: int, key: str) -> np.ndarray:
    """Expand a number, or check a list of `size` numbers, into one bound per coordinate."""
    bound = np.asarray(value, dtype=float)
    if bound.ndim == 0:
        return np.full(size, float(bound))
    if bound.shape != (size,):
        raise ConfigError(
            f"problem.params.{key}={list(value)} is invalid: it needs one entry per state "
            f"coordinate (problem.params.state_size={size}), or a single number."
        )
    return bound


class Custom(Problem):
    name = "custom"
    default_params = {
        "field": None,
        "args": [],
        "state_size": None,
        "initial_low": -1.0,
        "initial_high": 1.0,
        "output_names": None,
    }

    def check_params(self):
        p = self.params
        if p["field"] is None:
            raise ConfigError(
                "problem.params.field is missing: set it to the import path of your vector "
                "field, 'module.path:function'."
            )
        size = p["state_size"]
        if not (isinstance(size, int) and size >= 1):
            raise ConfigError(
                f"problem.params.state_size={size} is invalid: set it to the number of state "
                "coordinates (an integer >= 1)."
            )
        self.field = load_field(p["field"])
        self.low = _bound(p["initial_low"], size, "initial_low")
        self.high = _bound(p["initial_high"], size, "initial_high")
        if not np.all(self.high > self.low):
            raise ConfigError(
                f"problem.params.initial_high={p['initial_high']} is invalid: it must exceed "
                f"problem.params.initial_low={p['initial_low']} in every coordinate."
            )
        names = p["output_names"]
        if names is not None and len(names) != size:
            raise ConfigError(
                f"problem.params.output_names={list(names)} is invalid: it needs "
                f"{size} names, one per state coordinate."
            )

        # One evaluation of the field, before any data generation, catches a wrong state
        # size or a field that does not run on arrays.
        try:
            out = self.field(0.0, jnp.asarray(self.low), self.field_args())
        except Exception as err:  # noqa: BLE001 - any failure of user code is a config error
            raise ConfigError(
                f"problem.params.field={p['field']!r} failed on a state of size {size}: "
                f"{type(err).__name__}: {err}"
            ) from err
        if jnp.shape(out) != (size,):
            raise ConfigError(
                f"problem.params.field={p['field']!r} returned shape {jnp.shape(out)} for a "
                f"state of shape ({size},): it must return dy/dt of shape ({size},)."
            )

    @property
    def input_size(self):
        return int(self.params["state_size"])

    output_size = input_size

    @property
    def output_names(self):
        names = self.params["output_names"]
        return tuple(names) if names is not None else tuple(f"y{i}" for i in range(self.input_size))

    def true_vector_field(self):
        return self.field

    def field_args(self):
        return jnp.asarray(self.params["args"], dtype=float)

    def initial_states(self, key, n):
        unit = jr.uniform(key, (n, self.input_size))
        return jnp.asarray(self.low) + unit * jnp.asarray(self.high - self.low)

    def trajectories(self, key, n, ts):
        """Clean trajectories (n, times, state) from a Dopri8 reference solve."""
        c = self.cfg
        return reference_solve(
            self.field,
            self.initial_states(key, n),
            jnp.asarray(ts),
            self.field_args(),
            c.reference_rtol,
            c.reference_atol,
        )

    def make_data(self, key):
        ic_key, data_key = jr.split(key)
        ts = self.observation_times()
        clean = self.trajectories(ic_key, self.cfg.n_trajectories, ts)
        return trajectory_dataset(data_key, np.asarray(clean), ts, self.cfg)
