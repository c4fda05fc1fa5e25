"""Every config composes and validates; bad values fail early with the key in the message."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from nodepint.cli import check, config_dir
from nodepint.config import ConfigError, register_configs

register_configs()
CONF = Path(config_dir())
GROUPS = ["problem", "model", "integrator", "pint", "combo", "optim", "logger", "mesh"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_validates(group, option):
    # A combo with optimal control needs a controlled problem.
    controlled = group == "combo" and option != "dp"
    check(_compose(f"{group}={option}", *(["problem=pendulum"] if controlled else [])))


@pytest.mark.parametrize("problem", _options("problem"))
def test_smoke_preset_validates_for_every_problem(problem):
    cfg = check(_compose("experiment=smoke", f"problem={problem}"))
    assert cfg.train.epochs <= 2


@pytest.mark.parametrize(
    "override,key",
    [
        ("pint.chunks=0", "pint.chunks"),
        ("pint.chunks=5", "pint.chunks"),  # does not divide the 64 fine steps of lorenz
        ("pint.chunks=128", "pint.chunks"),  # more chunks than fine steps
        ("problem.noise=-1", "problem.noise"),
        ("pint.basis=cubic", "pint.basis"),
        ("pint.scan=associative", "pint.scan"),  # parareal is not affine
        ("integrator.fine.solver=rk99", "integrator.fine.solver"),
        ("optim.lr=-0.1", "optim.lr"),
        ("problem.val_fraction=0.9", "problem.val_fraction"),
        ("+problem.params.gamma=2", "problem.params.gamma"),
    ],
)
def test_bad_value_error_names_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check(_compose(override))


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["pint=jacobi", "pint.basis=full"], "pint.basis"),
        (["pint=newton", "pint.basis=none"], "pint.basis"),
        (["pint=newton", "pint.on_fail=retry"], "pint.on_fail"),
        (["pint=growing", "pint.grow_every=0"], "pint.grow_every"),
        (["pint=sensitivity", "pint.replicas=2"], "pint.replicas"),
        (["pint=newton", "pint.replicas=2"], "pint.replicas"),
        (["pint=random1d", "pint.replicas=2", "train.sync_every=2"], "train.sync_every"),
        (["pint=newton", "pint.chunks=4", "mesh.time=3"], "mesh.time"),
        (["pint=random1d", "pint.replicas=3", "mesh.proj=2"], "mesh.proj"),
        (["train.batch_size=9", "mesh.data=2"], "mesh.data"),
    ],
)
def test_bad_pair_error_names_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check(_compose(*overrides))


def test_control_combo_on_uncontrolled_problem_error():
    with pytest.raises(ConfigError, match=r"combo=dp_dal.*problem=lorenz"):
        check(_compose("problem=lorenz", "combo=dp_dal"))


def test_controlled_problem_defaults_to_dp_dal():
    assert check(_compose("problem=pendulum")).combo.name == "dp_dal"
    assert check(_compose("problem=pendulum", "combo=dp_dp")).combo.joint


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["problem=pendulum", "control.parametrisation=spline"], "control.parametrisation"),
        (["problem=pendulum", "control.iterations=0"], "control.iterations"),
        (["problem=pendulum", "combo.joint=true"], "combo.joint"),
    ],
)
def test_bad_control_value_error_names_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check(_compose(*overrides))


@pytest.mark.parametrize("override", ["optim.lr=abc", "pint.chunkz=4", "pint=nosuchstrategy"])
def test_bad_override_rejected_at_composition(override):
    with pytest.raises(HydraException):
        _compose(override)


@pytest.mark.parametrize(
    "override,key",
    [
        ("pint.chunks=0", "chunks"),
        ("problem.noise=-1", "noise"),
        ("pint=nosuchstrategy", "pint"),
        ("optim.lr=abc", "lr"),
        ("pint.replicas=2", "replicas"),
        ("mesh.time=4", "devices"),
    ],
)
def test_cli_bad_override_exits_cleanly(tmp_path, override, key):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodepint.cli",
            "experiment=smoke",
            f"hydra.run.dir={tmp_path}",
            override,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert key in output
    assert not (tmp_path / "summary.json").exists()
