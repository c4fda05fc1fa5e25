"""Print a Markdown table of the summary.json files under a run or multirun directory.

python scripts/summarize_runs.py multiruns/2026-12-04/10-00-00
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = [
    ("problem", ("problem", "name")),
    ("pint", ("pint", "name")),
    ("status", ("status",)),
    ("test loss", ("metrics", "test_loss")),
    ("untrained", ("metrics", "untrained_test_loss")),
    ("accuracy", ("metrics", "test_accuracy")),
    ("PinT its (mean)", ("pint", "iterations_mean")),
    ("deviation", ("pint", "max_relative_deviation")),
    ("train s", ("timing", "train_seconds")),
]


def lookup(summary: dict, path: tuple[str, ...]):
    value = summary
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return ""
        value = value[key]
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or multirun directory")
    args = parser.parse_args(argv)
    paths = sorted(args.directory.rglob("summary.json"))
    if not paths:
        print(f"no summary.json under {args.directory}", file=sys.stderr)
        return 1
    print("| run | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + " --- |" * (len(COLUMNS) + 1))
    for path in paths:
        summary = json.loads(path.read_text())
        cells = [lookup(summary, key) for _, key in COLUMNS]
        print(f"| {path.parent.relative_to(args.directory)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
