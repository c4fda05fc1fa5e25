"""Benchmarks: PinT solves and gradients against one sequential diffrax solve.

Every case runs in this one process (B5 in one subprocess, because the host device count
must be set before JAX starts). Each timed function is called once to compile, then
`--reps` more times; rows report the median wall time. The script writes `bench.json`
and replaces the generated section of `BENCHMARKS.md`.

    python scripts/bench.py            # make bench
    python scripts/bench.py --quick    # make bench-quick: fewer presets, chunk counts, epochs

The script trains the lorenz neural vector field itself, with diffrax sequential solves
(Adam, the lorenz data set), and caches it under `.bench-cache/`, which git ignores.
Delete that folder to train it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from omegaconf import OmegaConf

jax.config.update("jax_enable_x64", True)

from nodepint.config import (  # noqa: E402
    CoarseConfig,
    Config,
    IntegratorConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    PintConfig,
    ProblemConfig,
    SolverConfig,
    TrainConfig,
)
from nodepint.gradients import pint_solve_dal, pint_solve_implicit  # noqa: E402
from nodepint.integrators import chunk_boundaries, make_propagators  # noqa: E402
from nodepint.mesh import make_mesh  # noqa: E402
from nodepint.models import NeuralODE, build_model, field_function  # noqa: E402
from nodepint.pint import PintSettings, pint_solve  # noqa: E402
from nodepint.pint.bases import grow_basis  # noqa: E402
from nodepint.pint.solve import _correct, sweep  # noqa: E402
from nodepint.pipeline import build, peak_rss_mb, relative_deviation, solver_for  # noqa: E402
from nodepint.training import (  # noqa: E402
    Steps,
    init_train_state,
    make_optimizer,
    make_steps,
    train_epoch,
)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench-cache"
MARK_BEGIN = "<!-- bench:begin (written by scripts/bench.py) -->"
MARK_END = "<!-- bench:end -->"
ALL_PRESETS = (
    "jacobi",
    "parareal",
    "krylov_parareal",
    "newton",
    "diagonal",
    "random1d",
    "sensitivity",
    "growing",
)
# The PinT stopping tolerance of the benchmark solves. A defect of 1e-12 per chunk, summed
# over at most 512 chunks and amplified by the Lorenz flow over one time unit, stays well
# below the 1e-8 relative deviation that the forward target allows.
PINT_TOL = 1e-12


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes and repetitions of one benchmark run."""

    # B1, B2, B5: fine Tsit5 steps over the span [0, 1] of one trajectory.
    steps: int = 2**14
    chunk_grid: tuple[int, ...] = (64, 128, 256, 512)
    # Coarse Tsit5 steps per chunk. With 2 steps and 256 or more chunks the coarse sweep of
    # the trained field already meets the tolerance, so the solve needs one fine sweep only.
    coarse_steps: int = 2
    presets: tuple[str, ...] = ALL_PRESETS
    reps: int = 5
    # Timed calls of each forward solve (B1, its profile, B5). These take well under a
    # second each, so more calls cost little and make the median steadier on a busy machine.
    forward_reps: int = 9
    # B2: observation times of the trajectory loss.
    observations: int = 64
    # B3
    trajectories: int = 256
    throughput_steps: int = 2**14
    # B3 chunk count and PinT tolerance. The batch of trajectories already keeps the cores
    # busy, so PinT gains nothing from more chunks here, and every correction costs a full
    # extra fine solve for all trajectories, since the vmapped loop runs until the last one
    # converges. So B3 uses 128 chunks, 4 coarse steps per chunk and the configs' default
    # tolerance (1e-10). The B3 row reports the most iterations that any trajectory took.
    throughput_chunks: int = 128
    throughput_coarse_steps: int = 4
    throughput_tol: float = 1e-10
    # Whether B3 also times diffrax (B1 already compares it with nodepint sequential).
    throughput_diffrax: bool = True
    # B4: fine steps of the training solves, PinT chunks, the epoch limit and the target.
    # 32 chunks put the 33 observation times of the lorenz data on the chunk boundaries, so
    # the PinT loss reads the shooting states and solves no chunk a second time.
    train_steps: int = 1024
    train_chunks: int = 32
    train_max_epochs: int = 30
    target_val_loss: float = 0.9
    # The presets trained in B4. The ratio takes the first to reach the target. The level-2
    # presets and jacobi take 20 to 32 corrections per warm-started lorenz solve at 32
    # chunks (the table in docs/pint.md), so they cannot win on time here.
    train_presets: tuple[str, ...] = ("parareal", "newton")
    # Epochs of the diffrax training that produces the benchmarked vector field.
    field_epochs: int = 60


FULL = Sizes()
QUICK = Sizes(
    chunk_grid=(256, 512),
    presets=("parareal", "newton"),
    reps=3,
    throughput_steps=2**11,
    throughput_diffrax=False,
    train_presets=("parareal",),
    train_max_epochs=4,
    target_val_loss=0.965,
)


# -- measurement helpers


