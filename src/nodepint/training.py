"""The forward map through the PinT solve, the losses, and the pure training loop."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import OptimConfig, TrainConfig
from nodepint.gradients import observe_dal, pint_solve_dal, pint_solve_implicit
from nodepint.integrators import Propagator
from nodepint.mesh import replicate, spmd_axis
from nodepint.models import NeuralODE, field_function
from nodepint.pint import PintSettings, PintSolution, observe, pint_solve
from nodepint.pint.bases import grow_basis
from nodepint.pint.solve import sweep
from nodepint.problems import Split


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class PintNotConvergedError(RuntimeError):
    """A PinT solve reached pint.max_iters above tolerance and pint.on_fail=error."""


def _all_converged(sol: PintSolution):
    # The float cast behind stop_gradient keeps reverse mode away from the boolean reduction.
    flags = jax.lax.stop_gradient(sol.converged.astype(jnp.float32))
    return jnp.min(flags) > 0.5


def boundary_index(tau, ts) -> tuple[int, ...] | None:
    """Find the index in `tau` of every time in `ts`, or return None if one is not in `tau`.

    Times match when they differ by at most 1e-12 of the span. Traced arrays (a solver built
    inside a transformation) give None, which keeps the general observation solve.
    """
    if isinstance(tau, jax.core.Tracer) or isinstance(ts, jax.core.Tracer):
        return None
    tau, ts = np.asarray(tau, dtype=float), np.asarray(ts, dtype=float)
    if tau.ndim != 1 or ts.ndim != 1 or tau.size < 2:
        return None
    nearest = np.abs(ts[:, None] - tau[None, :]).argmin(axis=1)
    if np.all(np.abs(tau[nearest] - ts) <= 1e-12 * abs(tau[-1] - tau[0])):
        return tuple(int(i) for i in nearest)
    return None


class TimeSolver(eqx.Module):
    """Everything needed to evolve encoded states over the observation times."""

    settings: PintSettings
    fine: Propagator
    coarse: Propagator
    tau: Float[Array, " chunks+1"]
    ts: Float[Array, " times"]
    # How reverse mode differentiates the solve: "implicit" (adjoint recurrence at the
    # converged states), "unroll" (through the recorded iterations) or "dal" (continuous
    # adjoint ODE on every chunk, for the shooting states and the observations).
    grad: str = eqx.field(static=True, default="implicit")
    # "sequential" replaces a batch's PinT states by the sequential solve when any of its
    # solves did not converge; "error" and "warn" are handled by the training loop.
    on_fail: str = eqx.field(static=True, default="warn")
    # Whether `decode` reads the shooting states, instead of solving every chunk again, when
    # every observation time is a chunk boundary (False forces the observation solve).
    read_boundaries: bool = eqx.field(static=True, default=True)
    # The index in `tau` of each observation time, or None. Set by __post_init__, so that
    # `dataclasses.replace(solver, ts=...)` recomputes it.
    boundary_index: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __post_init__(self):
        self.boundary_index = boundary_index(self.tau, self.ts) if self.read_boundaries else None

    def with_method(self, method: str, basis: str = "none") -> TimeSolver:
        settings = dataclasses.replace(self.settings, method=method, basis=basis, scan="sequential")
        return dataclasses.replace(self, settings=settings)

    def predict(self, model: NeuralODE, x, key, jumps=None, kept=None):
        """Outputs of one input at the observation times, and the PinT solution behind them.

        `jumps` (chunks, state) warm-starts the solve from U_{n+1} = G(U_n) + jumps_n, the
        coarse sweep of the current model corrected by the fine-minus-coarse jumps of the
        previous solve (see `jumps_of`); None starts from the plain coarse sweep.
        """
        z0 = model.initial_state(x)
        # The field itself, or for a controlled problem the field driven by x's signal.
        dynamics = model.dynamics(x, self.tau[0], self.tau[-1])
        guess = None
        if jumps is not None:
            guess = self.warm_guess(dynamics, z0, jax.lax.stop_gradient(jumps))
            if self.grad != "unroll":
                guess = jax.lax.stop_gradient(guess)
            # NOTE: unroll differentiates the iterations that ran, starting from this guess
            # (the current model's coarse sweep plus the previous solve's constant jumps).
            # A warm start that already meets the tolerance makes no correction, so the
            # gradient is the coarse sweep's: exact only to the coarse propagator's
            # accuracy. Stopping the gradient here instead would make it zero.
        solves = {"implicit": pint_solve_implicit, "dal": pint_solve_dal}
        solve = solves.get(self.grad, pint_solve)
        sol = solve(
            self.settings,
            self.fine,
            self.coarse,
            field_function,
            z0,
            self.tau,
            dynamics,
            key,
            guess,
            kept=kept,
        )
        return self.decode(model, sol.states, dynamics), sol

    def decode(self, model: NeuralODE, states, dynamics=None):
        dynamics = model.field if dynamics is None else dynamics
        if self.boundary_index is not None:
            # The converged shooting states are the trajectory at the boundaries, to the PinT
            # tolerance. Their gradient comes from the solve's own reverse pass (implicit,
            # unrolled or DAL).
            zs = states[np.asarray(self.boundary_index)]
        elif self.grad == "dal":
            # NOTE: the DAL observation solves are not constrained to the mesh's `time` axis.
            zs = observe_dal(self.fine, field_function, states, self.tau, self.ts, dynamics)
        else:
            zs = observe(
                self.fine, field_function, states, self.tau, self.ts, dynamics, self.settings.mesh
            )
        return jax.vmap(model.decoder)(zs)

    def warm_guess(self, dynamics, z0, jumps):
        return sweep(self.coarse, field_function, z0, self.tau, dynamics, jumps)

    def jumps_of(self, model, states, x=None):
        """F - G at converged states: U_{n+1} - G(U_n), for the next warm start.

        `x` is the input row, needed for a controlled problem's signal.
        """
        dynamics = model.field if x is None else model.dynamics(x, self.tau[0], self.tau[-1])
        coarse_all = jax.vmap(self.coarse, in_axes=(None, 0, 0, 0, None))
        ends = coarse_all(field_function, states[:-1], self.tau[:-1], self.tau[1:], dynamics)
        return jax.lax.stop_gradient(states[1:] - ends)

    def predict_batch(self, model, inputs, key, jumps=None, kept=None):
        """Outputs and PinT solutions of a batch; see `on_fail` for non-converged solves."""
        keys = jr.split(key, inputs.shape[0])
        # The batch axis is sharded over the mesh's `data` axis.
        batched = functools.partial(jax.vmap, spmd_axis_name=spmd_axis(self.settings.mesh, "data"))
        if jumps is None:
            outputs, sol = batched(lambda x, k: self.predict(model, x, k, None, kept))(inputs, keys)
        else:
            outputs, sol = batched(lambda x, k, g: self.predict(model, x, k, g, kept))(
                inputs, keys, jumps
            )
        if self.on_fail != "sequential" or self.settings.method == "sequential":
            return outputs, sol

        # A real branch (outside the vmap), so the sequential solve runs only when needed.
        sequential = self.with_method("sequential")

        def fallback(_):
            seq_outputs, seq_sol = batched(lambda x, k: sequential.predict(model, x, k))(
                inputs, keys
            )
            # Keep the PinT attempt's iteration counts and flags, so that fallbacks are counted.
            return seq_outputs, sol._replace(states=seq_sol.states)

        return jax.lax.cond(_all_converged(sol), lambda _: (outputs, sol), fallback, None)


def batch_loss(task: str, outputs, targets, mask) -> tuple[Array, Array]:
    """Return (loss, accuracy); accuracy is NaN for regression."""
    if task == "classification":
        logits = outputs[:, -1, :]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == targets).astype(logits.dtype))
        return loss, accuracy
    squared = jnp.mean((outputs - targets) ** 2, axis=-1)
    return jnp.sum(mask * squared) / jnp.sum(mask), jnp.array(jnp.nan, outputs.dtype)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax optimiser with its learning-rate schedule and optional gradient clipping."""
    total_steps = max(total_steps, 1)
    if cfg.schedule == "constant":
        lr = cfg.lr
    elif cfg.schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.lr, total_steps, alpha=0.01)
    else:
        lr = optax.warmup_cosine_decay_schedule(
            0.0,
            cfg.lr,
            min(cfg.warmup_steps, total_steps - 1),
            total_steps,
            end_value=0.01 * cfg.lr,
        )
    optimizers = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
        "lion": lambda: optax.lion(lr, weight_decay=cfg.weight_decay),
    }
    chain = [optimizers[cfg.name]()]
    if cfg.clip_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(cfg.clip_norm))
    return optax.chain(*chain)


