"""The controlled system of an optimal-control task, with its running cost as a state.

The state s = (y, q) appends the accumulated running cost q, with q' = L(y, u) and
q(t0) = 0, so that a single ODE solve (through any PinT strategy) gives

    J(u) = q(t1) + Phi(y(t1)).

The same augmentation makes the costate of q identically 1, so the Hamiltonian of the
augmented system lambda^T F equals L + a^T f, as direct adjoint looping needs.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from nodepint.models import NeuralODE


class LearnedPlant(eqx.Module):
    """The trained model as the plant: its state is the model's (normalised) state."""

    model: NeuralODE
    # Affine map from model outputs to data units: y = mean + std * decoder(z).
    mean: Float[Array, " outputs"]
    std: Float[Array, " outputs"]

    def __call__(self, t, z, u):
        return self.model.field(t, z, u)

    def physical(self, z):
        return self.mean + self.std * self.model.decoder(z)


class TruePlant(eqx.Module):
    """The true controlled dynamics of a problem, in data units."""

    args: Array
    fn: Callable = eqx.field(static=True)

    def __call__(self, t, y, u):
        return self.fn(t, y, u, self.args)

    def physical(self, y):
        return y


class ControlTask(eqx.Module):
    """A plant, its initial state (in the plant's coordinates) and the task's costs."""

    plant: LearnedPlant | TruePlant
    y0: Float[Array, " state"]
    running: Callable = eqx.field(static=True)
    terminal: Callable = eqx.field(static=True)

    def initial(self) -> Float[Array, " state+1"]:
        return jnp.concatenate([self.y0, jnp.zeros((1,), dtype=self.y0.dtype)])

    def objective(self, s_end) -> Float[Array, ""]:
        """J from the augmented state at t1: accumulated running cost plus terminal cost."""
        return s_end[-1] + self.terminal(self.plant.physical(s_end[:-1]))


def augmented_field(t, s, args):
    """F(t, s) = (f(t, y, u(t)), L(y, u(t))), in diffrax's f(t, y, args) form.

    `args` is the pair (task, control), so derivatives reach the control's parameters.
    """
    task, control = args
    y = s[:-1]
    u = control(t)
    dy = task.plant(t, y, u)
    dq = task.running(task.plant.physical(y), u)
    return jnp.concatenate([dy, jnp.reshape(dq, (1,)).astype(dy.dtype)])


def learned_task(problem, model: NeuralODE, mean, std) -> ControlTask:
    """Build the task on the trained model, with the initial state normalised and encoded."""
    x0 = (jnp.asarray(problem.control_initial_state(), dtype=mean.dtype) - mean) / std
    plant = LearnedPlant(model, mean, std)
    return ControlTask(plant, model.encoder(x0), problem.running_cost, problem.terminal_cost)


def true_task(problem, dtype) -> ControlTask:
    """Build the same task on the true system, in data units."""
    plant = TruePlant(jnp.asarray(problem.field_args(), dtype=dtype), problem.true_controlled_field)
    y0 = jnp.asarray(problem.control_initial_state(), dtype=dtype)
    return ControlTask(plant, y0, problem.running_cost, problem.terminal_cost)
