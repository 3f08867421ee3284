"""The shared path of two-step methods: group scores, then OLS, and the jackknife.

A two-step method implements only its first step (:meth:`TwoStepEstimator.scores`, and
optionally :meth:`TwoStepEstimator.scores_batch`). The second step is shared: the checks
(finite scores, enough groups, full rank), the OLS of y on [1, Z, scores] with classical and
HC0-HC3 standard errors, which treat the scores as known, and, with the option
``se: jackknife``, the delete-one-group jackknife SE ``JK`` (Zitzmann, Weirich & Hecht
2023), which refits the whole method, both steps, without each group in turn and so carries
the first step's uncertainty.

How the G refits are made:

- a method whose group scores do not change when another group is deleted
  (:attr:`TwoStepEstimator.scores_local`: group means, the true scores) refits nothing:
  the leave-one-out estimates are rank-one downdates of the full OLS
  (:func:`~micromacro_sim.models.jackknife.ols_deletions`), batched over replications;
- any other method fits the G deleted datasets of a replication as one batch, through its
  own batch path where it has one (so an iterative first step costs G batched refits).

Each replication's jackknife uses only its own data, so it is the same alone or in any
batch. A requested jackknife that cannot be computed (a refit without estimates) leaves
``JK`` NaN and flags the fit ``jackknife_incomplete``.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from micromacro_sim.core.options import Option
from micromacro_sim.core.results import (
    OLS_SE_TYPES,
    SE_TYPES,
    BatchResult,
    BatchScores,
    FitResult,
    Scores,
)
from micromacro_sim.core.status import Flag, Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import Estimator, fit_recorded
from micromacro_sim.estimators.recording import recorded
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.jackknife import jackknife_se, ols_deletions
from micromacro_sim.models.ols import (
    design_problems,
    ols,
    ols_batch,
    perfect_fit,
    perfect_fit_flag,
    se_problems,
)

__all__ = ["SE_OPTION", "TwoStepEstimator"]

#: The option every two-step method has: which standard errors beyond the OLS ones.
SE_OPTION = Option(
    "ols", "str", "ols: the second step's classical and HC0-HC3 SEs (scores treated as "
    "known); jackknife: also JK, delete-one-group, both steps refitted (G refits)",
    choices=("ols", "jackknife"))


class TwoStepEstimator(Estimator):
    """A method that scores each group, then runs OLS of y on [1, Z, scores].

    When the first step is inadmissible the second step still runs on its scores (so
    the estimate is recorded) but the result is flagged; when there are no usable
    scores (NaN) the result has no estimates. Every subclass gets the option ``se``
    (:data:`SE_OPTION`).
    """

    two_step = True
    #: The second step's OLS reports classical and HC0-HC3 SEs; HC3 is the default.
    default_se = "HC3"
    #: A group's score depends on its own data only (group means, the true scores): the
    #: jackknife then downdates the OLS instead of refitting the first step.
    scores_local: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "se" not in cls.options:
            cls.options = MappingProxyType({**cls.options, "se": SE_OPTION})

    @property
    def jackknife(self) -> bool:
        """Whether this instance reports the jackknife SE (option ``se: jackknife``)."""
        return self.params.get("se") == "jackknife"

    @abstractmethod
    def scores(self, data: Dataset) -> Scores:
        """Group scores of ``data`` (may raise; see :meth:`Estimator.fit`)."""

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Group scores of every replication (batch implementation; optional)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ one dataset
    def _fit(self, data: Dataset) -> FitResult:
        res = self._second_step(data)
        if not self.jackknife or not np.all(np.isfinite(res.params)):
            return res
        if self.scores_local:
            X = data.design(np.asarray(res.extras["scores"], dtype=float))
            deletions = ols_deletions(data.y[None], X[None])[0]
        else:
            plain = self._without_jackknife()
            deletions = np.stack([plain._fit_one(data.without_group(g)).params
                                  for g in range(data.n_groups)])
        se = jackknife_se(deletions)
        ok = bool(np.all(np.isfinite(se)))
        late = () if ok else (_incomplete(deletions),)
        return FitResult(
            method=res.method, terms=res.terms, params=res.params,
            bse={**res.bse, "JK": se}, df_resid=res.df_resid, converged=res.converged,
            admissible=res.admissible and ok, flags=(*res.flags, *late), two_step=True,
            extras={**res.extras, "jackknife": deletions},
        )

    def _second_step(self, data: Dataset) -> FitResult:
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
        params, bse, df, s2 = ols(data.y, X)
        bad = se_problems(bse)
        exact = bool(perfect_fit(data.y[None], np.array([s2]))[0])
        late = (*((bad,) if bad else ()), *((perfect_fit_flag(),) if exact else ()))
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=df,
            converged=sc.converged, admissible=sc.admissible and not late,
            flags=(*sc.flags, *late), two_step=True,
            extras={**sc.extras, "scores": values},
        )

    def _without_jackknife(self) -> TwoStepEstimator:
        """This method with the same options but ``se: ols`` (the jackknife's refits)."""
        plain = copy.copy(self)
        plain.params = {**self.params, "se": "ols"}
        return plain

    # ------------------------------------------------------------------ a batch
    def _reference_scores(self, batch: BatchScores, datasets: tuple[Dataset, ...]
                          ) -> BatchScores:
        """Fill the replications marked in ``batch.fallback`` from :meth:`scores`."""
        if batch.fallback is None or not np.any(batch.fallback):
            return batch
        values = batch.values.copy()
        conv, adm, flags = batch.converged.copy(), batch.admissible.copy(), batch.flags.copy()
        for r in np.flatnonzero(batch.fallback):
            sc = recorded(lambda d=datasets[r]: self.scores(d), lambda f: f)
            if isinstance(sc, Flag):
                values[r], conv[r], adm[r], flags[r] = np.nan, False, False, (sc,)
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
            p, b, d, s2 = ols_batch(batch.y[usable], X[usable])
            params[usable], df[usable] = p, d
            exact = np.zeros(R, dtype=bool)
            exact[usable] = perfect_fit(batch.y[usable], s2)
            for t in OLS_SE_TYPES:
                bse[t][usable] = b[t]
            finite_se = np.all(np.isfinite(np.concatenate(
                [bse[t] for t in OLS_SE_TYPES], axis=1)), axis=1)
            for r in np.flatnonzero(usable & ~finite_se):
                bad = se_problems({t: bse[t][r] for t in OLS_SE_TYPES})
                add_flags(problems, np.arange(R) == r, bad)
            add_flags(problems, exact, perfect_fit_flag())
            if self.jackknife:
                self._jackknife_batch(batch, X, usable, bse, problems)
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

    def _jackknife_batch(self, batch: Batch, X: np.ndarray, usable: np.ndarray,
                         bse: dict[str, np.ndarray], problems: np.ndarray) -> None:
        """Fill ``bse["JK"]`` of the usable replications (flagging incomplete ones)."""
        reps = np.flatnonzero(usable)
        if self.scores_local:
            deletions = ols_deletions(batch.y[reps], X[reps])
        else:
            plain = self._without_jackknife()
            deletions = np.stack([_batch_deletions(plain, batch.datasets[r]) for r in reps])
        se = jackknife_se(deletions)
        bse["JK"][reps] = se
        for i, r in enumerate(reps):
            if not np.all(np.isfinite(se[i])):
                add_flags(problems, np.arange(len(problems)) == r, _incomplete(deletions[i]))


def _batch_deletions(plain: TwoStepEstimator, data: Dataset) -> np.ndarray:
    """Estimates of ``data`` without each group, (G, k): one batch of the G deletions,
    through the method's batch path where it has one."""
    deleted = Batch.from_datasets([data.without_group(g) for g in range(data.n_groups)])
    return fit_recorded(plain, deleted, "auto").params


def _incomplete(deletions: np.ndarray) -> Flag:
    """The flag of a jackknife with refits that gave no estimates."""
    missing = int(np.sum(~np.all(np.isfinite(deletions), axis=1)))
    return flag(Reason.JACKKNIFE_INCOMPLETE,
                f"no jackknife SE: {missing} of {len(deletions)} delete-one-group refits "
                "gave no estimates")
