"""Estimator interface and engine assembly.

An estimator's constructor only validates and stores options; ``fit(data)`` returns a
:class:`~micromacro_sim.core.results.FitResult`. Two-step methods subclass
:class:`TwoStepEstimator` and only compute group scores; the second step (checks, then
OLS with every SE type) is shared.

Batch paths are declared one way, by :attr:`Estimator.batch_designs`. A batch path may
leave replications to the reference path by marking them in ``fallback``
(:class:`~micromacro_sim.core.results.BatchResult` for one-step models,
:class:`~micromacro_sim.core.results.BatchScores` for a first step); :func:`_refit` resolves
both, so verdicts match the reference path exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.options import Option, validate_options
from micromacro_sim.core.results import SE_TYPES, BatchResult, BatchScores, FitResult, Scores
from micromacro_sim.core.status import Flag, Reason, add_flags, flag, no_flags
from micromacro_sim.design.config import ENGINES
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.ols import design_problems, ols, ols_batch, se_problems

__all__ = ["ENGINES", "Estimator", "NotApplicable", "TwoStepEstimator"]

#: Engines: ``fast`` (batch implementations over all replications at once),
#: ``reference`` (one dataset at a time through the library path) or ``auto`` (fast
#: where a method has a batch implementation for the design, reference otherwise).

#: Exceptions of numerical code that become an ``error`` result instead of propagating.
NUMERIC_ERRORS = (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError)


def error_flag(exc: BaseException) -> Flag:
    """The flag recording an exception of the numerical code."""
    return flag(Reason.NUMERICAL_ERROR, f"error: {type(exc).__name__}: {exc}")


class Estimator(ABC):
    """Base class of every method.

    Subclasses set :attr:`name` (the registry id), :attr:`options` (name ->
    :class:`~micromacro_sim.core.options.Option`) and, when they have a batch path,
    :attr:`batch_designs`.

    Parameters
    ----------
    label : str, optional
        Name used in results (defaults to :attr:`name`); lets one method appear twice
        with different options.
    **options
        Method options, see the subclass's :attr:`options`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Option]] = MappingProxyType({})
    needs_balanced: ClassVar[bool] = False
    needs_truth: ClassVar[bool] = False
    two_step: ClassVar[bool] = False
    max_x: ClassVar[int | None] = 1
    #: Designs with a batch path: () none, ("balanced",) or ("balanced", "unbalanced").
    batch_designs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, label: str | None = None, **options: Any) -> None:
        self.label = label or self.name
        self.params = validate_options(self.name, self.options, options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({opts})"

    def check_applicable(self, data: Dataset) -> None:
        """Raise :class:`NotApplicable` when the method cannot use ``data``."""
        if self.needs_truth and data.xi is None:
            raise NotApplicable(Reason.NEEDS_TRUTH)
        if self.needs_balanced and not data.balanced:
            raise NotApplicable(Reason.NEEDS_BALANCED)
        if self.max_x is not None and data.n_x > self.max_x:
            raise NotApplicable(Reason.TOO_MANY_X,
                                f"supports at most {self.max_x} x variable(s)")

    def fit(self, data: Dataset) -> FitResult:
        """Fit to one dataset; failures become a flagged result, never an exception."""
        try:
            self.check_applicable(data)
            with np.errstate(all="ignore"):
                return self._fit(data)
        except NotApplicable as exc:
            return FitResult.failed(self.label, data.terms, exc.flag, two_step=self.two_step)
        except NUMERIC_ERRORS as exc:
            return FitResult.failed(self.label, data.terms, error_flag(exc),
                                    two_step=self.two_step)

    @abstractmethod
    def _fit(self, data: Dataset) -> FitResult:
        """Method-specific fit (may raise; :meth:`fit` records failures)."""

    @classmethod
    def has_batch(cls, balanced: bool) -> bool:
        """Whether the method has a batch implementation for this kind of design."""
        return ("balanced" if balanced else "unbalanced") in cls.batch_designs

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """Batch path (required when :attr:`batch_designs` is not empty)."""
        raise NotImplementedError

    def one_step_result(self, batch: Batch, params: np.ndarray, se: np.ndarray,
                        converged: np.ndarray, admissible: np.ndarray, flags: np.ndarray,
                        fallback: np.ndarray) -> BatchResult:
        """A one-step model's batch result (model-based SEs, normal inference)."""
        R, k = params.shape
        bse = {t: np.full((R, k), np.nan) for t in SE_TYPES}
        bse["classical"] = se
        return BatchResult(
            method=self.label, terms=batch.terms, params=params, bse=bse,
            df_resid=np.full(R, np.nan), converged=converged, admissible=admissible,
            flags=flags, two_step=False, engine="fast", fallback=fallback,
        )

    def fit_batch(self, batch: Batch, engine: str = "auto") -> BatchResult:
        """Fit every replication of ``batch``.

        ``engine="reference"`` loops :meth:`fit` over the datasets; ``fast`` and
        ``auto`` use the batch implementation when :meth:`has_batch` says there is one
        (``fast`` without one raises ``ValueError``). Replications the batch path marks
        as ``fallback`` are fitted by the reference path and merged in. A batch that is
        :attr:`~micromacro_sim.generate.batch.Batch.reference_only` (several x, missing members)
        always takes the reference path.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
        if batch.reference_only:  # several x or member ids: the arrays hold one x
            engine = "reference"
        native = engine != "reference" and self.has_batch(batch.balanced)
        if engine == "fast" and not native:
            raise ValueError(f"engine: method {self.name!r} has no fast implementation for "
                             f"{'balanced' if batch.balanced else 'unbalanced'} designs")
        if not native:
            results = [self.fit(d) for d in batch.datasets]
            return BatchResult.from_results(results, batch.terms, self.label, self.two_step)
        with np.errstate(all="ignore"):
            res = self._fit_batch(batch)
        return _refit(res, batch.datasets, self.fit)


def _refit(res: BatchResult, datasets: tuple[Dataset, ...],
           fit: Callable[[Dataset], FitResult]) -> BatchResult:
    """Replace the replications marked in ``res.fallback`` by reference fits."""
    if res.fallback is None or not np.any(res.fallback):
        return res if res.fallback is None else _without_fallback(res)
    params = res.params.copy()
    bse = {t: v.copy() for t, v in res.bse.items()}
    df = res.df_resid.copy()
    conv, adm, flags = res.converged.copy(), res.admissible.copy(), res.flags.copy()
    for r in np.flatnonzero(res.fallback):
        one = fit(datasets[r])
        params[r] = one.params
        for t in SE_TYPES:
            bse[t][r] = one.se(t)
        df[r] = np.nan if one.df_resid is None else one.df_resid
        conv[r], adm[r], flags[r] = one.converged, one.admissible, one.flags
    return BatchResult(method=res.method, terms=res.terms, params=params, bse=bse,
                       df_resid=df, converged=conv, admissible=adm, flags=flags,
                       two_step=res.two_step, engine=res.engine)


def _without_fallback(res: BatchResult) -> BatchResult:
    return BatchResult(method=res.method, terms=res.terms, params=res.params, bse=res.bse,
                       df_resid=res.df_resid, converged=res.converged,
                       admissible=res.admissible, flags=res.flags, two_step=res.two_step,
                       engine=res.engine)


class TwoStepEstimator(Estimator):
    """A method that scores each group, then runs OLS of y on [1, Z, scores].

    When the first step is inadmissible the second step still runs on its scores (so
    the estimate is recorded) but the result is flagged; when there are no usable
    scores (NaN) the result has no estimates.
    """

    two_step = True

    @abstractmethod
    def scores(self, data: Dataset) -> Scores:
        """Group scores of ``data`` (may raise; see :meth:`Estimator.fit`)."""

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Group scores of every replication (batch implementation; optional)."""
        raise NotImplementedError

    def _fit(self, data: Dataset) -> FitResult:
        sc = self.scores(data)
        values = np.asarray(sc.values, dtype=float)
        finite = bool(np.all(np.isfinite(values)))
        X = data.design(values if finite else np.zeros_like(values))
        problems = design_problems(X[None], np.array([finite]),
                                   np.array([bool(sc.flags)]))[0]
        if not finite or problems:
            return FitResult(
                method=self.label, terms=data.terms, params=np.full(len(data.terms), np.nan),
                bse={}, converged=sc.converged, admissible=False,
                flags=(*sc.flags, *problems), two_step=True, extras=sc.extras,
            )
        params, bse, df = ols(data.y, X)
        bad = se_problems(bse)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=df,
            converged=sc.converged, admissible=sc.admissible and bad is None,
            flags=(*sc.flags, *((bad,) if bad else ())), two_step=True,
            extras={**sc.extras, "scores": values},
        )

    def _reference_scores(self, batch: BatchScores, datasets: tuple[Dataset, ...]
                          ) -> BatchScores:
        """Fill the replications marked in ``batch.fallback`` from :meth:`scores`."""
        if batch.fallback is None or not np.any(batch.fallback):
            return batch
        values = batch.values.copy()
        conv, adm, flags = batch.converged.copy(), batch.admissible.copy(), batch.flags.copy()
        for r in np.flatnonzero(batch.fallback):
            try:
                sc = self.scores(datasets[r])
            except (NotApplicable, *NUMERIC_ERRORS) as exc:
                values[r], conv[r], adm[r] = np.nan, False, False
                flags[r] = (exc.flag if isinstance(exc, NotApplicable) else error_flag(exc),)
                continue
            values[r] = np.asarray(sc.values, dtype=float).reshape(-1)
            conv[r], adm[r], flags[r] = sc.converged, sc.admissible, tuple(sc.flags)
        return BatchScores(values, conv, adm, flags)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        sc = self._reference_scores(self.scores_batch(batch), batch.datasets)
        R = batch.n_reps
        values = np.asarray(sc.values, dtype=float)
        finite = np.all(np.isfinite(values), axis=1)
        X = batch.design(np.where(finite[:, None], values, 0.0))
        k = X.shape[2]
        has_reason = np.array([bool(f) for f in sc.flags], dtype=bool)
        problems = design_problems(X, finite, has_reason)
        usable = finite & np.array([not p for p in problems], dtype=bool)
        params = np.full((R, k), np.nan)
        bse = {t: np.full((R, k), np.nan) for t in SE_TYPES}
        df = np.full(R, np.nan)
        if usable.any():
            p, b, d = ols_batch(batch.y[usable], X[usable])
            params[usable], df[usable] = p, d
            for t in SE_TYPES:
                bse[t][usable] = b[t]
            finite_se = np.all(np.isfinite(np.concatenate([bse[t] for t in SE_TYPES], axis=1)),
                               axis=1)
            for r in np.flatnonzero(usable & ~finite_se):
                bad = se_problems({t: bse[t][r] for t in SE_TYPES})
                add_flags(problems, np.arange(R) == r, bad)
        flags = no_flags(R)
        for r in range(R):
            flags[r] = (*sc.flags[r], *problems[r])
        clean = np.array([not p for p in problems], dtype=bool)
        return BatchResult(
            method=self.label, terms=batch.terms, params=params, bse=bse, df_resid=df,
            converged=np.asarray(sc.converged, bool),
            admissible=np.asarray(sc.admissible, bool) & clean,
            flags=flags, two_step=True, engine="fast",
        )
