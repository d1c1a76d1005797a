"""Runstream: live tracking of machine-learning runs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
