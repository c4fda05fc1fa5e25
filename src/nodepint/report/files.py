"""Run-directory files: metrics.jsonl, summary.json and the checkpoint, all written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import equinox as eqx

from nodepint.training import EpochRecord, TrainState

CHECKPOINT = "checkpoint.eqx"
CHECKPOINT_INFO = "checkpoint.json"


def _json_ready(value: Any) -> Any:
    """Plain JSON values; NaN and infinities become null so that the files stay valid JSON."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_ready(data), indent=2) + "\n")
    os.replace(tmp, path)


def append_metrics(path: Path, record: EpochRecord) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(_json_ready(record._asdict())) + "\n")
        handle.flush()


def read_metrics(path: Path, up_to_epoch: int) -> list[EpochRecord]:
    """The records of epochs 1 ... up_to_epoch from an earlier run's metrics.jsonl."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["epoch"] <= up_to_epoch:
            row = {k: (math.nan if v is None else v) for k, v in row.items()}
            records.append(EpochRecord(**row))
    return records


def save_checkpoint(run_dir: Path, state: TrainState) -> None:
    """Write model, optimiser state and warm starts; the previous checkpoint survives a crash."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    eqx.tree_serialise_leaves(tmp, state)
    os.replace(tmp, run_dir / CHECKPOINT)
    write_json_atomic(
        run_dir / CHECKPOINT_INFO, {"epoch": int(state.epoch), "step": int(state.step)}
    )


def load_checkpoint(run_dir: Path, template) -> TrainState | None:
    """The checkpointed state; `template(epochs_done)` gives its structure and shapes."""
    path = run_dir / CHECKPOINT
    info = run_dir / CHECKPOINT_INFO
    if not path.exists() or not info.exists():
        return None
    epochs_done = json.loads(info.read_text())["epoch"]
    return eqx.tree_deserialise_leaves(path, template(epochs_done))