def median_seconds(
    fn: Callable, args: tuple, reps: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float, list[float], Any]:
    """Call `fn(*args)` once (compile and warm-up), then `reps` times.

    Returns (median seconds, seconds of the first call, all timed seconds, last output).
    Every call blocks until its result is ready.
    """
    start = clock()
    out = jax.block_until_ready(fn(*args))
    first = clock() - start
    times = []
    for _ in range(reps):
        start = clock()
        out = jax.block_until_ready(fn(*args))
        times.append(clock() - start)
    return statistics.median(times), first, times, out


def speedup(baseline_seconds: float, seconds: float) -> float:
    """Return how many times faster than the baseline a time is (above 1: faster)."""
    return baseline_seconds / seconds


def max_relative_deviation(values, reference) -> float:
    """max |values - reference| / max |reference| over all entries of two arrays."""
    return relative_deviation(np.asarray(values)[None], np.asarray(reference)[None])


def tree_relative_deviation(tree, reference) -> float:
    """`max_relative_deviation` of two pytrees with the same structure, over all leaves."""
    flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    flat_ref = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(reference)])
    return max_relative_deviation(flat, flat_ref)


def peak_rss_mib() -> float:
    """Return the peak resident memory of this process so far, in MiB.

    `peak_rss_mb` reads VmHWM, not `ru_maxrss`, which keeps the parent's peak across `exec`
    and so would be wrong for the B5 subprocess. The bench never resets the mark.
    """
    return peak_rss_mb()


def replace_section(text: str, section: str) -> str:
    """Put `section` between the bench markers of `text`, or append it when they are missing."""
    block = f"{MARK_BEGIN}\n{section.rstrip()}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head = text.split(MARK_BEGIN)[0]
        tail = text.split(MARK_END, 1)[1]
        return head + block + tail
    return text.rstrip() + "\n\n" + block + "\n"


def row(case: str, name: str, **fields) -> dict[str, Any]:
    """Build one result row. Its `peak_rss_mib` is the process peak after the row ran."""
    return {"case": case, "name": name, **fields, "peak_rss_mib": round(peak_rss_mib(), 1)}


def not_measured(case: str, name: str, reason: str) -> dict[str, Any]:
    return {"case": case, "name": name, "status": "not measured", "reason": reason}


# -- the model and data


def lorenz_config(sizes: Sizes, fine_steps: int, pint_name: str, chunks: int) -> Config:
    """Build the lorenz config as conf/problem/lorenz.yaml sets it, as a dataclass."""
    preset = preset_config(pint_name)
    return Config(
        problem=ProblemConfig(
            name="lorenz", t0=0.0, t1=1.0, n_obs=33, n_trajectories=128, noise=0.01
        ),
        model=ModelConfig(activation="swish"),
        integrator=IntegratorConfig(
            fine=SolverConfig(solver="tsit5", steps=fine_steps),
            coarse=CoarseConfig(solver="tsit5", steps_per_chunk=sizes.coarse_steps),
        ),
        pint=PintConfig(
            name=pint_name,
            method=preset["method"],
            basis=preset["basis"],
            chunks=chunks,
            scan=preset.get("scan", "sequential"),
            max_rank=preset.get("max_rank", 2),
            warm_start=True,
        ),
        train=TrainConfig(epochs=sizes.train_max_epochs, batch_size=16),
        optim=OptimConfig(lr=3.0e-2),
        logger=LoggerConfig(name="none"),
        seed=0,
    )


def preset_config(name: str) -> dict[str, Any]:
    """Load the keys of conf/pint/NAME.yaml."""
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "pint" / f"{name}.yaml"))


def diffrax_outputs(model: NeuralODE, x, ts, t0: float, t1: float, steps: int):
    """Compute the model's outputs at `ts` by one diffeqsolve over [t0, t1], fixed Tsit5 steps."""
    z0 = model.encoder(x)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field_function),
        diffrax.Tsit5(),
        t0,
        t1,
        (t1 - t0) / steps,
        z0,
        args=model.field,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=steps + 1,
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
    )
    return jax.vmap(model.decoder)(sol.ys)


def sequential_steps(cfg: Config, ts, optimizer) -> Steps:
    """Build nodepint's training steps for one sequential diffrax solve over the span.

    One chunk and method `sequential` make the forward map a single diffeqsolve with fixed
    Tsit5 steps, and `unroll` differentiates it with diffrax's RecursiveCheckpointAdjoint.
    """
    cfg = dataclasses.replace(
        cfg,
        pint=dataclasses.replace(
            cfg.pint, name="sequential", method="sequential", basis="none", chunks=1
        ),
        train=dataclasses.replace(cfg.train, grad="unroll"),
    )
    return make_steps(solver_for(cfg, np.asarray(ts)), optimizer, "regression")


