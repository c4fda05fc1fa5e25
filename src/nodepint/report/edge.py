"""RunReporter: the callbacks of the pipeline, and `execute`, which runs it with status handling.

Everything a run leaves behind is written here: the resolved config, metrics.jsonl (one line
per epoch), the checkpoint, the figures, W&B and summary.json, whose `status` records whether
the run completed, failed or was interrupted.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nodepint.config import Config, ConfigError
from nodepint.pipeline import Evaluation, run
from nodepint.problems.base import ReferenceSolveError
from nodepint.report import files
from nodepint.report.figures import control_figure, run_figures
from nodepint.report.wandb_logger import WandbLogger
from nodepint.stiffness import step_limit_message
from nodepint.training import EpochRecord, NonFiniteLossError, PintNotConvergedError, TrainState

log = logging.getLogger("nodepint")


class RunReporter:
    """Implements the pipeline's callbacks for one run directory."""

    def __init__(self, cfg: Config, resolved: dict[str, Any], run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.history: list[EpochRecord] = []
        self.figure_paths: list[Path] = []
        self.progress: Progress | None = None
        self.task = None
        self.wandb = WandbLogger(cfg.logger, resolved, run_dir)

    # -- callbacks
    def on_build(self, info: dict[str, Any]) -> None:
        log.info(
            "%s: %d/%d/%d train/val/test trajectories, state size %d",
            info["problem"],
            info["train"],
            info["val"],
            info["test"],
            info["state_size"],
        )
        log.info(
            "PinT %s: %d chunks on %d %s device(s), fine %s, coarse %s; batch %d x %d per epoch",
            info["pint"],
            info["chunks"],
            info["devices"],
            info["backend"],
            info["fine"],
            info["coarse"],
            info["batch_size"],
            info["batches_per_epoch"],
        )

    def on_warning(self, message: str) -> None:
        log.warning(message)

    def restore(self, template):
        state = files.load_checkpoint(self.run_dir, template)
        if state is None:
            log.info(
                "train.resume=true but %s has no checkpoint: starting from scratch", self.run_dir
            )
            return None
        history = files.read_metrics(self.metrics_path, int(state.epoch))
        # Rewrite metrics.jsonl so that it ends at the checkpoint's epoch.
        self.metrics_path.write_text("")
        for record in history:
            files.append_metrics(self.metrics_path, record)
        self.history = list(history)
        log.info("resumed from the checkpoint at epoch %d", int(state.epoch))
        return state, history

    def on_epoch(self, state: TrainState, record: EpochRecord, total_epochs: int) -> None:
        self.history.append(record)
        files.append_metrics(self.metrics_path, record)
        self.wandb.log(record._asdict(), step=record.epoch)
        if record.epoch % self.cfg.train.checkpoint_every == 0 or record.epoch == total_epochs:
            files.save_checkpoint(self.run_dir, state)
        if self.cfg.progress:
            self._advance(record, total_epochs)
        else:
            log.info(
                "epoch %d/%d: train %.4g, val %.4g, PinT iterations %.2f (max %d)",
                record.epoch,
                total_epochs,
                record.train_loss,
                record.val_loss,
                record.iterations_mean,
                record.iterations_max,
            )

    def on_evaluate(self, evaluation: Evaluation, history: list[EpochRecord]) -> None:
        self._stop_progress()
        for name, fig in run_figures(evaluation, history).items():
            path = self.run_dir / f"{name}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            self.figure_paths.append(path)
        self.wandb.log_images(self.figure_paths)

    def on_control(self, outcome, summary: dict[str, Any]) -> None:
        log.info(
            "optimal control (%s, %s): true cost %.4g, reference cost %.4g, gap %.2f%%; "
            "%d iterations in %.1f s",
            summary["method"],
            summary["parametrisation"],
            summary["true_cost"],
            summary["reference_cost"],
            100.0 * summary["gap"],
            summary["iterations"],
            summary["seconds"],
        )
        path = self.run_dir / "control.png"
        fig = control_figure(outcome)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        self.figure_paths.append(path)
        numbers = {
            f"control/{key}": value
            for key, value in summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        # Logged at the last training epoch's step, because W&B steps must not decrease.
        self.wandb.log(numbers, step=max(len(self.history), 0))
        self.wandb.log_images([path])

    # -- progress bar
    def _advance(self, record: EpochRecord, total: int) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("PinT it {task.fields[its]}"),
                TimeElapsedColumn(),
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=total, completed=record.epoch - 1, loss="-", its="-"
            )
        self.progress.update(
            self.task,
            completed=record.epoch,
            loss=f"{record.train_loss:.4g}",
            its=f"{record.iterations_mean:.2f}",
        )

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # -- end of run
    def partial_summary(self) -> dict[str, Any]:
        """Summary of a failed or interrupted run: its config names and last epoch's metrics."""
        last = self.history[-1] if self.history else None
        return {
            "problem": {"name": self.cfg.problem.name},
            "pint": {
                "name": self.cfg.pint.name,
                "method": self.cfg.pint.method,
                "basis": self.cfg.pint.basis,
            },
            "combo": {"name": self.cfg.combo.name},
            "metrics": {
                "final_train_loss": last.train_loss if last else None,
                "last_val_loss": last.val_loss if last else None,
            },
            "epochs_completed": last.epoch if last else 0,
            "checkpoint": str(self.run_dir / files.CHECKPOINT) if last else None,
            "resume_with": "train.resume=true and the same hydra.run.dir" if last else None,
        }

    def finish(self, summary: dict[str, Any]) -> None:
        self._stop_progress()
        files.write_json_atomic(self.run_dir / "summary.json", summary)
        self.wandb.finish(summary)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def execute(cfg: Config, resolved: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run the pipeline in `run_dir` and always leave a summary.json with a status."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(run_dir / "config.json", resolved)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    reporter = RunReporter(cfg, resolved, run_dir)
    start = time.perf_counter()
    try:
        summary = run(cfg, reporter)
        summary["status"] = "completed"
        summary["reason"] = None
    except KeyboardInterrupt:
        summary = reporter.partial_summary()
        summary.update(status="interrupted", reason="interrupted by the user or a signal")
        log.warning("run interrupted; metrics and the last checkpoint are in %s", run_dir)
    except (NonFiniteLossError, PintNotConvergedError, ConfigError, ReferenceSolveError) as err:
        summary = reporter.partial_summary()
        summary.update(status="failed", reason=str(err))
        log.error("run failed: %s", err)
    except Exception as err:  # noqa: BLE001 - recorded in summary.json; re-raised unless a step limit
        # diffrax reports a solve that reached max_steps, or an implicit stage whose root
        # find ran out of iterations, through an equinox runtime error
        # (EquinoxRuntimeError in equinox 0.13). Matching diffrax's message rather than the
        # class keeps this working if the error type changes.
        message = step_limit_message(cfg, err)
        if message is not None:
            summary = reporter.partial_summary()
            summary.update(status="failed", reason=message)
            log.error("run failed: %s", message)
            reporter.finish(summary)
            return summary
        summary = reporter.partial_summary()
        summary.update(status="failed", reason=f"{type(err).__name__}: {err}")
        summary.setdefault("timing", {})["total_seconds"] = time.perf_counter() - start
        reporter.finish(summary)
        signal.signal(signal.SIGTERM, previous)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    reporter.finish(summary)
    if summary["status"] == "completed":
        m, p = summary["metrics"], summary["pint"]
        log.info(
            "test loss %.4g (untrained %.4g); PinT deviation from sequential %.2e; "
            "mean PinT iterations %.2f",
            m["test_loss"],
            m["untrained_test_loss"],
            p["max_relative_deviation"],
            p["iterations_mean"],
        )
        if "test_accuracy" in m:
            log.info("test accuracy %.4f", m["test_accuracy"])
        log.info("outputs in %s", run_dir)
    return summary
