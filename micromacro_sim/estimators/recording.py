"""Calling a method's code: what it raises becomes a flag, what it returns is checked.

:func:`recorded` is the one place where a method's code is called; a numerical error
(:data:`NUMERIC_ERRORS`) becomes ``numerical_error``, any other exception or ``SystemExit``
``method_raised``; ``KeyboardInterrupt`` and ``MemoryError`` propagate. :func:`checked_fit`
and :func:`checked_batch` refuse a return value that is not a result for the data, and
:func:`refit` replaces the replications a batch path left to the reference path. Used by
:mod:`micromacro_sim.estimators.base`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from micromacro_sim.core.errors import NotApplicable, describe_exception
from micromacro_sim.core.results import SE_TYPES, BatchResult, FitResult
from micromacro_sim.core.status import Flag, Reason, flag
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset

__all__ = ["NUMERIC_ERRORS", "RECORDED", "checked_batch", "checked_fit", "error_flag",
           "recorded", "refit", "without_fallback"]

T = TypeVar("T")

#: Exceptions of numerical code: recorded as ``numerical_error``.
NUMERIC_ERRORS = (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError)
#: What :func:`recorded` turns into a flag: every exception, and ``SystemExit``; nothing
#: else (``KeyboardInterrupt`` interrupts the run). ``MemoryError`` propagates too: it says
#: what the machine had at the time, not what the method does with the data, and a result
#: stored for it would not be reproducible.
RECORDED = (Exception, SystemExit)


def error_flag(exc: BaseException) -> Flag:
    """The flag recording an exception raised by a method's code.

    A numerical error is ``numerical_error`` with the text ``error: Type: message``; any
    other exception (or ``SystemExit``) is ``method_raised`` with the text ``error:`` and
    :func:`~micromacro_sim.core.errors.describe_exception` (type and first line, or
    ``called sys.exit(CODE)``).
    """
    if isinstance(exc, NUMERIC_ERRORS):
        return flag(Reason.NUMERICAL_ERROR, f"error: {type(exc).__name__}: {exc}")
    return flag(Reason.METHOD_RAISED, f"error: {describe_exception(exc)}")


def recorded(call: Callable[[], T], failed: Callable[[Flag], T]) -> T:
    """``call()``, or ``failed(flag)`` when the method code it runs raises.

    The one place where a method's code is called and its exceptions become flags:
    :class:`NotApplicable` gives its own flag, anything of :data:`RECORDED` the
    :func:`error_flag`; ``KeyboardInterrupt`` and ``MemoryError`` propagate.
    """
    try:
        return call()
    except NotApplicable as exc:
        return failed(exc.flag)
    except MemoryError:
        raise
    except RECORDED as exc:
        return failed(error_flag(exc))


def checked_fit(res: Any, data: Dataset) -> FitResult:
    """``res`` when it is a result for ``data`` (TypeError otherwise: a method's bug)."""
    shape = (len(data.terms),)
    if not isinstance(res, FitResult) or res.params.shape != shape:
        what = (type(res).__name__ if not isinstance(res, FitResult)
                else f"params of shape {res.params.shape}")
        raise TypeError(f"fit returned {what}, not a FitResult of shape {shape}")
    return res


def checked_batch(res: Any, batch: Batch) -> BatchResult:
    """``res`` when it is a result for ``batch`` (TypeError otherwise: a method's bug)."""
    shape = (batch.n_reps, len(batch.terms))
    if not isinstance(res, BatchResult) or res.params.shape != shape:
        what = (type(res).__name__ if not isinstance(res, BatchResult)
                else f"params of shape {res.params.shape}")
        raise TypeError(f"fit_batch returned {what}, not a BatchResult of shape {shape}")
    return res


def refit(res: BatchResult, datasets: tuple[Dataset, ...],
           fit: Callable[[Dataset], FitResult]) -> BatchResult:
    """Replace the replications marked in ``res.fallback`` by reference fits."""
    if res.fallback is None or not np.any(res.fallback):
        return res if res.fallback is None else without_fallback(res)
    params = res.params.copy()
    bse = {t: v.copy() for t, v in res.bse.items()}
    df = res.df_resid.copy()
    conv, adm, flags = res.converged.copy(), res.admissible.copy(), res.flags.copy()
    ci, level = (None if res.ci is None else res.ci.copy()), res.ci_level
    for r in np.flatnonzero(res.fallback):
        one = fit(datasets[r])
        params[r] = one.params
        if one.ci is not None:
            if ci is None:
                ci = np.full((*params.shape, 2), np.nan)
            ci[r], level = one.ci, one.ci_level
        for t in SE_TYPES:
            bse[t][r] = one.se(t)
        df[r] = np.nan if one.df_resid is None else one.df_resid
        conv[r], adm[r], flags[r] = one.converged, one.admissible, one.flags
    return BatchResult(method=res.method, terms=res.terms, params=params, bse=bse,
                       df_resid=df, converged=conv, admissible=adm, flags=flags,
                       two_step=res.two_step, engine=res.engine, ci=ci, ci_level=level)


def without_fallback(res: BatchResult) -> BatchResult:
    """``res`` without its ``fallback`` marks (every replication is final)."""
    return BatchResult(method=res.method, terms=res.terms, params=res.params, bse=res.bse,
                       df_resid=res.df_resid, converged=res.converged,
                       admissible=res.admissible, flags=res.flags, two_step=res.two_step,
                       engine=res.engine, ci=res.ci, ci_level=res.ci_level)