def train(
    cfg: Config,
    steps: Steps,
    model,
    optimizer,
    data,
    epochs: int,
    target: float | None,
    log: Callable[[str], None] = lambda message: None,
):
    """Train for up to `epochs` epochs; stop early once the validation loss is <= `target`.

    Returns (model, history, compile seconds). The history lists, per epoch, the validation
    loss and the training seconds so far, compilation excluded: one epoch on the initial
    state compiles both steps first, and the compile seconds include that epoch.
    """
    size = int(model.encoder(data.train.inputs[0]).shape[0])
    kept = jnp.zeros((size, 0), dtype=data.train.inputs.dtype)
    state = init_train_state(model, optimizer, data.train, cfg.pint.chunks, size, kept)
    key = jr.PRNGKey(cfg.seed + 1)

    # One epoch on the initial state compiles both steps; its result is thrown away.
    start = time.perf_counter()
    train_epoch(
        state, steps, data.train, data.val, cfg.train, cfg.pint.warm_start, key, time.perf_counter
    )
    compile_seconds = time.perf_counter() - start

    history, elapsed = [], 0.0
    for epoch in range(epochs):
        state, record = train_epoch(
            state,
            steps,
            data.train,
            data.val,
            cfg.train,
            cfg.pint.warm_start,
            jr.fold_in(key, epoch),
            time.perf_counter,
        )
        elapsed += record.epoch_seconds
        history.append(
            {
                "epoch": record.epoch,
                "val_loss": record.val_loss,
                "seconds": elapsed,
                "iterations_mean": record.iterations_mean,
            }
        )
        log(
            f"  epoch {record.epoch}: validation loss {record.val_loss:.4g},"
            f" {record.epoch_seconds:.2f} s, {record.iterations_mean:.2f} PinT iterations"
        )
        if target is not None and record.val_loss <= target:
            break
    return state.model, history, compile_seconds


def trained_model(sizes: Sizes, data, initial: NeuralODE, log: Callable[[str], None]):
    """Load or train the lorenz model: `sizes.field_epochs` epochs of diffrax training.

    `data` and `initial` come from `build` of the lorenz config. Returns (model, cache path,
    whether it was trained now).
    """
    cfg = lorenz_config(sizes, 64, "sequential", 1)
    path = CACHE / f"lorenz-field-seed{cfg.seed}-epochs{sizes.field_epochs}.eqx"
    if path.exists():
        return eqx.tree_deserialise_leaves(path, initial), path, False
    log(f"training the lorenz vector field for {sizes.field_epochs} epochs (cached in {path})")
    optimizer = make_optimizer(cfg.optim, sizes.field_epochs * 5)
    steps = sequential_steps(cfg, data.ts, optimizer)
    model, history, _ = train(cfg, steps, initial, optimizer, data, sizes.field_epochs, None)
    log(f"  validation loss {history[-1]['val_loss']:.3g} after {sizes.field_epochs} epochs")
    CACHE.mkdir(exist_ok=True)
    eqx.tree_serialise_leaves(path, model)
    # The output scale is static (not a leaf), so a template needs it to load the file.
    path.with_suffix(".json").write_text(json.dumps({"output_scale": model.field.output_scale}))
    return model, path, True


def load_field(path: Path):
    """Load the vector field saved by `trained_model`, without building the data set."""
    scale = tuple(json.loads(path.with_suffix(".json").read_text())["output_scale"])
    template = build_model(ModelConfig(activation="swish"), 3, 3, jr.PRNGKey(0), jnp.float64, scale)
    return eqx.tree_deserialise_leaves(path, template).field


# -- B1 forward


def diffrax_forward(steps: int, saveat: diffrax.SaveAt):
    """Build one jitted diffeqsolve of the field over [0, 1] with `steps` fixed Tsit5 steps."""

    @eqx.filter_jit
    def solve(field, y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field_function),
            diffrax.Tsit5(),
            0.0,
            1.0,
            1.0 / steps,
            y0,
            args=field,
            saveat=saveat,
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=steps + 1,
        ).ys

    return solve


def pint_parts(
    preset: str, chunks: int, steps: int, size: int, coarse_steps: int, tol: float = PINT_TOL
):
    """Settings, propagators, chunk boundaries and kept basis of one preset at `chunks`."""
    p = preset_config(preset)
    settings = PintSettings(
        method=p["method"],
        basis=p["basis"],
        chunks=chunks,
        rtol=tol,
        atol=tol,
        max_iters=chunks,
        scan=p.get("scan", "sequential"),
        rank=p.get("max_rank", 2),
    )
    integrator = IntegratorConfig(
        fine=SolverConfig(solver="tsit5", steps=steps),
        coarse=CoarseConfig(solver="tsit5", steps_per_chunk=coarse_steps),
    )
    fine, coarse = make_propagators(integrator, chunks)
    tau = chunk_boundaries(0.0, 1.0, chunks)
    kept = None
    if p["basis"] == "growing":
        # The kept basis at its largest rank, as training would end with it.
        kept = grow_basis(jnp.zeros((size, 0)), p.get("max_rank", 3), jr.PRNGKey(7))
    return settings, fine, coarse, tau, kept


