"""The edge of the pipeline: console, run files, checkpoints, figures and W&B."""

from nodepint.report.edge import RunReporter

__all__ = ["RunReporter"]
