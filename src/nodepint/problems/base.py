"""The Problem interface and the data containers shared by all problems."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import ConfigError, ProblemConfig


class Split(NamedTuple):
    """One split of a data set. Regression targets are states at `ts`; labels are classes."""

    inputs: Float[Array, "batch features"]
    targets: Array  # "batch times outputs" (regression) or "batch" integer labels
    # Which (trajectory, time) entries count in the loss; all ones unless a problem holds
    # out single observation times (lynx_hare).
    mask: Float[Array, "batch times"]


class Dataset(NamedTuple):
    train: Split
    val: Split
    test: Split
    ts: Float[Array, " times"]
    # Affine map from the model's normalised outputs back to data units: y = mean + std * y_n.
    mean: Float[Array, " outputs"]
    std: Float[Array, " outputs"]


class Problem(abc.ABC):
    """A problem: its data, its state sizes and its task."""

    name: str
    # Names of the entries of `problem.params` and their defaults.
    default_params: dict[str, float] = {}
    # "regression" (trajectories, mean squared error) or "classification" (labels, accuracy).
    task: str = "regression"
    # Names of the output coordinates, for figures.
    output_names: tuple[str, ...] = ()

    def __init__(self, cfg: ProblemConfig):
        unknown = sorted(set(cfg.params) - set(self.default_params))
        if unknown:
            allowed = ", ".join(self.default_params) or "none"
            raise ConfigError(
                f"problem.params.{unknown[0]} is not a parameter of problem {self.name}: "
                f"allowed parameters are {allowed}."
            )
        self.cfg = cfg
        self.params: dict[str, Any] = {**self.default_params, **cfg.params}
        if cfg.mu is not None:
            if "mu" not in self.default_params:
                raise ConfigError(
                    f"problem.mu={cfg.mu} is invalid: problem {self.name} has no parameter mu; "
                    "remove problem.mu."
                )
            if "mu" in cfg.params and cfg.params["mu"] != cfg.mu:
                raise ConfigError(
                    f"problem.mu={cfg.mu} and problem.params.mu={cfg.params['mu']} disagree: "
                    "set only one of them."
                )
            self.params["mu"] = cfg.mu
        self.check_params()

    def check_params(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Raise `ConfigError` for parameter values the problem cannot run with."""

    @property
    @abc.abstractmethod
    def input_size(self) -> int:
        """Size of one input (the observed initial state, or an image's pixels)."""

    @property
    @abc.abstractmethod
    def output_size(self) -> int:
        """Size of one output (the observed state, or the number of classes)."""

    def observation_times(self) -> np.ndarray:
        c = self.cfg
        return np.linspace(c.t0, c.t1, c.n_obs)

    @abc.abstractmethod
    def make_data(self, key: PRNGKeyArray) -> Dataset:
        """Generate or load the data set, normalised, split into train/val/test by `key`."""

    def true_vector_field(self):
        """f(t, y, args) of the true system in data units, or None when it is unknown."""
        return None

    def reduced_basis(self, train: Split, rank: int, key: PRNGKeyArray):
        """Build the basis behind `model.encoder=projection`, as (vectors, trainable).

        Only problems whose outputs are whole fields provide one.
        """
        self.check_reduced_basis(rank)

    def check_reduced_basis(self, rank: int) -> None:
        """Raise `ConfigError` unless the problem provides a reduced basis of `rank` vectors."""
        raise ConfigError(
            f"model.encoder=projection is invalid with problem.name={self.name}: only field "
            "problems (heat, sph) provide a reduced basis. Use model.encoder=identity, "
            "linear or mlp."
        )

    def field_args(self) -> Any:
        """Return the `args` that `true_vector_field` takes."""
        return None

    def describe(self) -> str:
        """Return the problem's name with the parameters that set its time scales."""
        return self.name

    def stiffness_probe_states(self) -> np.ndarray | None:
        """States (data units) where the stiffness check evaluates the true field's Jacobian.

        None, the default, skips the check. Problems that can be stiff return states that
        their trajectories visit.
        """
        return None

    # -- control hooks; uncontrolled problems keep these defaults

    # Size m of the control input u(t); 0 for an uncontrolled problem.
    control_size: int = 0
    # Controlled problems drive every training trajectory with its own random signal,
    # piecewise constant on this many equal intervals of [t0, t1]. The signal's values
    # follow the observed initial state in each input row (see `trajectory_dataset`).
    signal_intervals: int = 0

    def true_controlled_field(self, t, y, u, args):
        """dy/dt of the true system under control u, in data units (controlled problems)."""
        raise NotImplementedError(f"problem {self.name} has no control input")

    def control_bound(self) -> float:
        """Largest |u| allowed; the optimal-control parametrisations keep u inside it."""
        raise NotImplementedError(f"problem {self.name} has no control input")

    def control_initial_state(self) -> np.ndarray:
        """Initial state of the optimal-control task, in data units."""
        raise NotImplementedError(f"problem {self.name} has no control input")

    def running_cost(self, y, u):
        """L(y, u) of the optimal-control task, y in data units."""
        raise NotImplementedError(f"problem {self.name} has no control input")

    def terminal_cost(self, y):
        """Phi(y(t1)) of the optimal-control task, y in data units."""
        raise NotImplementedError(f"problem {self.name} has no control input")


