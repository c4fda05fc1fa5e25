"""Measure the memory of the three gradient methods as the number of fine steps grows.

For every fine step count and every `train.grad` mode (unroll, implicit, dal), the script
compiles the gradient of a squared-error loss on one Lorenz-sized trajectory and reads
XLA's memory analysis of the compiled program: argument, output and temporary buffer
bytes. Their sum is the memory that XLA allocates for one gradient evaluation. The peak
RSS of a process would also count the JAX runtime and the compiler, hundreds of MiB that
vary from run to run and hide differences of a few MiB between the methods. The
trajectory has state 3 (--augment appends zeros to make it larger), the default MLP
vector field of width 64 and depth 2, tsit5 fine steps, and parareal on a fixed number of
chunks. The analysis needs no execution, so the largest step counts cost only their
compile time. With --time, each gradient also runs and its wall time is taken (the
median of a few runs after a warm-up).

    python scripts/grad_memory.py --json grad_memory.json

prints a Markdown table and writes every measured field to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import jax.random as jr

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

from nodepint.config import Config  # noqa: E402
from nodepint.models import build_model  # noqa: E402
from nodepint.pipeline import solver_for  # noqa: E402

MODES = ("unroll", "implicit", "dal")
MIB = 2.0**20


def gradient_program(steps: int, chunks: int, mode: str, n_obs: int, augment: int):
    """Build the jitted gradient of one trajectory's loss, and its arguments."""
    cfg = Config()
    cfg.problem.name = "lorenz"
    cfg.integrator.fine.steps = steps
    cfg.pint.method = "parareal"
    cfg.pint.chunks = chunks
    cfg.train.grad = mode
    cfg.model.augment = augment
    ts = np.linspace(0.0, 1.0, n_obs)
    solver = solver_for(cfg, ts)

    model = build_model(cfg.model, 3, 3, jr.PRNGKey(0), jnp.float64, rate_scale=(10.0,) * 3)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    target = jr.normal(jr.PRNGKey(1), (n_obs, 3))
    x = jnp.array([1.0, 1.0, 20.0]) / 10.0

    def loss(x, params):
        outputs, _ = solver.predict(eqx.combine(params, static), x, jr.PRNGKey(2))
        return jnp.mean((outputs - target) ** 2)

    return jax.jit(jax.grad(loss, argnums=(0, 1))), (x, params)


def measure(steps: int, chunks: int, mode: str, n_obs: int, augment: int, repeats: int) -> dict:
    grad, inputs = gradient_program(steps, chunks, mode, n_obs, augment)
    start = time.perf_counter()
    compiled = grad.lower(*inputs).compile()
    compile_seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    row = {
        "steps": steps,
        "chunks": chunks,
        "mode": mode,
        "state_size": 3 + augment,
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "compile_seconds": compile_seconds,
    }
    row["total_bytes"] = row["argument_bytes"] + row["output_bytes"] + row["temp_bytes"]
    if repeats:
        jax.block_until_ready(compiled(*inputs))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*inputs))
            times.append(time.perf_counter() - start)
        row["run_seconds"] = statistics.median(times)
    return row


def markdown(rows: list[dict], timed: bool) -> str:
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    header = "| fine steps | " + " | ".join(f"{m} (MiB)" for m in modes)
    if timed:
        header += " | " + " | ".join(f"{m} (s)" for m in modes)
    lines = [header + " |", "|" + " --- |" * (header.count("|"))]
    for steps in sorted({r["steps"] for r in rows}):
        by_mode = {r["mode"]: r for r in rows if r["steps"] == steps}
        cells = [f"{by_mode[m]['total_bytes'] / MIB:.3f}" for m in modes]
        if timed:
            cells += [f"{by_mode[m]['run_seconds']:.3f}" for m in modes]
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-log2", type=int, default=8, help="smallest step count, as log2")
    parser.add_argument("--max-log2", type=int, default=14, help="largest step count, as log2")
    parser.add_argument("--stride", type=int, default=1, help="step between the log2 values")
    parser.add_argument("--chunks", type=int, default=8, help="PinT chunks (fixed)")
    parser.add_argument(
        "--augment", type=int, default=0, help="zeros appended to the Lorenz state of 3"
    )
    parser.add_argument("--n-obs", type=int, default=33, help="observation times in [0, 1]")
    parser.add_argument(
        "--time", type=int, default=0, metavar="N", help="also run each gradient N times"
    )
    parser.add_argument(
        "--modes", nargs="+", default=list(MODES), choices=MODES, help="gradient methods"
    )
    parser.add_argument("--json", default="grad_memory.json", help="output JSON file")
    args = parser.parse_args()

    rows = []
    for log2 in range(args.min_log2, args.max_log2 + 1, args.stride):
        for mode in args.modes:
            row = measure(2**log2, args.chunks, mode, args.n_obs, args.augment, args.time)
            print(
                f"steps={row['steps']:6d} {mode:8s} total={row['total_bytes'] / MIB:9.3f} MiB "
                f"temp={row['temp_bytes'] / MIB:9.3f} MiB compile={row['compile_seconds']:.1f} s"
                + (f" run={row['run_seconds']:.3f} s" if args.time else ""),
                flush=True,
            )
            rows.append(row)

    print()
    print(markdown(rows, bool(args.time)))
    meta = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "settings": vars(args),
    }
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
