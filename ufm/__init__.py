"""ufm: the unconstrained-features model of neural collapse, simulated and held against theory."""

__version__ = "0.1.0"