def pint_forward(
    preset: str, chunks: int, steps: int, size: int, coarse_steps: int, tol: float = PINT_TOL
):
    settings, fine, coarse, tau, kept = pint_parts(preset, chunks, steps, size, coarse_steps, tol)

    @eqx.filter_jit
    def solve(field, y0):
        return pint_solve(
            settings,
            fine,
            coarse,
            field_function,
            y0,
            tau,
            field,
            jr.PRNGKey(3),
            loop="lax",
            kept=kept,
        )

    return solve


def forward_case(field, y0, sizes: Sizes, log) -> tuple[list[dict], dict]:
    """B1: diffrax sequential, nodepint sequential and every preset over the chunk grid."""
    steps, rows = sizes.steps, []
    finest = max(sizes.chunk_grid)
    if any(finest % n for n in sizes.chunk_grid):
        raise ValueError(f"every chunk count of {sizes.chunk_grid} must divide {finest}")
    # The reference states at the finest chunk boundaries, untimed, because saving there
    # costs diffrax extra work that the timed solve below (saving only y(1)) does not do.
    reference = diffrax_forward(steps, diffrax.SaveAt(ts=chunk_boundaries(0.0, 1.0, finest)))(
        field, y0
    )

    base, compile_s, times, end = median_seconds(
        diffrax_forward(steps, diffrax.SaveAt(t1=True)), (field, y0), sizes.forward_reps
    )
    rows.append(
        row(
            "B1",
            "diffrax sequential",
            seconds=base,
            times=times,
            compile_seconds=compile_s,
            speedup_vs_diffrax=1.0,
            max_relative_deviation=max_relative_deviation(end[0], reference[-1]),
        )
    )
    log(f"B1 diffrax sequential: {base * 1e3:.1f} ms")

    def pint_row(name, preset, chunks):
        seconds, compile_s, times, sol = median_seconds(
            pint_forward(preset, chunks, steps, y0.shape[0], sizes.coarse_steps),
            (field, y0),
            sizes.forward_reps,
        )
        deviation = max_relative_deviation(sol.states, reference[:: finest // chunks])
        r = row(
            "B1",
            name,
            preset=preset,
            chunks=chunks,
            seconds=seconds,
            times=times,
            compile_seconds=compile_s,
            speedup_vs_diffrax=speedup(base, seconds),
            max_relative_deviation=deviation,
            iterations=int(sol.iterations),
            converged=bool(sol.converged),
        )
        log(
            f"B1 {name} N={chunks}: {seconds * 1e3:.1f} ms, x{r['speedup_vs_diffrax']:.2f}, "
            f"{r['iterations']} iterations, deviation {deviation:.2e}"
        )
        return r

    rows.append(pint_row("nodepint sequential", "sequential", min(sizes.chunk_grid)))
    best = None
    for preset in sizes.presets:
        candidates = [pint_row(preset, preset, n) for n in sizes.chunk_grid]
        fastest = min(candidates, key=lambda r: r["seconds"] if r["converged"] else np.inf)
        for r in candidates:
            r["best_of_grid"] = r is fastest
        rows.extend(candidates)
        if fastest["converged"] and (best is None or fastest["seconds"] < best["seconds"]):
            best = fastest
    if best is not None:
        rows += profile_rows(field, y0, best, sizes, log)
    return rows, best


def profile_rows(field, y0, best: dict, sizes: Sizes, log) -> list[dict]:
    """Time the parts of the best PinT solve separately: the coarse sweep (the first guess),
    one vmapped fine solve of all chunks, and one correction (the method's update)."""
    settings, fine, coarse, tau, kept = pint_parts(
        best["preset"], best["chunks"], sizes.steps, y0.shape[0], sizes.coarse_steps
    )
    states = sweep(coarse, field_function, y0, tau, field)
    ends = jax.vmap(fine, in_axes=(None, 0, 0, 0, None))(
        field_function, states[:-1], tau[:-1], tau[1:], field
    )

    def coarse_sweep(f, y):
        return sweep(coarse, field_function, y, tau, f)

    def fine_solve(f, s):
        return jax.vmap(fine, in_axes=(None, 0, 0, 0, None))(
            field_function, s[:-1], tau[:-1], tau[1:], f
        )

    def correction(f, s, e):
        return _correct(
            settings, fine, coarse, field_function, s, e, y0, tau, f, jr.PRNGKey(3), kept
        )

    rows = []
    for name, fn, args in [
        ("coarse sweep", coarse_sweep, (field, y0)),
        ("fine solve of all chunks", fine_solve, (field, states)),
        ("one correction", correction, (field, states, ends)),
    ]:
        seconds, compile_s, times, _ = median_seconds(eqx.filter_jit(fn), args, sizes.forward_reps)
        rows.append(
            row(
                "B1 profile",
                f"{best['preset']}: {name}",
                preset=best["preset"],
                chunks=best["chunks"],
                seconds=seconds,
                times=times,
                compile_seconds=compile_s,
            )
        )
        log(f"B1 profile {name}: {seconds * 1e3:.1f} ms")
    return rows


# -- B2 gradient


def observation_indices(chunks: int, observations: int) -> np.ndarray:
    """Indices of the observation times t_k = k / observations (k = 1..observations) among
    the chunk boundaries n / chunks; the chunk count must be a multiple of `observations`."""
    if chunks % observations:
        raise ValueError(f"chunks={chunks} must be a multiple of observations={observations}")
    return np.arange(1, observations + 1) * (chunks // observations)


def gradient_case(field, y0, best: dict, sizes: Sizes, log) -> tuple[list[dict], dict]:
    """B2: the gradient of a trajectory loss at 64 times, by diffrax and by nodepint."""
    steps, rows = sizes.steps, []
    chunks = max(best["chunks"], sizes.observations)
    preset = best["preset"]
    obs_ts = jnp.arange(1, sizes.observations + 1) / sizes.observations
    idx = observation_indices(chunks, sizes.observations)
    # A fixed target near the trajectory, so the loss and its gradient are of order one.
    target = diffrax_forward(steps, diffrax.SaveAt(ts=obs_ts))(field, y0) + 0.1
    params, static = eqx.partition(field, eqx.is_inexact_array)

    def loss_of(states):
        return jnp.mean((states - target) ** 2)

    def diffrax_loss(p):
        ys = diffrax.diffeqsolve(
            diffrax.ODETerm(field_function),
            diffrax.Tsit5(),
            0.0,
            1.0,
            1.0 / steps,
            y0,
            args=eqx.combine(p, static),
            saveat=diffrax.SaveAt(ts=obs_ts),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=steps + 1,
            adjoint=diffrax.RecursiveCheckpointAdjoint(),
        ).ys
        return loss_of(ys)

    settings, fine, coarse, tau, kept = pint_parts(
        preset, chunks, steps, y0.shape[0], sizes.coarse_steps
    )

    def pint_loss(solve, **options):
        def loss(p):
            sol = solve(
                settings,
                fine,
                coarse,
                field_function,
                y0,
                tau,
                eqx.combine(p, static),
                jr.PRNGKey(3),
                kept=kept,
                **options,
            )
            return loss_of(sol.states[idx])

        return loss

    methods = [
        ("diffrax RecursiveCheckpointAdjoint", diffrax_loss),
        ("nodepint DP-unroll", pint_loss(pint_solve, loop="checkpointed")),
        ("nodepint DP-implicit", pint_loss(pint_solve_implicit)),
        ("nodepint DAL", pint_loss(pint_solve_dal)),
    ]

    reference_grad, base = None, None
    for name, loss in methods:
        grad_fn = eqx.filter_jit(jax.value_and_grad(loss))
        seconds, compile_s, times, (value, grad) = median_seconds(grad_fn, (params,), sizes.reps)
        if reference_grad is None:
            reference_grad, base = grad, seconds
        r = row(
            "B2",
            name,
            preset=None if name.startswith("diffrax") else preset,
            chunks=None if name.startswith("diffrax") else chunks,
            seconds=seconds,
            times=times,
            compile_seconds=compile_s,
            loss=float(value),
            speedup_vs_diffrax=speedup(base, seconds),
            gradient_max_relative_deviation=tree_relative_deviation(grad, reference_grad),
        )
        rows.append(r)
        log(
            f"B2 {name}: {seconds * 1e3:.1f} ms, x{r['speedup_vs_diffrax']:.2f}, "
            f"gradient deviation {r['gradient_max_relative_deviation']:.2e}"
        )
    pint_rows = [r for r in rows if r.get("preset") and "seconds" in r]
    return rows, min(pint_rows, key=lambda r: r["seconds"])


# -- B3 throughput


def throughput_case(field, y0s, best: dict, sizes: Sizes, log) -> tuple[list[dict], float]:
    """B3: all trajectories at once (vmapped), nodepint sequential against the best preset."""
    steps, chunks, rows = sizes.throughput_steps, sizes.throughput_chunks, []
    size = y0s.shape[1]

    def batched(preset):
        solve = pint_forward(
            preset, chunks, steps, size, sizes.throughput_coarse_steps, sizes.throughput_tol
        )
        return eqx.filter_jit(jax.vmap(solve, in_axes=(None, 0)))

    diffrax_batched = eqx.filter_jit(
        jax.vmap(diffrax_forward(steps, diffrax.SaveAt(t1=True)), in_axes=(None, 0))
    )
    candidates = [
        ("diffrax sequential", diffrax_batched),
        ("nodepint sequential", batched("sequential")),
        (best["preset"], batched(best["preset"])),
    ]
    if not sizes.throughput_diffrax:
        candidates = candidates[1:]
    results = {}
    for name, fn in candidates:
        seconds, compile_s, times, out = median_seconds(fn, (field, y0s), sizes.reps)
        results[name] = (seconds, out)
        extra = {}
        if name == best["preset"]:
            extra = {
                "iterations_max": int(jnp.max(out.iterations)),
                "converged": bool(jnp.all(out.converged)),
                "max_relative_deviation": max_relative_deviation(
                    out.states, results["nodepint sequential"][1].states
                ),
            }
        rows.append(
            row(
                "B3",
                name,
                preset=None if name.startswith("diffrax") else name.split()[-1],
                chunks=None if name.startswith("diffrax") else chunks,
                trajectories=int(y0s.shape[0]),
                steps=steps,
                seconds=seconds,
                times=times,
                compile_seconds=compile_s,
                **extra,
            )
        )
        log(f"B3 {name}: {seconds:.3f} s for {y0s.shape[0]} trajectories")
    ratio = results[best["preset"]][0] / results["nodepint sequential"][0]
    rows[-1]["ratio_vs_sequential"] = ratio
    return rows, ratio


# -- B4 time to accuracy


def training_case(sizes: Sizes, data, model, log) -> tuple[list[dict], float]:
    """B4: training time to a fixed validation loss, diffrax sequential against PinT.

    Every preset of `sizes.train_presets` trains with warm starts, and the ratio takes the one
    that reaches the target first: the best PinT configuration is measured, not assumed
    from B1 (a Newton correction costs more than a parareal one, and training solves make
    corrections where B1's solve makes none). All runs start from the same initial `model`
    and use the same `data` and batch order.
    """
    rows, reached = [], {}
    for name in ("diffrax sequential", *sizes.train_presets):
        pint = name != "diffrax sequential"
        chunks = sizes.train_chunks if pint else 1
        cfg = lorenz_config(sizes, sizes.train_steps, name if pint else "sequential", chunks)
        optimizer = make_optimizer(cfg.optim, cfg.train.epochs * 5)
        if pint:
            steps = make_steps(solver_for(cfg, np.asarray(data.ts)), optimizer, "regression")
        else:
            steps = sequential_steps(cfg, data.ts, optimizer)
        _, history, compile_s = train(
            cfg, steps, model, optimizer, data, sizes.train_max_epochs, sizes.target_val_loss, log
        )
        last = history[-1]
        hit = last["val_loss"] <= sizes.target_val_loss
        reached[name] = last["seconds"] if hit else float("nan")
        rows.append(
            row(
                "B4",
                f"{name} (warm starts)" if pint else name,
                preset=name if pint else None,
                chunks=chunks if pint else None,
                train_steps=sizes.train_steps,
                target_val_loss=sizes.target_val_loss,
                reached=hit,
                epochs=last["epoch"],
                seconds=last["seconds"],
                compile_seconds=compile_s,
                val_loss=last["val_loss"],
                history=history,
                time_to_accuracy_ratio=(
                    reached["diffrax sequential"] / reached[name] if pint else None
                ),
            )
        )
        log(
            f"B4 {name}: val loss {last['val_loss']:.4g} after {last['epoch']} epochs, "
            f"{last['seconds']:.1f} s (target {'reached' if hit else 'not reached'})"
        )
    pint_rows = [r for r in rows if r["preset"] and r["reached"]]
    if not pint_rows:
        return rows, float("nan")
    best = min(pint_rows, key=lambda r: r["seconds"])
    best["best_of_grid"] = True
    return rows, best["time_to_accuracy_ratio"]


# -- B5 devices


def devices_case(field, y0, best: dict, sizes: Sizes, out: Path) -> None:
    """B5 (run in the subprocess with 8 host devices): B1's best preset with its chunk axis
    sharded over the devices, against the same work on one device.

    First the vmapped fine solve of all chunks (most of B1's time), then the whole PinT
    solve. Rows are written to `out` as they finish, because a crash inside XLA ends the
    process without a Python exception.
    """
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("time",))
    chunk_sharding = NamedSharding(mesh, P("time"))
    rows = []

    def record(name, chunks, steps_total, seconds, compile_s, times, **extra):
        rows.append(
            row(
                "B5",
                name,
                preset=best["preset"],
                chunks=chunks,
                fine_steps=steps_total,
                seconds=seconds,
                times=times,
                compile_seconds=compile_s,
                **extra,
            )
        )
        out.write_text(json.dumps(rows))

    # -- the fine solve of all chunks, its start states sharded over the chunk axis
    chunks = best["chunks"]
    settings, fine, coarse, tau, kept = pint_parts(
        best["preset"], chunks, sizes.steps, 3, sizes.coarse_steps
    )
    starts = eqx.filter_jit(lambda f, y: sweep(coarse, field_function, y, tau, f))(field, y0)

    @eqx.filter_jit
    def fine_all(field, states, t_start, t_end):
        return jax.vmap(fine, in_axes=(None, 0, 0, 0, None))(
            field_function, states, t_start, t_end, field
        )

    for count, place in [
        (1, lambda x: x),
        (len(devices), lambda x: jax.device_put(x, chunk_sharding)),
    ]:
        args = (field, place(starts[:-1]), place(tau[:-1]), place(tau[1:]))
        seconds, compile_s, times, ends = median_seconds(fine_all, args, sizes.forward_reps)
        record(
            f"fine solve of all chunks on {count} device(s)",
            chunks,
            fine.steps * chunks,
            seconds,
            compile_s,
            times,
            devices=count,
            sharding=str(ends.sharding),
        )

    # -- the whole PinT solve, sharded by PintSettings.mesh: pint_solve constrains the chunk
    # axis of every fine solve to the mesh's `time` axis.
    settings, fine, coarse, tau, kept = pint_parts(
        best["preset"], chunks, sizes.steps, 3, sizes.coarse_steps
    )
    reference = diffrax_forward(sizes.steps, diffrax.SaveAt(ts=tau))(field, y0)
    for count in (1, len(devices)):
        sharded = dataclasses.replace(settings, mesh=make_mesh(time=count))

        @eqx.filter_jit
        def solve(field, y0, sharded=sharded):
            return pint_solve(
                sharded,
                fine,
                coarse,
                field_function,
                y0,
                tau,
                field,
                jr.PRNGKey(3),
                loop="lax",
                kept=kept,
            )

        seconds, compile_s, times, sol = median_seconds(solve, (field, y0), sizes.forward_reps)
        record(
            f"{best['preset']} on {count} device(s)",
            chunks,
            fine.steps * chunks,
            seconds,
            compile_s,
            times,
            devices=count,
            iterations=int(sol.iterations),
            max_relative_deviation=max_relative_deviation(sol.states, reference),
            sharding=str(sol.states.sharding),
        )


def run_devices_subprocess(best: dict, field_path: Path, y0, quick: bool, log) -> list[dict]:
    """Start this script with 8 forced host devices for B5 and return its rows."""
    out = CACHE / "b5.json"
    CACHE.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--case-b5",
        json.dumps(
            {
                "preset": best["preset"],
                "chunks": best["chunks"],
                "field": str(field_path),
                "y0": np.asarray(y0).tolist(),
            }
        ),
        "--b5-out",
        str(out),
    ] + (["--quick"] if quick else [])
    out.unlink(missing_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line and not line.startswith(" ")]
        failure = next(
            (line for line in lines if "Check failed" in line), lines[-1] if lines else ""
        )
        log(f"B5 subprocess failed (exit code {done.returncode}): {failure}")
        rows.append(
            not_measured(
                "B5",
                f"{best['preset']} on 8 device(s)",
                f"the subprocess failed with exit code {done.returncode}: {failure.strip()}",
            )
        )
    base = {}
    for r in rows:
        if "seconds" not in r:
            continue
        kind = r["name"].split(" on ")[0]
        base.setdefault(kind, r["seconds"])
        r["speedup_vs_one_device"] = base[kind] / r["seconds"]
        log(f"B5 {r['name']}: {r['seconds'] * 1e3:.1f} ms")
    return rows


# -- the machine and the report


def machine() -> dict[str, Any]:
    """CPU model, core count, memory and library versions of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kib / 2**20:.1f} GiB"
    except OSError:
        memory = "unknown"
    import jaxlib

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "diffrax": diffrax.__version__,
        "equinox": eqx.__version__,
        "backend": jax.default_backend(),
    }


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """Render the generated section of BENCHMARKS.md: machine, command, summary, every row."""
    m = report["machine"]
    s = report["summary"]
    lines = [
        f"Generated {report['date']} by `{report['command']}`"
        f" ({'quick' if report['quick'] else 'full'} sizes). Each time is the median of"
        f" {report['sizes']['forward_reps']} timed calls (B1, B5) or"
        f" {report['sizes']['reps']} (B2, B3) after one warm-up call.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_available']} available),"
        f" {m['memory']} memory, {m['platform']}; Python {m['python']}, jax {m['jax']},"
        f" jaxlib {m['jaxlib']}, diffrax {m['diffrax']}, equinox {m['equinox']},"
        f" backend {m['backend']}.",
        "",
        f"Vector field: {report['field']}.",
        "",
        "| key | value | target |",
        "| --- | --- | --- |",
        f"| forward_speedup_vs_diffrax | {fmt(s['forward_speedup_vs_diffrax'], '.2f')} | >= 3 |",
        f"| forward_max_relative_deviation | {fmt(s['forward_max_relative_deviation'], '.2e')}"
        " | <= 1e-8 |",
        f"| gradient_speedup_vs_diffrax | {fmt(s['gradient_speedup_vs_diffrax'], '.2f')} | >= 2 |",
        f"| throughput_ratio_vs_sequential | {fmt(s['throughput_ratio_vs_sequential'], '.2f')}"
        " | <= 1.5 |",
        f"| time_to_accuracy_ratio | {fmt(s['time_to_accuracy_ratio'], '.2f')} | >= 1.5 |",
        "",
        "| case | row | chunks | iterations | median s | compile s | ratio | deviation |"
        " peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        if r.get("status") == "not measured":
            lines.append(f"| {r['case']} | {r['name']} | | | not measured: {r['reason']} | | | | |")
            continue
        ratio = r.get(
            "speedup_vs_diffrax",
            r.get(
                "ratio_vs_sequential",
                r.get("time_to_accuracy_ratio", r.get("speedup_vs_one_device")),
            ),
        )
        deviation = r.get("max_relative_deviation", r.get("gradient_max_relative_deviation"))
        iterations = r.get("iterations", r.get("iterations_max", r.get("epochs")))
        best = " (best of grid)" if r.get("best_of_grid") else ""
        lines.append(
            f"| {r['case']} | {r['name']}{best} | {fmt(r.get('chunks'), 'd')}"
            f" | {fmt(iterations, 'd')} | {fmt(r.get('seconds'), '.4f')}"
            f" | {fmt(r.get('compile_seconds'), '.1f')} | {fmt(ratio, '.2f')}"
            f" | {fmt(deviation, '.1e')} | {fmt(r.get('peak_rss_mib'), '.0f')} |"
        )
    lines += [
        "",
        "Ratio column: B1 and B2 speed-up against the diffrax row (above 1: faster); B3 PinT"
        " time over nodepint sequential time (above 1: slower); B4 diffrax training time over"
        " PinT training time to the target loss; B5 speed-up against one device. Iterations"
        " column: B1 and B5 PinT corrections, B3 the most over all trajectories, B4 epochs.",
        "Peak RSS is the process's peak resident memory after the row ran, so it never falls.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="use the reduced sizes of make bench-quick"
    )
    parser.add_argument("--json", default="bench.json", help="path of the JSON report to write")
    parser.add_argument(
        "--markdown",
        default="BENCHMARKS.md",
        help="Markdown file whose generated section is replaced",
    )
    parser.add_argument("--case-b5", help=argparse.SUPPRESS)
    parser.add_argument("--b5-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    def log(message: str) -> None:
        print(message, flush=True)

    if args.case_b5:
        request = json.loads(args.case_b5)
        field = load_field(Path(request["field"]))
        devices_case(field, jnp.asarray(request["y0"]), request, sizes, Path(args.b5_out))
        return 0

    started = time.perf_counter()
    _, data, initial, _, _ = build(lorenz_config(sizes, 64, "sequential", 1))
    model, path, fresh = trained_model(sizes, data, initial, log)
    field = model.field
    y0 = model.encoder(data.test.inputs[0])
    rows: list[dict] = []
    b1, best = forward_case(field, y0, sizes, log)
    rows += b1
    if best is None:
        raise SystemExit("B1: no preset converged, so the later cases have no configuration")
    b2, best_grad = gradient_case(field, y0, best, sizes, log)
    rows += b2

    from nodepint.problems.lorenz import Lorenz

    problem = Lorenz(lorenz_config(sizes, 64, "sequential", 1).problem)
    raw = problem.initial_states(jr.PRNGKey(11), sizes.trajectories)
    y0s = (raw - data.mean) / data.std
    b3, throughput_ratio = throughput_case(field, y0s, best, sizes, log)
    rows += b3
    b4, accuracy_ratio = training_case(sizes, data, initial, log)
    rows += b4
    rows += run_devices_subprocess(best, path, y0, args.quick, log)
    rows.append(not_measured("B6", "GPU, 2^17 steps", f"no GPU (backend {jax.default_backend()})"))

    command = "make bench-quick" if args.quick else "make bench"
    report = {
        "forward_speedup_vs_diffrax": best["speedup_vs_diffrax"],
        "forward_max_relative_deviation": best["max_relative_deviation"],
        "gradient_speedup_vs_diffrax": best_grad["speedup_vs_diffrax"],
        "throughput_ratio_vs_sequential": throughput_ratio,
        "time_to_accuracy_ratio": accuracy_ratio,
        "best_forward": {"preset": best["preset"], "chunks": best["chunks"]},
        "best_gradient": best_grad["name"],
        "quick": args.quick,
        "command": command + f" (python scripts/bench.py{' --quick' if args.quick else ''})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total_seconds": time.perf_counter() - started,
        "field": (
            f"lorenz MLP 2x64 swish, float64, trained {sizes.field_epochs} epochs with diffrax"
            f" sequential solves ({'trained in this run' if fresh else 'loaded from ' + path.name})"
        ),
        "machine": machine(),
        "sizes": dataclasses.asdict(sizes),
        "rows": rows,
    }
    report["summary"] = {
        key: report[key]
        for key in (
            "forward_speedup_vs_diffrax",
            "forward_max_relative_deviation",
            "gradient_speedup_vs_diffrax",
            "throughput_ratio_vs_sequential",
            "time_to_accuracy_ratio",
        )
    }
    Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    md_path = Path(args.markdown)
    old = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    md_path.write_text(replace_section(old, markdown(report)))
    log(f"wrote {args.json} and {args.markdown} in {report['total_seconds']:.0f} s")
    for key, value in report["summary"].items():
        log(f"{key} = {value:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
