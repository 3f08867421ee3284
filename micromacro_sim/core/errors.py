"""Exception types shared across the package, and the one-line description of an exception
raised by a user's code."""

from __future__ import annotations

from collections.abc import Iterable

from micromacro_sim.core.status import Reason, flag

__all__ = ["ConfigError", "DataError", "MicroMacroError", "NotApplicable", "PluginError",
           "describe_exception", "did_you_mean"]


class MicroMacroError(Exception):
    """Base class of the package's user-facing errors (reported in one line, exit 2)."""


class ConfigError(MicroMacroError, ValueError):
    """A configuration value is invalid. The message starts with the field name."""


class DataError(MicroMacroError, ValueError):
    """User data cannot be analysed as given. The message names the column or group."""


class PluginError(MicroMacroError):
    """A user's plug-in failed while a run ran, where the run cannot go on without it (a
    generator that raises or calls ``sys.exit``). The message starts with the config field
    and names the plug-in."""


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


def describe_exception(exc: BaseException) -> str:
    """One line saying what a user's code raised.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str
        ``Type: first line of the message`` (``Type`` alone without a message), or
        ``called sys.exit(CODE)`` for :class:`SystemExit`.
    """
    if isinstance(exc, SystemExit):
        return f"called sys.exit({'' if exc.code is None else repr(exc.code)})"
    try:
        text = str(exc).strip()
    except Exception:  # noqa: BLE001 - a user's exception may fail to print itself
        text = "(message cannot be shown)"
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def did_you_mean(got: object, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to a misspelled one (difflib,
    similarity at least .6), or ``""`` when none is close: appended to an error's line.
    """
    import difflib

    match = difflib.get_close_matches(str(got), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""
