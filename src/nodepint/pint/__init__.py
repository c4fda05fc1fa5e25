"""The PinT engine: level-1 methods, level-2 bases and the scans of their corrections."""

from nodepint.pint.solve import (
    PintSettings,
    PintSolution,
    observe,
    pint_solve,
    sequential_states,
)

__all__ = ["PintSettings", "PintSolution", "observe", "pint_solve", "sequential_states"]
