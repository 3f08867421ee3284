"""Exception types shared across the package."""

from __future__ import annotations

from micromacro_sim.core.status import Reason, flag

__all__ = ["ConfigError", "DataError", "MicroMacroError", "NotApplicable"]


class MicroMacroError(Exception):
    """Base class of the package's user-facing errors (reported in one line, exit 2)."""


class ConfigError(MicroMacroError, ValueError):
    """A configuration value is invalid. The message starts with the field name."""


class DataError(MicroMacroError, ValueError):
    """User data cannot be analysed as given. The message names the column or group."""


class NotApplicable(Exception):
    """The method cannot be used on this dataset (for example it needs balanced groups).

    Parameters
    ----------
    code : Reason
        One of :data:`~micromacro_sim.core.status.NOT_APPLICABLE_REASONS`.
    text : str, optional
        Human text (the code's default text otherwise).
    """

    def __init__(self, code: Reason, text: str = "") -> None:
        self.flag = flag(code, text)
        super().__init__(self.flag.text)
