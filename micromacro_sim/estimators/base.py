"""Estimator interface and engine assembly.

An estimator's constructor only validates and stores options; ``fit(data)`` returns a
:class:`~micromacro_sim.core.results.FitResult`. Two-step methods subclass
:class:`~micromacro_sim.estimators.two_step.TwoStepEstimator` and only compute group
scores; the second step (checks, then OLS with every SE type, and the jackknife when
asked) is shared.

Batch paths are declared one way, by :attr:`Estimator.batch_designs`. A batch path may
leave replications to the reference path by marking them in ``fallback``
(:class:`~micromacro_sim.core.results.BatchResult` for one-step models,
:class:`~micromacro_sim.core.results.BatchScores` for a first step);
:func:`~micromacro_sim.estimators.recording.refit` resolves both, so verdicts match the
reference path exactly.

A method's code never stops a run: :func:`~micromacro_sim.estimators.recording.recorded`
is the one place where it is called and what it raises becomes a flag. A numerical error
(:data:`NUMERIC_ERRORS`) is a ``numerical_error``; any other exception, or
``SystemExit`` (a plug-in calling ``sys.exit``), is a ``method_raised`` naming the
exception; either way the fit (or, for a batch path, every replication of the batch) is
an ``error`` result and the other methods and replications carry on.
``KeyboardInterrupt`` still interrupts.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.options import Option, validate_options
from micromacro_sim.core.results import SE_TYPES, BatchResult, FitResult
from micromacro_sim.core.status import Flag, Reason
from micromacro_sim.design.config import ENGINES
from micromacro_sim.estimators.recording import (
    NUMERIC_ERRORS,
    RECORDED,
    checked_batch,
    checked_fit,
    error_flag,
    recorded,
    refit,
)
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset

__all__ = ["ENGINES", "NUMERIC_ERRORS", "RECORDED", "Estimator", "NotApplicable",
           "error_flag", "failed_batch", "fit_recorded", "recorded"]

#: Engines: ``fast`` (batch implementations over all replications at once),
#: ``reference`` (one dataset at a time through the library path) or ``auto`` (fast
#: where a method has a batch implementation for the design, reference otherwise).

class Estimator(ABC):  # noqa: B024 - completeness: missing_methods(), not abstractness
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
    #: The batch path uses member positions (the stacked arrays hold members in row order,
    #: so a batch with member ids then goes through the reference path). False for a
    #: method that uses only group means and sums; True, the safe default, otherwise.
    uses_member_positions: ClassVar[bool] = True
    #: What its slopes estimate (docs/estimands.md): ``"x"`` per unit of the group's true
    #: mean of x (the default: every method that works from x), ``"latent"`` per unit of
    #: xi (the oracle), ``"marker"`` per unit of the first member position's true score.
    scale: ClassVar[str] = "x"
    #: Origin of its intercept: ``"x_zero"`` (where x is 0), ``"latent_mean"`` (a latent
    #: variable with mean 0) or ``"score_mean"`` (scores that are deviations from the mean).
    origin: ClassVar[str] = "x_zero"
    #: Posterior draws by Markov chain Monte Carlo: seconds per replication rather than
    #: milliseconds (``micromacro bench`` times such a method on its own).
    mcmc: ClassVar[bool] = False
    #: Options the contract's batch checks build the method with (cheaper settings that
    #: take the same code paths, such as shorter Markov chains); default none.
    contract_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: SE type behind the bare measures (``cover``, ``reject``, ``modse``) of summaries,
    #: reports, ``plan``, ``power`` and adaptive targets: one of
    #: :data:`~micromacro_sim.core.results.SE_TYPES`. A one-step method keeps
    #: ``"classical"``, the slot of its model-based SE (outputs call it ``model``).
    default_se: ClassVar[str] = "classical"

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

        def call() -> FitResult:
            self.check_applicable(data)
            with np.errstate(all="ignore"):
                return self._fit(data)

        return recorded(call, lambda f: self._failed(data, f))

    def _failed(self, data: Dataset, why: Flag) -> FitResult:
        return FitResult.failed(self.label, data.terms, why, two_step=self.two_step)

    def _fit_one(self, data: Dataset) -> FitResult:
        """:meth:`fit`, also when a subclass overrides it: what it raises, or a return
        value that is not a result for ``data``, is recorded (:func:`recorded`)."""
        return recorded(lambda: checked_fit(self.fit(data), data), lambda f: self._failed(data, f))

    def estimate(self, data: Dataset) -> FitResult:
        """The method's own fit of one dataset: the public hook of a one-step method.

        Return a :class:`~micromacro_sim.core.results.FitResult` (``method=self.label``,
        ``terms=data.terms``, ``params``, ``bse`` keyed by SE type, and ``converged``,
        ``admissible`` and ``flags`` where the fit is not clean). It may raise: :meth:`fit`
        records a numerical error or a bug as the replication's result. Two-step methods
        implement :meth:`TwoStepEstimator.scores` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no estimate()")

    def _fit(self, data: Dataset) -> FitResult:
        """Method-specific fit (may raise; :meth:`fit` records failures). The package's
        own methods override it; by default it is :meth:`estimate`."""
        return self.estimate(data)

    @classmethod
    def missing_methods(cls) -> tuple[str, ...]:
        """What a subclass must still define to be a method: ``("estimate",)`` for a
        one-step class that overrides none of ``estimate``, ``_fit`` and ``fit``, the
        abstract methods left (``scores`` of a two-step method), else ``()``."""
        left = tuple(sorted(getattr(cls, "__abstractmethods__", ())))
        if left:
            return left
        own = [name for name in ("estimate", "_fit", "fit")
               if getattr(cls, name) is not getattr(Estimator, name)]
        return () if own else ("estimate",)

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
        :attr:`~micromacro_sim.generate.batch.Batch.reference_only` (several x) always takes
        the reference path, and so does one with member ids (absent members) when the method
        :attr:`uses_member_positions`. What the method's code raises is recorded
        (:func:`recorded`): per replication on the reference path, for the whole batch when
        the batch implementation raises.
        """
        if not self.batch_path(batch, engine):
            results = [self._fit_one(d) for d in batch.datasets]
            return BatchResult.from_results(results, batch.terms, self.label, self.two_step)

        def call() -> BatchResult:
            with np.errstate(all="ignore"):
                return checked_batch(self._fit_batch(batch), batch)

        res = recorded(call, lambda f: failed_batch(self, batch, f, "fast"))
        return refit(res, batch.datasets, self._fit_one)

    @classmethod
    def batch_refused(cls, *, several_x: bool, member_ids: bool) -> bool:
        """Whether data of this kind go one dataset at a time whatever the engine: several x
        (a batch's arrays hold one x), or member ids when the batch path uses member
        positions (a batch's arrays hold members in row order)."""
        return several_x or (member_ids and cls.uses_member_positions)

    def batch_path(self, batch: Batch, engine: str) -> bool:
        """Whether :meth:`fit_batch` takes the batch implementation for ``batch``.

        Raises
        ------
        ValueError
            ``engine`` is not one of :data:`ENGINES`, or ``fast`` without a batch path.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
        if self.batch_refused(several_x=batch.reference_only, member_ids=batch.member_ids):
            return False
        native = engine != "reference" and self.has_batch(batch.balanced)
        if engine == "fast" and not native:
            raise ValueError(f"engine: method {self.name!r} has no fast implementation for "
                             f"{'balanced' if batch.balanced else 'unbalanced'} designs")
        return native


def fit_recorded(est: Estimator, batch: Batch, engine: str = "auto") -> BatchResult:
    """``est.fit_batch(batch, engine)``, whatever the estimator's code does.

    A plug-in may override :meth:`Estimator.fit_batch` itself: what the call raises, or a
    return value that is not a result for ``batch``, makes every replication of ``batch``
    an ``error`` result of ``est`` (:func:`recorded`). A bad ``engine`` is the caller's
    mistake and raises ``ValueError``.
    """
    engine_used = "fast" if est.batch_path(batch, engine) else "reference"
    return recorded(lambda: checked_batch(est.fit_batch(batch, engine), batch),
                    lambda f: failed_batch(est, batch, f, engine_used))


def failed_batch(est: Estimator, batch: Batch, why: Flag, engine: str) -> BatchResult:
    """Every replication of ``batch`` a result of ``est`` without estimates, for ``why``."""
    results = [FitResult.failed(est.label, batch.terms, why, two_step=est.two_step)
               for _ in batch.datasets]
    return BatchResult.from_results(results, batch.terms, est.label, est.two_step, engine)
