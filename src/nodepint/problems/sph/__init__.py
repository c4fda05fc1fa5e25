"""2-D weakly compressible SPH: the solver, its scenes, the HDF5 loader and the problem."""

from nodepint.problems.sph.problem import SPH

__all__ = ["SPH"]
