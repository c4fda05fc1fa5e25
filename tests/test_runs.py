"""End-to-end runs of `nodepint-run` with the smoke preset: every problem and strategy,
W&B offline, resume from a checkpoint, and a clean failure on a non-finite loss."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

STRATEGIES = ["sequential", "parareal", "newton", "random1d"]


def _run(*overrides, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "nodepint.cli", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _check_completed(summary: dict) -> None:
    assert summary["status"] == "completed", summary.get("reason")
    for key in ("test_loss", "untrained_test_loss"):
        assert summary["metrics"][key] > 0
    for key in ("iterations_mean", "iterations_max", "max_relative_deviation"):
        assert key in summary["pint"]
    assert summary["timing"]["train_seconds"] > 0
    assert summary["timing"]["compile_count"] == 1
    # The PinT solve of the trained model equals its sequential solve to the PinT tolerance.
    assert summary["pint"]["max_relative_deviation"] <= 1e-5


# The lotka_volterra sweep repeats the lorenz one on a second problem; at about two minutes
# it runs with `make test-slow`, keeping the default suite within its time budget.
@pytest.mark.parametrize(
    "problem", ["lorenz", pytest.param("lotka_volterra", marks=pytest.mark.slow)]
)
def test_smoke_sweep_every_strategy(tmp_path, problem):
    result = _run(
        "-m",
        "experiment=smoke",
        f"problem={problem}",
        f"pint={','.join(STRATEGIES)}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == len(STRATEGIES)
    names = set()
    for path in summaries:
        summary = json.loads(path.read_text())
        _check_completed(summary)
        assert summary["problem"]["name"] == problem
        names.add(summary["pint"]["name"])
        run_dir = path.parent
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
        for figure in ("trajectories.png", "loss.png", "pint_residual.png"):
            assert (run_dir / figure).stat().st_size > 0
        assert (run_dir / "checkpoint.eqx").exists()
    assert names == set(STRATEGIES)


@pytest.mark.parametrize("problem", ["lynx_hare", "digits"])
def test_smoke_run_problem(tmp_path, problem):
    result = _run("experiment=smoke", f"problem={problem}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = _summary(tmp_path)
    _check_completed(summary)
    if problem == "digits":
        assert 0.0 <= summary["metrics"]["test_accuracy"] <= 1.0
        assert (tmp_path / "confusion.png").exists()


# About 100 s of CPU time (two smoke runs, mostly compilation), over the default suite's
# allowance for new tests; `make test-slow` runs it.
@pytest.mark.slow
def test_smoke_field_problems(tmp_path):
    # Both field problems run in one multirun process, so the interpreter start and the
    # imports are paid once.
    result = _run("-m", "experiment=smoke", "problem=heat,sph", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    figures = {"heat": "field.png", "sph": "particle_velocities.png"}
    for path in summaries:
        summary = json.loads(path.read_text())
        _check_completed(summary)
        name = summary["problem"]["name"]
        assert (path.parent / figures[name]).stat().st_size > 0
        assert not (path.parent / "trajectories.png").exists()
    assert {json.loads(p.read_text())["problem"]["name"] for p in summaries} == set(figures)


def test_smoke_run_dal_gradient(tmp_path):
    result = _run(
        "experiment=smoke", "problem=lorenz", "train.grad=dal", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path)
    _check_completed(summary)
    # Two epochs of DAL gradients lower the loss of the untrained model.
    assert summary["metrics"]["test_loss"] < summary["metrics"]["untrained_test_loss"]


def test_resume_continues_from_checkpoint(tmp_path):
    # The first run also checks the offline W&B run, which the smoke preset turns off.
    first = _run(
        "experiment=smoke",
        "pint=newton",
        "train.epochs=1",
        "logger=wandb",
        f"hydra.run.dir={tmp_path}",
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert _summary(tmp_path)["epochs_completed"] == 1
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert any(offline_runs[0].glob("*.wandb"))

    second = _run(
        "experiment=smoke",
        "pint=newton",
        "train.epochs=2",
        "train.resume=true",
        f"hydra.run.dir={tmp_path}",
    )
    assert second.returncode == 0, second.stderr[-2000:]
    summary = _summary(tmp_path)
    assert summary["epochs_completed"] == 2
    epochs = [
        json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]


def test_nonfinite_loss_fails_with_message(tmp_path):
    result = _run(
        "experiment=smoke",
        "optim.lr=1e12",
        "optim.clip_norm=0",
        "optim.schedule=constant",
        "train.epochs=1",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    summary = _summary(tmp_path)
    assert summary["status"] == "failed"
    assert "optim.lr" in summary["reason"]


def test_unconverged_error_policy_stops_run(tmp_path):
    result = _run(
        "experiment=smoke",
        "pint=jacobi",
        "pint.max_iters=1",
        "pint.on_fail=error",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pint.max_iters" in result.stderr
    summary = _summary(tmp_path)
    assert summary["status"] == "failed"
    assert "pint.max_iters" in summary["reason"]


def test_unconverged_sequential_policy_falls_back(tmp_path):
    result = _run(
        "experiment=smoke",
        "pint=jacobi",
        "pint.max_iters=1",
        "pint.on_fail=sequential",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "completed"
    assert summary["pint"]["fallbacks"] > 0
    # Every evaluated batch fell back too, so the outputs are the sequential ones.
    assert summary["pint"]["max_relative_deviation"] == 0.0


def test_growing_compiles_once_per_rank(tmp_path):
    result = _run(
        "experiment=smoke",
        "pint=growing",
        "pint.grow_every=2",
        "pint.max_rank=3",
        "train.epochs=6",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = _summary(tmp_path)
    # Ranks 1, 2 and 3 (epochs 1-2, 3-4, 5-6): one compilation of the training step each.
    assert summary["pint"]["basis_rank"] == 3
    assert summary["timing"]["compile_count"] == 3


def test_warm_start_lowers_iterations(tmp_path):
    means = {}
    for warm in ("true", "false"):
        run_dir = tmp_path / warm
        # A cruder coarse propagator and a small learning rate: the previous solve's jumps
        # then predict the next solve better than a fresh coarse sweep.
        result = _run(
            "experiment=smoke",
            "pint=newton",
            "integrator.coarse.solver=euler",
            "optim.lr=1e-3",
            "train.epochs=4",
            f"pint.warm_start={warm}",
            f"hydra.run.dir={run_dir}",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        means[warm] = _summary(run_dir)["pint"]["iterations_mean"]
    assert means["true"] < means["false"]


def test_interrupted_run_keeps_checkpoint_and_resumes(tmp_path):
    import signal
    import time

    # A smoke epoch takes tens of milliseconds once compiled, so the run needs enough epochs
    # (a few seconds of training) for the signal to arrive mid-training.
    epochs = 100
    overrides = ["experiment=smoke", f"train.epochs={epochs}", f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "nodepint.cli", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background commands with SIGINT ignored, and
        # Python keeps an ignored SIGINT ignored. Restore the default so that the signal
        # acts as Ctrl-C does, however the test suite itself was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = _summary(tmp_path)
    assert summary["status"] == "interrupted"
    done = summary["epochs_completed"]
    assert 2 <= done < epochs
    assert (tmp_path / "checkpoint.eqx").exists()

    resumed = _run(*overrides, "train.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == epochs
    recorded = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert recorded == list(range(1, epochs + 1))


def _check_control(summary: dict) -> None:
    control = summary["control"]
    assert control["true_cost"] > 0
    assert control["reference_cost"] > 0
    expected = (control["true_cost"] - control["reference_cost"]) / control["reference_cost"]
    assert control["gap"] == pytest.approx(expected)
    assert control["iterations"] >= 1
    assert control["seconds"] > 0


def test_smoke_pendulum_default_combo(tmp_path):
    result = _run("experiment=smoke", "problem=pendulum", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = _summary(tmp_path)
    _check_completed(summary)
    assert summary["combo"]["name"] == "dp_dal"
    _check_control(summary)
    assert (tmp_path / "control.png").stat().st_size > 0


@pytest.mark.slow
def test_smoke_pendulum_every_combo(tmp_path):
    combos = ["dp_dal", "dp_dp", "dal_dp", "dal_dal"]
    result = _run(
        "-m",
        "experiment=smoke",
        "problem=pendulum",
        f"combo={','.join(combos)}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/summary.json"))]
    assert sorted(s["combo"]["name"] for s in summaries) == sorted(combos)
    for summary in summaries:
        _check_completed(summary)
        _check_control(summary)
        expected_grad = "dal" if summary["combo"]["train"] == "dal" else "implicit"
        assert summary["combo"]["train_grad"] == expected_grad


def test_control_combo_on_lorenz_fails_cleanly(tmp_path):
    result = _run("experiment=smoke", "combo=dal_dp", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "combo=dal_dp" in result.stderr
    assert "problem=lorenz" in result.stderr


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="resetting VmHWM needs Linux /proc"
)
def test_peak_memory_resets_per_run():
    # Each job of a multirun reports its own peak: the reset drops the high-water mark of a
    # freed 256 MiB block (numpy maps blocks this large, so freeing returns them at once).
    import numpy as np

    from nodepint.pipeline import peak_rss_mb, reset_peak_rss

    block = np.ones(256 * 2**20 // 8)
    high = peak_rss_mb()
    del block
    reset_peak_rss()
    assert peak_rss_mb() < high - 128
