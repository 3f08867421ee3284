"""Exception types shared across the package."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MicroMacroError"]


class MicroMacroError(Exception):
    """Base class of the package's user-facing errors (reported in one line, exit 2)."""


class ConfigError(MicroMacroError, ValueError):
    """A configuration value is invalid. The message starts with the field name."""


class DataError(MicroMacroError, ValueError):
    """User data cannot be analysed as given. The message names the column or group."""
