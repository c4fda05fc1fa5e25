"""nodepint: parallel-in-time training of neural ODEs in JAX."""

__version__ = "0.1.0"
