"""Weights & Biases logging; offline by default, so no account or network is needed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from nodepint.config import LoggerConfig

log = logging.getLogger("nodepint")


class WandbLogger:
    """Log config, per-epoch metrics, figures and the summary to a W&B run under the run dir.

    With `logger.name=none` or `logger.mode=disabled` every method does nothing. A W&B
    failure (for example no network in online mode) is logged once and turns logging off,
    because losing the W&B copy must not lose the run: its files are written anyway.
    """

    def __init__(self, cfg: LoggerConfig, resolved: dict[str, Any], run_dir: Path):
        self.run = None
        if cfg.name == "none" or cfg.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                mode=cfg.mode,
                dir=str(run_dir),
                config=resolved,
                name=run_dir.name,
                reinit="finish_previous",
            )
            log.info("W&B run (%s) in %s", cfg.mode, run_dir / "wandb")
        except Exception as err:  # noqa: BLE001 - W&B is optional for the run
            log.warning(
                "W&B logging is off for this run: wandb.init failed with %s: %s",
                type(err).__name__,
                err,
            )
            self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        flat = {}
        for key, value in metrics.items():
            if isinstance(value, (list, tuple)):
                # One series per entry, e.g. residual_history/2: the defect after 2 corrections.
                flat.update({f"{key}/{i}": v for i, v in enumerate(value)})
            else:
                flat[key] = value
        self.run.log(flat, step=step)

    def log_images(self, paths: list[Path]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({p.stem: wandb.Image(str(p)) for p in paths})

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        for key, value in _flatten(summary).items():
            self.run.summary[key] = value
        self.run.finish(exit_code=0 if summary.get("status") == "completed" else 1)
        self.run = None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif value is not None:
            flat[name] = value
    return flat
