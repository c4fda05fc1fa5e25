"""Level-2 replicas and the device mesh: replicas compile once, average as configured, and
a run sharded over 8 forced host devices reproduces the single-device run."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from nodepint.config import ConfigError
from nodepint.mesh import make_mesh
from nodepint.training import replica_mean


def _run(*overrides, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "nodepint.cli", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return np.array([[r["train_loss"], r["val_loss"]] for r in map(json.loads, lines)])


def test_replica_mean_averages_leading_axis():
    tree = {"w": jnp.arange(6.0).reshape(3, 2), "b": None}
    mean = replica_mean(tree)
    np.testing.assert_array_equal(mean["w"], np.tile([2.0, 3.0], (3, 1)))
    assert mean["b"] is None


def test_mesh_too_large_names_flag():
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count=64"):
        make_mesh(data=4, proj=4, time=4)
    assert make_mesh(1, 1, 1) is None


# A run with 2 replicas of random1d, the batch over 2 devices, the replicas over 2 and the
# chunks over 2 (8 in all), against the same run on one device. The keys do not depend on
# the mesh, so the runs differ only by the order of floating-point reductions.
SHARDED = ["mesh.data=2", "mesh.proj=2", "mesh.time=2"]
REPLICAS = [
    "experiment=smoke",
    "problem=lorenz",
    "pint=random1d",
    "pint.replicas=2",
    "train.average=weights",
    "train.sync_every=2",
    "train.epochs=3",
]


def test_eight_devices_match_one_device(tmp_path):
    one = _run(*REPLICAS, f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    eight = _run(
        *REPLICAS,
        *SHARDED,
        f"hydra.run.dir={tmp_path / 'eight'}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert eight.returncode == 0, eight.stderr[-2000:]
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "eight")]
    assert [s["devices"] for s in summaries] == [1, 8]
    for summary in summaries:
        assert summary["status"] == "completed"
        assert summary["pint"]["replicas"] == 2
        # One compilation of the training step for all replicas, epochs and sync flags.
        assert summary["timing"]["compile_count"] == 1
    # Round-off only: float64 sums in another order differ by a few ulps per operation,
    # amplified over 6 optimiser steps of a chaotic system; 1e-9 is far below any change
    # in the computation itself (a different key or batch changes the loss at 1e-2).
    np.testing.assert_allclose(
        _losses(tmp_path / "eight"), _losses(tmp_path / "one"), rtol=1e-9, atol=0
    )


SHARDING_CHECK = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from nodepint.mesh import make_mesh
    from nodepint.pint.solve import _fine_ends
    import diffrax
    from nodepint.integrators import Propagator

    def field(t, y, args):
        return args @ y

    fine = Propagator(diffrax.Tsit5(), 4, False, 1e-8, 1e-8, 100)
    a = jnp.array([[0.0, 1.0], [-1.0, -0.1]])
    tau = jnp.linspace(0.0, 4.0, 9)
    states = jnp.ones((9, 2))
    mesh = make_mesh(1, 1, 8)
    ends = jax.jit(lambda s: _fine_ends(fine, field, s, tau, a, mesh))(states)
    plain = jax.jit(lambda s: _fine_ends(fine, field, s, tau, a))(states)
    print(json.dumps({
        "spec": str(ends.sharding.spec),
        "devices": len(ends.sharding.device_set),
        "difference": float(jnp.max(jnp.abs(ends - plain))),
    }))
    """
)


def test_chunk_axis_sharded_over_time():
    result = subprocess.run(
        [sys.executable, "-c", SHARDING_CHECK],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "time" in out["spec"]
    assert out["devices"] == 8
    # Each chunk runs the same operations either way; only fusion may change the last bit.
    assert out["difference"] <= 1e-14
