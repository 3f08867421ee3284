"""micromacro-sim: Monte Carlo studies and estimators for micro-macro multilevel models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
