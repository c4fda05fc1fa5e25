"""Gradient methods for a PinT solve: `unroll` (autodiff through the iterations, in
pint.solve), `implicit` (the adjoint recurrence at the converged shooting states) and `dal`
(the continuous adjoint ODE, solved backward on every chunk in parallel)."""

from nodepint.gradients.dal import observe_dal, pint_solve_dal
from nodepint.gradients.implicit import pint_solve_implicit

__all__ = ["observe_dal", "pint_solve_dal", "pint_solve_implicit"]