class StepStats(NamedTuple):
    loss: Array
    accuracy: Array
    iterations: Array  # per trajectory
    residuals: Array  # per trajectory and iteration
    converged: Array  # per trajectory
    diverged: Array  # per trajectory


def _stats(loss, accuracy, sol) -> StepStats:
    return StepStats(loss, accuracy, sol.iterations, sol.residuals, sol.converged, sol.diverged)


class Steps(NamedTuple):
    train: Callable
    evaluate: Callable
    compile_count: Callable[[], int]
    # Lays out the training step's array inputs on the mesh, the same way at every step.
    place: Callable


def replica_mean(tree):
    """Replace every leaf (leading axis: replicas) by its mean over the replicas."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.mean(x, axis=0), x.shape), tree)


def make_steps(
    solver: TimeSolver,
    optimizer,
    task: str,
    average: str = "gradients",
    penalty: Callable | None = None,
    model_of: Callable = lambda trained: trained,
) -> Steps:
    """Build the jitted training and evaluation steps; count the training step's compilations.

    The training step advances every replica at once. Its parameters, optimiser state,
    batch, warm-start jumps and key carry a leading replica axis (of size 1 without
    replicas), which is vmapped and sharded over the mesh's `proj` axis. `average` sets how
    the replicas are combined: "gradients" averages their gradients before every update;
    "weights" averages the parameters after the update when `sync` is true.

    The trained object may hold more than the model (combo dp_dp trains a control with
    it): `model_of` picks the model out, and `penalty(trained)` is added to the data
    misfit. The reported loss is the data misfit alone.
    """
    traces = {"train": 0}
    replica_axis = spmd_axis(solver.settings.mesh, "proj")

    def loss_fn(params, static, inputs, targets, mask, jumps, kept, key):
        trained = eqx.combine(params, static)
        outputs, sol = solver.predict_batch(model_of(trained), inputs, key, jumps, kept)
        loss, accuracy = batch_loss(task, outputs, targets, mask)
        total = loss if penalty is None else loss + penalty(trained)
        return total, (loss, accuracy, sol)

    def replica_step(params, static, inputs, targets, mask, jumps, kept, key):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (loss, accuracy, sol)), grads = grad_fn(
            params, static, inputs, targets, mask, jumps, kept, key
        )
        # Jumps with the parameters that produced the states, before the update.
        model_before = model_of(eqx.combine(params, static))
        jumps = jax.vmap(lambda x, u: solver.jumps_of(model_before, u, x))(inputs, sol.states)
        return grads, jumps, _stats(loss, accuracy, sol)

    @eqx.filter_jit
    def train_step(params, static, opt_state, inputs, targets, mask, jumps, kept, key, sync):
        # Runs once per compilation (while JAX traces), never per call.
        traces["train"] += 1
        replicas = inputs.shape[0]
        every_replica = jax.vmap(
            replica_step, in_axes=(0, None, 0, 0, 0, 0, None, 0), spmd_axis_name=replica_axis
        )
        grads, jumps, stats = every_replica(
            params, static, inputs, targets, mask, jumps, kept, jr.split(key, replicas)
        )
        if average == "gradients":
            grads = replica_mean(grads)
        updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        if average == "weights":
            params = jax.lax.cond(sync, replica_mean, lambda p: p, params)
        return params, opt_state, jumps, stats

    @eqx.filter_jit
    def evaluate(trained, inputs, targets, mask, kept, key):
        outputs, sol = solver.predict_batch(model_of(trained), inputs, key, None, kept)
        loss, accuracy = batch_loss(task, outputs, targets, mask)
        return outputs, _stats(loss, accuracy, sol)

    place = functools.partial(replicate, mesh=solver.settings.mesh)
    return Steps(train_step, evaluate, lambda: traces["train"], place)


class TrainState(NamedTuple):
    # The model that is evaluated and checkpointed: the mean of the replicas' parameters.
    model: NeuralODE
    # Trainable parameters of every replica, stacked on a leading axis (size pint.replicas).
    replica_params: NeuralODE
    # The replicas' optimiser states, stacked likewise.
    opt_state: optax.OptState
    # Fine-minus-coarse jumps (replicas, trajectories, chunks, state) of every training
    # trajectory's last solve in each replica (warm starts).
    jumps: Array
    # The kept basis (state, rank) of pint.basis=growing; (state, 0) for the other bases.
    kept: Array
    best_model: NeuralODE
    best_val_loss: Array
    epoch: Array
    step: Array


class EpochRecord(NamedTuple):
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    iterations_mean: float
    iterations_max: int
    residual_final: float
    # Median over the epoch's solves of the defect after 0, 1, ... corrections.
    residual_history: list
    nonconverged: int
    diverged: int
    # Batches solved sequentially instead (pint.on_fail=sequential).
    fallbacks: int
    basis_rank: int
    epoch_seconds: float
    compile_count: int


def init_train_state(
    model, optimizer, train: Split, chunks: int, size: int, kept, replicas: int = 1
) -> TrainState:
    """Start every replica from the same parameters, each with its own optimiser state."""
    params = eqx.filter(model, eqx.is_inexact_array)
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (replicas, *x.shape)), params)
    jumps = jnp.zeros((replicas, train.inputs.shape[0], chunks, size), dtype=train.inputs.dtype)
    return TrainState(
        model,
        stacked,
        jax.vmap(optimizer.init)(stacked),
        jumps,
        kept,
        model,
        jnp.array(jnp.inf),
        jnp.array(0),
        jnp.array(0),
    )


def batches_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(batch size, batches per epoch); every batch has the same size, so one compilation."""
    size = min(cfg.batch_size, n_train)
    return size, n_train // size


