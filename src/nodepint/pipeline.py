"""run(cfg) -> summary: build, train, evaluate. Pure except for the callbacks it is given.

The stages take and return explicit states and keys. Everything that touches the outside
world (console, files, W&B, figures, checkpoints) sits behind `Callbacks`, which the edge
(`nodepint.report`) implements.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import Config, ConfigError, check_problem_combo
from nodepint.integrators import chunk_boundaries, make_propagators
from nodepint.mesh import mesh_from_config
from nodepint.models import NeuralODE, build_model, rate_scale
from nodepint.pint import PintSettings
from nodepint.pint.bases import grow_basis
from nodepint.problems import Dataset, Problem, make_problem
from nodepint.stiffness import check_stiffness
from nodepint.training import (
    EpochRecord,
    StepStats,
    TimeSolver,
    TrainState,
    batches_per_epoch,
    grow_if_due,
    init_train_state,
    make_optimizer,
    make_steps,
    train_epoch,
)


class Evaluation(NamedTuple):
    """The trained model on the test set, beside the sequential solve of the same model."""

    problem: str
    task: str
    output_names: tuple[str, ...]
    ts: np.ndarray
    dataset: Dataset
    pint_outputs: np.ndarray
    sequential_outputs: np.ndarray
    stats: StepStats
    # A dense time grid and the model's outputs on it, for the first test trajectories.
    dense_ts: np.ndarray
    dense_outputs: np.ndarray
    model: NeuralODE


class Callbacks(Protocol):
    def on_build(self, info: dict[str, Any]) -> None: ...

    def restore(
        self, template: Callable[[int], TrainState]
    ) -> tuple[TrainState, list[EpochRecord]] | None: ...

    def on_warning(self, message: str) -> None: ...

    def on_epoch(self, state: TrainState, record: EpochRecord, total_epochs: int) -> None: ...

    def on_evaluate(self, evaluation: Evaluation, history: list[EpochRecord]) -> None: ...

    def on_control(self, outcome: Any, summary: dict[str, Any]) -> None: ...


def solver_for(cfg: Config, ts: np.ndarray, mesh=None) -> TimeSolver:
    """Build the PinT solver of the run over the problem's time span, sharded over `mesh`."""
    chunks = cfg.pint.chunks
    settings = PintSettings(
        method=cfg.pint.method,
        basis=cfg.pint.basis,
        chunks=chunks,
        rtol=cfg.pint.rtol,
        atol=cfg.pint.atol,
        max_iters=cfg.pint.max_iters or chunks,
        scan=cfg.pint.scan,
        rank=cfg.pint.max_rank,
        damping=cfg.pint.damping,
        divergence_window=cfg.pint.divergence_window,
        mesh=mesh,
    )
    fine, coarse = make_propagators(cfg.integrator, chunks)
    tau = chunk_boundaries(cfg.problem.t0, cfg.problem.t1, chunks)
    # combo.train=dal trains by the continuous adjoint and overrides train.grad.
    grad = "dal" if cfg.combo.train == "dal" else cfg.train.grad
    return TimeSolver(settings, fine, coarse, tau, jnp.asarray(ts), grad, cfg.pint.on_fail)


def growing_rank(cfg: Config, epochs_done: int) -> int:
    """Rank of the kept `growing` basis after `epochs_done` epochs (0 for other bases)."""
    p = cfg.pint
    if p.basis != "growing":
        return 0
    growths = max(epochs_done - 1, 0) // p.grow_every
    return min(p.max_rank, p.grow_by * (1 + growths))


def initial_basis(cfg: Config, size: int, dtype, key) -> jax.Array:
    """The kept basis before training: grow_by random directions for `growing`, else empty."""
    empty = jnp.zeros((size, 0), dtype=dtype)
    return grow_basis(empty, growing_rank(cfg, 0), key) if growing_rank(cfg, 0) else empty


def relative_deviation(a: np.ndarray, b: np.ndarray) -> float:
    """max over trajectories of max|a - b| / max|b|: PinT against the sequential solve."""
    axes = tuple(range(1, a.ndim))
    scale = np.maximum(np.max(np.abs(b), axis=axes), np.finfo(b.dtype).tiny)
    return float(np.max(np.max(np.abs(a - b), axis=axes) / scale))