def reference_solve(
    field,
    y0s,
    ts,
    args,
    rtol,
    atol,
    solver=None,
    max_steps=1_000_000,
    pcoeff=0.0,
    icoeff=1.0,
    jump_ts=None,
    args_axes=None,
):
    """High-accuracy adaptive solve from each initial state in `y0s`, saved at `ts`.

    `pcoeff` and `icoeff` are the PID controller's coefficients; the default (0, 1) is an
    integral controller. `jump_ts` lists times where the field is discontinuous (a
    piecewise-constant control), so the step controller steps onto them exactly.
    `args_axes` is the vmap axis spec of `args` over the initial states (None: shared).
    """
    solver = solver or diffrax.Dopri8()
    ys, succeeded = _reference_solve(
        field,
        jnp.asarray(y0s),
        jnp.asarray(ts),
        args,
        rtol,
        atol,
        solver,
        max_steps,
        pcoeff,
        icoeff,
        None if jump_ts is None else jnp.asarray(jump_ts),
        args_axes,
    )
    failed = int(np.sum(~np.asarray(succeeded)))
    if failed:
        raise ReferenceSolveError(
            f"the reference solve that generates the data failed on {failed} of "
            f"{len(succeeded)} trajectories: {type(solver).__name__} stopped before the end "
            f"of the span (limit {max_steps} steps) at problem.reference_rtol={rtol}, "
            f"problem.reference_atol={atol}. Loosen these tolerances or shorten problem.t1."
        )
    return ys


class ReferenceSolveError(RuntimeError):
    """The reference solve that generates a problem's data did not finish."""


# filter_jit keys its cache on the field function, the solver and the Python numbers, so
# repeated solves of one problem at the same shapes compile once (a Dopri8 solve takes
# seconds to compile on a CPU).
@eqx.filter_jit
def _reference_solve(
    field, y0s, ts, args, rtol, atol, solver, max_steps, pcoeff, icoeff, jump_ts, args_axes
):
    def one(y0, args):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            solver,
            ts[0],
            ts[-1],
            (ts[1] - ts[0]) / 10,
            y0,
            args=args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(
                rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff, jump_ts=jump_ts
            ),
            max_steps=max_steps,
            throw=False,
        )
        return solution.ys, solution.result == diffrax.RESULTS.successful

    return jax.vmap(one, in_axes=(0, args_axes))(y0s, args)


def controlled_reference_solve(field, y0s, signals, ts, args, rtol, atol):
    """Reference solves of dy/dt = field(t, y, u(t), args), one signal per initial state.

    `signals` (batch, intervals, control) are piecewise constant on equal intervals of
    [ts[0], ts[-1]]; the interval ends are passed as jump times to the step controller.
    """
    t0, t1 = float(ts[0]), float(ts[-1])
    intervals = signals.shape[1]
    edges = jnp.linspace(t0, t1, intervals + 1)

    def driven(t, y, packed):
        values, params = packed
        index = jnp.clip(jnp.floor((t - t0) / (t1 - t0) * intervals), 0, intervals - 1)
        return field(t, y, values[index.astype(int)], params)

    return reference_solve(
        driven,
        jnp.asarray(y0s),
        ts,
        (jnp.asarray(signals), args),
        rtol,
        atol,
        jump_ts=edges[1:-1],
        args_axes=(0, None),
    )


def split_indices(key: PRNGKeyArray, n: int, val_fraction: float, test_fraction: float):
    """Random disjoint train/val/test index sets; each gets at least one element."""
    order = np.asarray(jr.permutation(key, n))
    n_val = max(1, int(round(val_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ConfigError(
            f"problem.n_trajectories={n} is too small to split into train, validation and "
            "test sets: raise it."
        )
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def trajectory_dataset(
    key: PRNGKeyArray,
    clean: np.ndarray,
    ts: np.ndarray,
    cfg: ProblemConfig,
    signals: np.ndarray | None = None,
    field: bool = False,
) -> Dataset:
    """Normalise, add observation noise and split trajectories `clean` (batch, times, state).

    The input of each trajectory is its (noisy) observation at the first time. With
    `field`, every coordinate gets the same mean and standard deviation (those of all
    values), so that a field sampled on a grid or on particles stays a field of the same
    shape and a linear PDE stays linear in the normalised units. For a controlled problem,
    `signals` (batch, intervals, control) holds the piecewise-constant control that drove
    each trajectory; its values, in control units and not normalised, are appended to the
    input row.
    """
    noise_key, split_key = jr.split(key)
    clean = np.asarray(clean)
    mean = clean.mean(axis=(0, 1))
    std = clean.std(axis=(0, 1))
    if field:
        mean = np.full_like(mean, clean.mean())
        std = np.full_like(std, clean.std())
    normalised = (clean - mean) / std
    noisy = normalised + cfg.noise * np.asarray(jr.normal(noise_key, clean.shape))
    train, val, test = split_indices(split_key, clean.shape[0], cfg.val_fraction, cfg.test_fraction)

    def subset(idx):
        ys = jnp.asarray(noisy[idx])
        inputs = ys[:, 0, :]
        if signals is not None:
            flat = jnp.asarray(np.asarray(signals)[idx].reshape(len(idx), -1), dtype=ys.dtype)
            inputs = jnp.concatenate([inputs, flat], axis=1)
        return Split(inputs, ys, jnp.ones(ys.shape[:2]))

    return Dataset(
        subset(train),
        subset(val),
        subset(test),
        jnp.asarray(ts),
        jnp.asarray(mean),
        jnp.asarray(std),
    )
