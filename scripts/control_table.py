"""Print a Markdown table comparing the combos of a multirun from its summary.json files.

    nodepint-run -m problem=pendulum combo=dp_dal,dp_dp,dal_dp,dal_dal
    python scripts/control_table.py multiruns/<date>/<time>

Each argument is a multirun folder (one row per job, in job order) or a single run
directory (one row). The peak-memory column is `timing.peak_rss_mb`: the resident-set
high-water mark (VmHWM) from the start of the run to its end. Hydra's basic launcher runs
a multirun's jobs one after the other in one process. The pipeline resets the mark when a
job starts, but memory that the process still keeps from earlier jobs counts in later ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (
    "combo",
    "training gradient",
    "final train loss",
    "test loss",
    "J_true(u*)",
    "J_true(u_ref)",
    "control gap",
    "OC iterations",
    "OC seconds",
    "run wall time (s)",
    "peak RSS (MiB)",
)


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def row(summary: dict) -> list[str]:
    """Format the table cells of one run's summary."""
    combo, metrics, timing = summary["combo"], summary["metrics"], summary["timing"]
    control = summary.get("control") or {}
    gap = control.get("gap")
    return [
        combo["name"],
        combo.get("train_grad", combo["train"]),
        _number(metrics.get("final_train_loss"), ".3g"),
        _number(metrics.get("test_loss"), ".3g"),
        _number(control.get("true_cost"), ".4g"),
        _number(control.get("reference_cost"), ".4g"),
        "n/a" if gap is None else f"{100.0 * gap:.2f}%",
        _number(control.get("iterations"), "d"),
        _number(control.get("seconds"), ".1f"),
        _number(timing.get("total_seconds"), ".0f"),
        _number(timing.get("peak_rss_mb"), ".0f"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders",
        type=Path,
        nargs="+",
        help="multirun folders (hydra.sweep.dir) or run directories (hydra.run.dir)",
    )
    args = parser.parse_args()
    paths: list[Path] = []
    for folder in args.folders:
        if (folder / "summary.json").exists():
            paths.append(folder / "summary.json")
            continue
        jobs = sorted(folder.glob("*/summary.json"), key=lambda p: int(p.parent.name.split("_")[0]))
        if not jobs:
            raise SystemExit(f"no summary.json in {folder} or its subfolders")
        paths.extend(jobs)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * len(COLUMNS))
    for path in paths:
        summary = json.loads(path.read_text())
        if summary.get("status") != "completed":
            print(f"| {path.parent.name} | {summary.get('status')}: {summary.get('reason')} |")
            continue
        print("| " + " | ".join(row(summary)) + " |")


if __name__ == "__main__":
    main()
