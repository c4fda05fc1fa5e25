"""Gradient methods for a PinT solve: `unroll` (autodiff through the iterations, in
pint.solve) and `implicit` (the adjoint recurrence at the converged shooting states)."""

from nodepint.gradients.implicit import pint_solve_implicit

__all__ = ["pint_solve_implicit"]