def reset_peak_rss() -> None:
    """Restart the process's peak-memory count, where Linux allows it.

    Writing 5 to /proc/self/clear_refs resets VmHWM (Linux 4.0 and later), so that each job
    of a Hydra multirun, which runs its jobs one after the other in one process, reports its
    own peak. Elsewhere this does nothing and the peak is the process's.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory in MiB since the last `reset_peak_rss` (or process start).

    Read from VmHWM in /proc/self/status; where that file is missing, getrusage's
    ru_maxrss, the whole process's peak. Memory that the process still keeps from an
    earlier job of a multirun counts in the next job's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB (macOS in bytes; nodepint is run on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn, *args):
    """Run `fn` once to compile, then time a second call (seconds, blocking on the result)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def build(cfg: Config) -> tuple[Problem, Dataset, NeuralODE, TimeSolver, dict[str, Any]]:
    """Problem, data, model and solver of a run, and a description of them for the log."""
    jax.config.update("jax_enable_x64", cfg.precision == "float64")
    dtype = jnp.float64 if cfg.precision == "float64" else jnp.float32
    key = jr.PRNGKey(cfg.seed)
    data_key, model_key = jr.split(key)
    problem = make_problem(cfg.problem)
    check_stiffness(cfg, problem)
    check_problem_combo(cfg, problem.control_size)
    data = problem.make_data(data_key)
    data = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, data
    )
    rates = None
    if problem.task == "regression":
        rates = rate_scale(data.train.targets, data.train.mask, problem.observation_times())
    basis = None
    if cfg.model.encoder == "projection":
        basis = problem.reduced_basis(data.train, cfg.model.latent_size, jr.fold_in(model_key, 1))
        basis = (basis[0].astype(dtype), basis[1])
        # Scale the latent rates by those of the training trajectories' coordinates in the
        # basis, because the rates of single field values do not carry over to them.
        latent = np.asarray(data.train.targets) @ np.asarray(basis[0])
        rates = rate_scale(latent, data.train.mask, problem.observation_times())
    model = build_model(
        cfg.model,
        problem.input_size,
        problem.output_size,
        model_key,
        dtype,
        rates,
        basis,
        problem.control_size,
        problem.signal_intervals,
    )
    mesh = mesh_from_config(cfg.mesh)
    batch_size, _ = batches_per_epoch(cfg.train, data.train.inputs.shape[0])
    if batch_size % cfg.mesh.data:
        raise ConfigError(
            f"mesh.data={cfg.mesh.data} does not divide the batch size {batch_size} (the "
            f"training set has only {data.train.inputs.shape[0]} trajectories): lower "
            "mesh.data or train.batch_size."
        )
    solver = solver_for(cfg, problem.observation_times(), mesh)
    info = {
        "problem": problem.name,
        "train": int(data.train.inputs.shape[0]),
        "val": int(data.val.inputs.shape[0]),
        "test": int(data.test.inputs.shape[0]),
        "state_size": int(model.initial_state(data.train.inputs[0]).shape[0]),
        "pint": f"{cfg.pint.method}/{cfg.pint.basis}",
        "chunks": cfg.pint.chunks,
        "fine": f"{cfg.integrator.fine.solver} x{solver.fine.steps} per chunk"
        + (" (adaptive)" if cfg.integrator.fine.adaptive else ""),
        "coarse": f"{cfg.integrator.coarse.solver} x{solver.coarse.steps}",
        "replicas": cfg.pint.replicas,
        "mesh": "single device"
        if mesh is None
        else " x ".join(f"{k}={v}" for k, v in mesh.shape.items()),
        "devices": len(jax.devices()),
        "backend": jax.default_backend(),
    }
    return problem, data, model, solver, info


