"""Measure every PinT preset on the true Lorenz and Lotka-Volterra fields; print Markdown.

For each preset it reports the corrections needed to reach the tolerance and the defect
norm after 1, 2 and 4 corrections, from a cold start (coarse sweep) and from a warm start.
The warm start imitates training: the jumps F - G are taken from a converged solve with
parameters 1% off (one optimiser step's worth of change), then the solve runs with the
true parameters from U_{n+1} = G(U_n) + jump_n.

    python scripts/pint_table.py > /tmp/table.md
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import jax.random as jr

jax.config.update("jax_enable_x64", True)

from nodepint.config import IntegratorConfig  # noqa: E402
from nodepint.integrators import chunk_boundaries, make_propagators  # noqa: E402
from nodepint.pint import PintSettings, pint_solve, sequential_states  # noqa: E402
from nodepint.pint.bases import grow_basis  # noqa: E402
from nodepint.pint.solve import sweep  # noqa: E402
from nodepint.problems.lorenz import lorenz_field  # noqa: E402
from nodepint.problems.lotka_volterra import lotka_volterra_field  # noqa: E402

# name: (method, basis, rank); rank is the Krylov rank or the kept basis rank.
PRESETS = {
    "jacobi": ("jacobi", "none", 1),
    "parareal": ("parareal", "none", 1),
    "newton": ("newton", "full", 1),
    "diagonal": ("newton", "diagonal", 1),
    "random1d": ("newton", "random1d", 1),
    "growing (rank 2)": ("newton", "growing", 2),
    "sensitivity (rank 2)": ("newton", "sensitivity", 2),
    "krylov_parareal (rank 2)": ("parareal", "sensitivity", 2),
}

SYSTEMS = {
    # name: field, parameters, initial state, t1, chunks, fine steps
    "lorenz": (
        lorenz_field,
        jnp.array([10.0, 28.0, 8.0 / 3.0]),
        jnp.array([1.0, 1.0, 20.0]),
        2.0,
        32,
        32 * 128,
    ),
    "lotka_volterra": (
        lotka_volterra_field,
        jnp.array([1.5, 1.0, 1.0, 3.0]),
        jnp.array([2.0, 1.0]),
        10.0,
        32,
        32 * 64,
    ),
}


def measure(system: str, preset: str, warm: bool, tol: float):
    field, args, y0, t1, chunks, steps = SYSTEMS[system]
    method, basis, rank = PRESETS[preset]
    cfg = IntegratorConfig()
    cfg.fine.steps = steps
    fine, coarse = make_propagators(cfg, chunks)
    tau = chunk_boundaries(0.0, t1, chunks)
    settings = PintSettings(method, basis, chunks, tol, tol, chunks, "sequential", rank=rank)
    kept = grow_basis(jnp.zeros((y0.shape[0], 0)), rank, jr.PRNGKey(11))

    guess = None
    if warm:
        # Converged states of the solve with parameters 1% off, and their jumps F - G.
        previous = sequential_states(fine, field, y0, tau, args * 1.01)
        ends = jax.vmap(coarse, in_axes=(None, 0, 0, 0, None))(
            field, previous[:-1], tau[:-1], tau[1:], args * 1.01
        )
        guess = sweep(coarse, field, y0, tau, args, jumps=previous[1:] - ends)

    solve = jax.jit(
        lambda a, g: pint_solve(
            settings, fine, coarse, field, y0, tau, a, jr.PRNGKey(0), g, kept=kept
        )
    )
    sol = solve(args, guess)
    return int(sol.iterations), [float(sol.residuals[k]) for k in (1, 2, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-10, help="pint rtol = atol")
    args = parser.parse_args()
    print(f"Tolerance rtol = atol = {args.tol:g}; defect norms are weighted (1 = tolerance);")
    print("'-' means the solve had stopped before that iteration.\n")
    print("| system | preset | start | iterations | defect after 1 | after 2 | after 4 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for system, spec in SYSTEMS.items():
        for preset in PRESETS:
            for warm in (False, True):
                iterations, defects = measure(system, preset, warm, args.tol)
                cells = ["-" if d != d else f"{d:.2g}" for d in defects]
                start = "warm" if warm else "cold"
                print(
                    f"| {system} (N={spec[4]}) | {preset} | {start} | {iterations} | "
                    + " | ".join(cells)
                    + " |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
