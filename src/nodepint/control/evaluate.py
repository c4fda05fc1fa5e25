"""Controls applied to a plant by a high-accuracy reference solve (not the PinT solver).

Both the control found on the learned model and the reference control found on the true
system are evaluated here by the same adaptive Dopri8 solve. Their cost difference then
measures the controls and not two solvers.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nodepint.control.system import ControlTask, augmented_field

# Tolerance (rtol = atol) of the reference solve. Its error is far below the cost
# differences that the control gap reports.
REFERENCE_TOL = 1e-10


def reference_states(task: ControlTask, control, ts, tol: float = REFERENCE_TOL):
    """Augmented states (times, state+1) of the plant under `control`, saved at `ts`."""
    ts = jnp.asarray(ts)
    edges = control.edges()
    controller = diffrax.PIDController(rtol=tol, atol=tol, jump_ts=edges)
    return diffrax.diffeqsolve(
        diffrax.ODETerm(augmented_field),
        diffrax.Dopri8(),
        ts[0],
        ts[-1],
        (ts[-1] - ts[0]) / 100,
        task.initial(),
        args=(task, control),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=100_000,
    ).ys


def reference_cost(task: ControlTask, control, t0: float, t1: float) -> float:
    """J(u) on `task`'s plant by the reference solve."""
    states = eqx.filter_jit(reference_states)(task, control, jnp.array([t0, t1]))
    return float(task.objective(states[-1]))


def trajectory(task: ControlTask, control, ts) -> np.ndarray:
    """Solve the plant under `control`; return its state at `ts` in data units (times, outputs)."""
    states = eqx.filter_jit(reference_states)(task, control, jnp.asarray(ts))
    return np.asarray(jax.vmap(task.plant.physical)(states[:, :-1]))


def control_signal(control, ts) -> np.ndarray:
    """u(t) at `ts` (times, control)."""
    return np.asarray(jax.vmap(control)(jnp.asarray(ts)))
