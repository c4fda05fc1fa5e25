"""Real training runs with the default configs; slow (minutes each on a 2-core CPU)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _train(tmp_path, *overrides):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodepint.cli",
            "logger=none",
            "progress=false",
            f"hydra.run.dir={tmp_path}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"
    return summary


def test_lorenz_random1d_learns(tmp_path):
    summary = _train(tmp_path, "problem=lorenz", "pint=random1d")
    metrics = summary["metrics"]
    assert metrics["test_loss"] <= 0.1 * metrics["untrained_test_loss"]
    assert summary["pint"]["max_relative_deviation"] <= 1e-5


def test_digits_accuracy(tmp_path):
    summary = _train(tmp_path, "problem=digits")
    assert summary["metrics"]["test_accuracy"] >= 0.95


def test_lynx_hare_parareal_fits(tmp_path):
    summary = _train(tmp_path, "problem=lynx_hare", "pint=parareal")
    metrics = summary["metrics"]
    assert metrics["test_loss"] <= 0.25 * metrics["untrained_test_loss"]
    assert (tmp_path / "trajectories.png").exists()


def test_lorenz_newton_warm_start_fewer_iterations(tmp_path):
    means = {}
    for warm in ("true", "false"):
        summary = _train(
            tmp_path / warm,
            "problem=lorenz",
            "pint=newton",
            "train.epochs=20",
            f"pint.warm_start={warm}",
        )
        means[warm] = summary["pint"]["iterations_mean"]
    assert means["true"] < means["false"]
