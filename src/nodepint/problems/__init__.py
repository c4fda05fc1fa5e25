"""The problem registry: `problem.name` -> Problem class."""

from __future__ import annotations

from nodepint.config import ConfigError, ProblemConfig
from nodepint.problems.base import Dataset, Problem, Split
from nodepint.problems.custom import Custom
from nodepint.problems.digits import Digits
from nodepint.problems.duffing import Duffing
from nodepint.problems.heat import Heat
from nodepint.problems.kuramoto import Kuramoto
from nodepint.problems.lorenz import Lorenz
from nodepint.problems.lotka_volterra import LotkaVolterra
from nodepint.problems.lotka_volterra_harvest import LotkaVolterraHarvest
from nodepint.problems.lynx_hare import LynxHare
from nodepint.problems.pendulum import Pendulum
from nodepint.problems.sph import SPH
from nodepint.problems.van_der_pol import VanDerPol

REGISTRY: dict[str, type[Problem]] = {
    cls.name: cls
    for cls in (
        Lorenz,
        LotkaVolterra,
        LynxHare,
        Digits,
        VanDerPol,
        Duffing,
        Kuramoto,
        Custom,
        Pendulum,
        LotkaVolterraHarvest,
    )
}
# Field problems, whose neural ODE works in a reduced basis.
REGISTRY[Heat.name] = Heat
REGISTRY[SPH.name] = SPH


def make_problem(cfg: ProblemConfig) -> Problem:
    """Build the problem named by `cfg.name`, checking its parameters."""
    if cfg.name not in REGISTRY:
        raise ConfigError(
            f"problem.name={cfg.name!r} is not a known problem: choose one of "
            f"{', '.join(sorted(REGISTRY))}."
        )
    return REGISTRY[cfg.name](cfg)


__all__ = ["REGISTRY", "Dataset", "Problem", "Split", "make_problem"]