def evaluate(problem, data, model, solver, steps, kept, key) -> tuple[Evaluation, dict[str, float]]:
    """Test-set metrics of `model`, with the PinT solve checked against the sequential one."""
    test = data.test
    (pint_outputs, stats), pint_seconds = _timed(
        steps.evaluate, model, test.inputs, test.targets, test.mask, kept, key
    )
    sequential = solver.with_method("sequential")
    seq_eval = eqx.filter_jit(lambda m, x, k: sequential.predict_batch(m, x, k)[0])
    seq_outputs, seq_seconds = _timed(seq_eval, model, test.inputs, key)

    shown = min(3, test.inputs.shape[0])
    dense_ts = np.linspace(float(solver.tau[0]), float(solver.tau[-1]), 201)
    # The dense curves for figures come from the sequential solve, which the PinT solve
    # matches to its tolerance (max_relative_deviation), and which compiles faster.
    dense = dataclasses.replace(sequential, ts=jnp.asarray(dense_ts))
    dense_outputs = eqx.filter_jit(lambda m, x, k: dense.predict_batch(m, x, k)[0])(
        model, test.inputs[:shown], key
    )
    metrics = {
        "test_loss": float(stats.loss),
        "pint_solve_seconds": pint_seconds,
        "sequential_solve_seconds": seq_seconds,
        "max_relative_deviation": relative_deviation(
            np.asarray(pint_outputs), np.asarray(seq_outputs)
        ),
    }
    if problem.task == "classification":
        metrics["test_accuracy"] = float(stats.accuracy)
    evaluation = Evaluation(
        problem.name,
        problem.task,
        problem.output_names,
        np.asarray(solver.ts),
        data,
        np.asarray(pint_outputs),
        np.asarray(seq_outputs),
        jax.tree_util.tree_map(np.asarray, stats),
        dense_ts,
        np.asarray(dense_outputs),
        model,
    )
    return evaluation, metrics


