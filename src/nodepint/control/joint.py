"""Combo dp_dp: one DP optimisation of the model weights and the control together.

The loss of a batch is the data misfit plus w * J(u), where J is the control cost on the
current learned model, through the PinT solve. The model is fitted to the data while the
control is optimised on it, as in a physics-informed loss.
"""

from __future__ import annotations

import equinox as eqx
import jax
import optax

from nodepint.control.gradients import cost
from nodepint.control.system import learned_task
from nodepint.models import NeuralODE
from nodepint.training import Steps, TimeSolver, make_steps


class JointModel(eqx.Module):
    """The trained parameters of combo dp_dp: the model and the control."""

    model: NeuralODE
    control: eqx.Module


def joint_optimizer(joint: JointModel, model_optimizer, control_lr: float):
    """Update the model with the run's optimiser and the control with Adam at control_lr.

    The control keeps the learning rate of the separate optimal-control loop, because
    the model's cosine-decayed rate would barely move it in a short training run.
    """
    params = eqx.filter(joint, eqx.is_inexact_array)
    labels = JointModel(
        jax.tree_util.tree_map(lambda _: "model", params.model),
        jax.tree_util.tree_map(lambda _: "control", params.control),
    )
    return optax.multi_transform(
        {"model": model_optimizer, "control": optax.adam(control_lr)}, labels
    )


def _model_of(model):
    return model.model if isinstance(model, JointModel) else model


def make_joint_steps(
    solver: TimeSolver,
    control_solver: TimeSolver,
    optimizer,
    task: str,
    problem,
    mean,
    std,
    weight: float,
    key,
    average: str = "gradients",
) -> Steps:
    """Training and evaluation steps of the joint optimisation (see `make_steps`).

    `solver` solves the training trajectories and `control_solver` the control task.
    """

    def control_penalty(joint: JointModel):
        task_on_model = learned_task(problem, joint.model, mean, std)
        control_cost, _ = cost(control_solver, task_on_model, joint.control, key)
        return weight * control_cost

    return make_steps(solver, optimizer, task, average, control_penalty, _model_of)
