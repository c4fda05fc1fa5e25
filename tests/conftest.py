"""Shared test setup: float64, offline W&B, and small helpers."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import jax  # noqa: E402

# PinT results are compared with the sequential solve at ~1e-10; that needs float64.
jax.config.update("jax_enable_x64", True)
