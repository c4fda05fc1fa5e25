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
from nodepint.training import Steps, TimeSolver, _stats, batch_loss


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
) -> Steps:
    """Training and evaluation steps of the joint optimisation (see `make_steps`).

    `solver` solves the training trajectories and `control_solver` the control task.
    """
    traces = {"train": 0}

    def loss_fn(params, static, inputs, targets, mask, jumps, kept, step_key):
        joint = eqx.combine(params, static)
        outputs, sol = solver.predict_batch(joint.model, inputs, step_key, jumps, kept)
        misfit, accuracy = batch_loss(task, outputs, targets, mask)
        control_cost, _ = cost(
            control_solver, learned_task(problem, joint.model, mean, std), joint.control, key
        )
        return misfit + weight * control_cost, (misfit, accuracy, sol)

    @eqx.filter_jit
    def train_step(joint, opt_state, inputs, targets, mask, jumps, kept, step_key):
        # Runs once per compilation (while JAX traces), never per call.
        traces["train"] += 1
        params, static = eqx.partition(joint, eqx.is_inexact_array)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (misfit, accuracy, sol)), grads = grad_fn(
            params, static, inputs, targets, mask, jumps, kept, step_key
        )
        before = eqx.combine(params, static).model
        jumps = jax.vmap(lambda x, u: solver.jumps_of(before, u, x))(inputs, sol.states)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        joint = eqx.apply_updates(joint, updates)
        # The reported loss is the data misfit, comparable with the other combos.
        return joint, opt_state, jumps, _stats(misfit, accuracy, sol)

    @eqx.filter_jit
    def evaluate(model, inputs, targets, mask, kept, step_key):
        outputs, sol = solver.predict_batch(_model_of(model), inputs, step_key, None, kept)
        loss, accuracy = batch_loss(task, outputs, targets, mask)
        return outputs, _stats(loss, accuracy, sol)

    return Steps(train_step, evaluate, lambda: traces["train"])
