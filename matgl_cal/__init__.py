"""matgl-cal: Crystal Adversarial Learning (CAL) for MatGL models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__: list[str] = ["__version__"]