def run(cfg: Config, callbacks: Callbacks) -> dict[str, Any]:
    """Build, train and evaluate; return the summary (without status, which the edge adds)."""
    run_start = time.perf_counter()
    reset_peak_rss()

    # -- build
    problem, data, model, solver, info = build(cfg)
    batch_size, n_batches = batches_per_epoch(cfg.train, data.train.inputs.shape[0])
    info.update(batch_size=batch_size, batches_per_epoch=n_batches)
    callbacks.on_build(info)
    optimizer = make_optimizer(cfg.optim, cfg.train.epochs * n_batches)
    train_key, eval_key = jr.split(jr.fold_in(jr.PRNGKey(cfg.seed), 1))
    control_key = jr.fold_in(jr.PRNGKey(cfg.seed), 3)
    trained = model
    if cfg.combo.joint:
        # dp_dp: the control is trained with the weights, on data misfit + w * J(u).
        from nodepint.control.joint import JointModel, joint_optimizer, make_joint_steps
        from nodepint.control.stage import control_solver, initial_control

        dtype = data.train.inputs.dtype
        trained = JointModel(model, initial_control(cfg, problem, control_key, dtype))
        optimizer = joint_optimizer(trained, optimizer, cfg.control.lr)
        steps = make_joint_steps(
            solver,
            control_solver(cfg, solver),
            optimizer,
            problem.task,
            problem,
            data.mean,
            data.std,
            cfg.control.joint_weight,
            control_key,
            cfg.train.average,
        )
    else:
        steps = make_steps(solver, optimizer, problem.task, cfg.train.average)

    size = int(info["state_size"])
    basis_key, grow_key = jr.split(jr.fold_in(jr.PRNGKey(cfg.seed), 2))
    kept = initial_basis(cfg, size, data.train.inputs.dtype, basis_key)
    _, untrained = steps.evaluate(
        model, data.test.inputs, data.test.targets, data.test.mask, kept, eval_key
    )
    state = init_train_state(
        trained, optimizer, data.train, cfg.pint.chunks, size, kept, cfg.pint.replicas
    )
    history: list[EpochRecord] = []

    def template(epochs_done: int) -> TrainState:
        rank = growing_rank(cfg, epochs_done)
        return state._replace(kept=jnp.zeros((size, rank), dtype=kept.dtype))

    restored = callbacks.restore(template) if cfg.train.resume else None
    if restored is not None:
        state, history = restored

    # -- train
    train_start = time.perf_counter()
    for epoch in range(int(state.epoch), cfg.train.epochs):
        p = cfg.pint
        state = grow_if_due(
            state, p.basis, p.grow_by, p.grow_every, p.max_rank, jr.fold_in(grow_key, epoch)
        )
        state, record = train_epoch(
            state,
            steps,
            data.train,
            data.val,
            cfg.train,
            cfg.pint.warm_start,
            jr.fold_in(train_key, epoch),
            time.perf_counter,
            ts=np.asarray(solver.ts),
            on_fail=cfg.pint.on_fail,
            sync_every=cfg.train.sync_every,
        )
        if record.nonconverged and cfg.pint.on_fail == "warn":
            callbacks.on_warning(
                f"epoch {record.epoch}: {record.nonconverged} PinT solves stopped above "
                "tolerance (pint.max_iters reached); the loss used their last iterate."
            )
        history.append(record)
        callbacks.on_epoch(state, record, cfg.train.epochs)
    train_seconds = time.perf_counter() - train_start

    # -- evaluate
    final_model = state.best_model if cfg.train.keep_best else state.model
    joint = None
    if cfg.combo.joint:
        n_steps = int(state.step)
        joint = (final_model.control, n_steps, train_seconds)
        final_model = final_model.model
    evaluation, test_metrics = evaluate(
        problem, data, final_model, solver, steps, state.kept, eval_key
    )
    callbacks.on_evaluate(evaluation, history)

    # -- optimal control of the learned model, evaluated on the true system
    control_summary = None
    if cfg.combo.control != "none":
        from nodepint.control.stage import run_control

        outcome, control_summary = run_control(
            cfg, problem, data, final_model, solver, control_key, joint
        )
        callbacks.on_control(outcome, control_summary)

    # -- report
    its = [r.iterations_mean for r in history]
    eval_its = np.asarray(evaluation.stats.iterations)
    metrics = {
        "test_loss": test_metrics["test_loss"],
        "untrained_test_loss": float(untrained.loss),
        "final_train_loss": history[-1].train_loss if history else None,
        "best_val_loss": float(state.best_val_loss) if history else None,
    }
    if problem.task == "classification":
        metrics["test_accuracy"] = test_metrics["test_accuracy"]
        metrics["untrained_test_accuracy"] = float(untrained.accuracy)
    seq_time = test_metrics["sequential_solve_seconds"]
    pint_time = test_metrics["pint_solve_seconds"]
    return {
        "problem": {"name": problem.name},
        "pint": {
            "name": cfg.pint.name,
            "method": cfg.pint.method,
            "basis": cfg.pint.basis,
            "scan": cfg.pint.scan,
            "chunks": cfg.pint.chunks,
            "warm_start": cfg.pint.warm_start,
            "replicas": cfg.pint.replicas,
            "iterations_mean": float(np.mean(its)) if its else float(eval_its.mean()),
            "iterations_max": int(max([r.iterations_max for r in history] + [eval_its.max()])),
            "test_iterations_mean": float(eval_its.mean()),
            "diverged": int(sum(r.diverged for r in history)),
            "fallbacks": int(sum(r.fallbacks for r in history)),
            "basis_rank": int(state.kept.shape[1]),
            "nonconverged": int(
                sum(r.nonconverged for r in history)
                + np.sum(~np.asarray(evaluation.stats.converged))
            ),
            "max_relative_deviation": test_metrics["max_relative_deviation"],
        },
        "combo": {
            "name": cfg.combo.name,
            "train": cfg.combo.train,
            "control": cfg.combo.control,
            "train_grad": solver.grad,
        },
        "control": control_summary,
        "metrics": metrics,
        "timing": {
            "train_seconds": train_seconds,
            "compile_count": steps.compile_count(),
            "total_seconds": time.perf_counter() - run_start,
            "pint_solve_seconds": pint_time,
            "sequential_solve_seconds": seq_time,
            "speedup_vs_sequential": seq_time / pint_time if pint_time > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
        },
        "epochs_completed": int(state.epoch),
        "devices": info["devices"],
        "backend": info["backend"],
    }
