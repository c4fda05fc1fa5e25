"""Shared test setup: float64, offline W&B, and small helpers."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The `nodepint-run` subprocesses of the suite share compiled functions (data generation,
# evaluation) through JAX's persistent cache; each test session starts with an empty one.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="nodepint-jax-cache-"))

# conf/problem/custom.yaml imports its example vector field from docs/examples, which the
# config tests compose in process.
sys.path.append(str(Path(__file__).resolve().parents[1] / "docs" / "examples"))

import jax  # noqa: E402

# PinT results are compared with the sequential solve at ~1e-10; that needs float64.
jax.config.update("jax_enable_x64", True)
