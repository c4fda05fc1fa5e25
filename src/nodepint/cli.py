"""`nodepint-run`: the Hydra entry point. Composes and validates the config, runs the
pipeline, and turns configuration errors into short messages without a traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nodepint.config import ConfigError, register_configs, to_dataclass, validate

log = logging.getLogger("nodepint")


def config_dir() -> str:
    """The packaged configs of an installed wheel, else the repository's conf/ folder."""
    packaged = Path(__file__).parent / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


def check(cfg: DictConfig):
    """Validate the composed config and the problem's parameters; return the typed config."""
    validate(cfg)
    typed = to_dataclass(cfg)
    from nodepint.config import check_problem_combo
    from nodepint.problems import make_problem
    from nodepint.stiffness import check_stiffness

    problem = make_problem(typed.problem)
    if typed.model.encoder == "projection":
        problem.check_reduced_basis(typed.model.latent_size)
    check_stiffness(typed, problem)
    check_problem_combo(typed, problem.control_size)
    return typed


def _app(cfg: DictConfig) -> None:
    try:
        typed = check(cfg)
    except ConfigError as err:
        print(f"nodepint: invalid configuration:\n{err}", file=sys.stderr)
        sys.exit(2)

    from nodepint.mesh import mesh_from_config, start_distributed

    # Joins the multi-process runtime (from the cluster environment) before any device use.
    start_distributed(typed.mesh)
    try:
        mesh_from_config(typed.mesh)  # enough devices for the mesh?
    except ConfigError as err:
        print(f"nodepint: invalid configuration:\n{err}", file=sys.stderr)
        sys.exit(2)

    from nodepint.report.edge import execute

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    summary = execute(typed, resolved, run_dir)
    if summary["status"] != "completed":
        print(f"nodepint: run {summary['status']}: {summary['reason']}", file=sys.stderr)
        sys.exit(1 if summary["status"] == "failed" else 130)


def main() -> None:
    register_configs()
    hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")(_app)()


if __name__ == "__main__":
    main()
