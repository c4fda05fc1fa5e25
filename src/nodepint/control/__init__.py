"""Optimal control of the learned model: parametrisations, the cost-augmented system, DP
and DAL gradients of the cost, the optimisation loop, the joint dp_dp training, and the
evaluation of controls on the true system."""

from nodepint.control.gradients import cost, dal_value_and_grad, dp_value_and_grad
from nodepint.control.optimise import ControlRun, optimise_control
from nodepint.control.parametrisations import NetworkControl, PiecewiseConstant, make_control
from nodepint.control.system import ControlTask, augmented_field, learned_task, true_task

__all__ = [
    "ControlRun",
    "ControlTask",
    "NetworkControl",
    "PiecewiseConstant",
    "augmented_field",
    "cost",
    "dal_value_and_grad",
    "dp_value_and_grad",
    "learned_task",
    "make_control",
    "optimise_control",
    "true_task",
]
