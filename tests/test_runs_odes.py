"""End-to-end `nodepint-run` for van_der_pol, duffing and kuramoto: the smoke preset, the
stiff van der Pol defaults, and the clean stops on stiffness and on the solver step limit."""

import json
import subprocess
import sys
import time

import pytest

PROBLEMS = ["duffing", "kuramoto", "van_der_pol"]


def _run(*overrides, timeout=1200):
    return subprocess.run(
        [sys.executable, "-m", "nodepint.cli", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_runs_ode_problems(tmp_path):
    # One multirun shares one process, and so the JAX start-up, across the three problems.
    result = _run(
        "-m", "experiment=smoke", f"problem={','.join(PROBLEMS)}", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == len(PROBLEMS)
    names = set()
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["status"] == "completed", summary.get("reason")
        names.add(summary["problem"]["name"])
        assert summary["metrics"]["test_loss"] > 0
        # The PinT solve of the trained model equals its sequential solve to the PinT
        # tolerance, also with van_der_pol's implicit kvaerno5 fine solver.
        assert summary["pint"]["max_relative_deviation"] <= 1e-5
        assert (path.parent / "trajectories.png").stat().st_size > 0
    assert names == set(PROBLEMS)


@pytest.mark.parametrize("integrator", ["tsit5", "dopri5_adaptive"])
def test_explicit_solver_on_stiff_van_der_pol_stops(tmp_path, integrator):
    start = time.perf_counter()
    result = _run(
        "problem=van_der_pol",
        "problem.mu=1000",
        f"integrator={integrator}",
        f"hydra.run.dir={tmp_path}",
        timeout=120,
    )
    assert time.perf_counter() - start < 60
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for part in ("integrator.fine.solver=", "mu=1000", "stiff", "integrator=kvaerno5"):
        assert part in result.stderr
    if integrator == "dopri5_adaptive":
        assert "integrator.fine.max_steps=4096" in result.stderr


@pytest.mark.slow
def test_step_limit_stops_with_message(tmp_path):
    # Lorenz is not stiff, so the check before training lets the run start, and an
    # adaptive solve with at most two steps per chunk reaches diffrax's step limit.
    result = _run(
        "experiment=smoke",
        "problem=lorenz",
        "integrator=dopri5_adaptive",
        "integrator.fine.max_steps=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "step limit (integrator.fine.max_steps=2)" in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "integrator=kvaerno5" in summary["reason"]


@pytest.mark.slow
def test_stiff_van_der_pol_defaults_complete(tmp_path):
    result = _run(
        "problem=van_der_pol", "problem.mu=1000", f"hydra.run.dir={tmp_path}", timeout=3600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("reason")
    assert summary["metrics"]["test_loss"] < summary["metrics"]["untrained_test_loss"]