def horizon_mask(cfg: TrainConfig, epoch: int, ts) -> np.ndarray:
    """1 for the observation times that count in the loss at `epoch` (0-based), else 0."""
    ts = np.asarray(ts)
    if cfg.horizon_epochs == 0 or epoch >= cfg.horizon_epochs:
        return np.ones_like(ts)
    fraction = cfg.horizon_start + (1.0 - cfg.horizon_start) * epoch / cfg.horizon_epochs
    cutoff = ts[0] + fraction * (ts[-1] - ts[0])
    return (ts <= cutoff + 1e-12 * abs(ts[-1] - ts[0])).astype(ts.dtype)


def train_epoch(
    state: TrainState,
    steps: Steps,
    data: Split,
    val: Split,
    cfg: TrainConfig,
    warm_start: bool,
    key: PRNGKeyArray,
    clock: Callable[[], float],
    ts=None,
    on_fail: str = "warn",
    sync_every: int = 1,
):
    """One pass of every replica over the training set; returns the new state and the record.

    Each replica visits the training set in its own random order. The record pools the
    replicas' solves; its training loss is their mean.
    """
    start = clock()
    horizon = 1.0 if ts is None else horizon_mask(cfg, int(state.epoch), ts)[None, None, :]
    n_train = data.inputs.shape[0]
    size, n_batches = batches_per_epoch(cfg, n_train)
    order_key, step_key, val_key = jr.split(key, 3)
    replicas = state.jumps.shape[0]
    orders = np.stack(
        [np.asarray(jr.permutation(k, n_train)) for k in jr.split(order_key, replicas)]
    )
    rows = np.arange(replicas)[:, None]
    _, static = eqx.partition(state.model, eqx.is_inexact_array)
    params, opt_state, jumps, kept = state.replica_params, state.opt_state, state.jumps, state.kept
    losses, iterations, finals, histories, failures, diverged = [], [], [], [], 0, 0
    failed_batches = 0

    for b in range(n_batches):
        idx = orders[:, b * size : (b + 1) * size]  # (replicas, batch)
        # Zero jumps make the warm-start guess the plain coarse sweep.
        batch_jumps = jumps[rows, idx] if warm_start else jnp.zeros_like(jumps[rows, idx])
        # A traced flag, so that syncing and not syncing share one compilation.
        sync = jnp.asarray((int(state.step) + b + 1) % sync_every == 0)
        arrays = steps.place(
            (
                params,
                opt_state,
                data.inputs[idx],
                data.targets[idx],
                data.mask[idx] * horizon,
                batch_jumps,
                kept,
                jr.fold_in(step_key, b),
                sync,
            )
        )
        params, opt_state, new_jumps, stats = steps.train(arrays[0], static, *arrays[1:])
        # Pool the replicas' solves: (replicas, batch, ...) -> (replicas * batch, ...).
        stats = stats._replace(
            loss=jnp.mean(stats.loss),
            **{
                name: np.reshape(
                    np.asarray(getattr(stats, name)), (-1, *getattr(stats, name).shape[2:])
                )
                for name in ("iterations", "residuals", "converged", "diverged")
            },
        )
        loss = float(stats.loss)
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss} at epoch {int(state.epoch) + 1}, batch {b + 1}: "
                "lower optim.lr, tighten optim.clip_norm, or use more fine steps "
                "(integrator.fine.steps)."
            )
        jumps = jumps.at[rows, idx].set(new_jumps)
        losses.append(loss)
        its = np.asarray(stats.iterations)
        iterations.append(its)
        res = np.asarray(stats.residuals)
        finals.append(res[np.arange(len(its)), its])
        histories.append(res)
        failures += int(np.sum(~np.asarray(stats.converged)))
        diverged += int(np.sum(np.asarray(stats.diverged)))
        failed_batches += int(not np.all(np.asarray(stats.converged)))
        if on_fail == "error" and not np.all(np.asarray(stats.converged)):
            worst = float(np.nanmax(res[np.arange(len(its)), its]))
            raise PintNotConvergedError(
                f"{int(np.sum(~np.asarray(stats.converged)))} PinT solves of batch {b + 1} in "
                f"epoch {int(state.epoch) + 1} stopped at pint.max_iters with a defect norm of "
                f"{worst:.3g} (tolerance 1): raise pint.max_iters (at most pint.chunks "
                "iterations are ever needed), set pint.damping > 0 for a chaotic problem, or "
                "set pint.on_fail=sequential to fall back to the sequential solve."
            )

    # -- validation of the replicas' mean, from fresh coarse sweeps
    model = eqx.combine(jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), params), static)
    _, val_stats = steps.evaluate(model, val.inputs, val.targets, val.mask, kept, val_key)
    val_loss = float(val_stats.loss)
    better = val_loss < float(state.best_val_loss) or not cfg.keep_best
    iterations = np.concatenate(iterations)
    state = TrainState(
        model,
        params,
        opt_state,
        jumps,
        kept,
        model if better else state.best_model,
        jnp.array(min(val_loss, float(state.best_val_loss)) if cfg.keep_best else val_loss),
        state.epoch + 1,
        state.step + n_batches,
    )
    record = EpochRecord(
        epoch=int(state.epoch),
        train_loss=float(np.mean(losses)),
        val_loss=val_loss,
        val_accuracy=float(val_stats.accuracy),
        iterations_mean=float(iterations.mean()),
        iterations_max=int(iterations.max()),
        residual_final=float(np.max(np.concatenate(finals))),
        residual_history=_median_history(np.concatenate(histories)),
        nonconverged=failures,
        diverged=diverged,
        fallbacks=failed_batches if on_fail == "sequential" else 0,
        basis_rank=int(kept.shape[1]),
        epoch_seconds=clock() - start,
        compile_count=steps.compile_count(),
    )
    return state, record


def _median_history(residuals: np.ndarray) -> list:
    """Median over solves of each iteration's defect, ignoring solves that stopped earlier."""
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(residuals), residuals, np.nan)
        counts = np.sum(np.isfinite(finite), axis=0)
        medians = [float(np.nanmedian(finite[:, i])) for i in range(finite.shape[1]) if counts[i]]
    return medians


def grow_if_due(
    state: TrainState, basis: str, grow_by: int, grow_every: int, max_rank: int, key: PRNGKeyArray
) -> TrainState:
    """Add `grow_by` random directions to the kept basis every `grow_every` epochs."""
    epoch = int(state.epoch)
    rank = state.kept.shape[1]
    if basis != "growing" or epoch == 0 or epoch % grow_every or rank >= max_rank:
        return state
    kept = grow_basis(state.kept, min(grow_by, max_rank - rank), key)
    return state._replace(kept=kept)
