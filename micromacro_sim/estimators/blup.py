"""Mixed-model BLUPs: conditional modes of x ~ 1 + (1 | group), then OLS.

The one-way random-intercept model (kernels :mod:`micromacro_sim.models.oneway` and
:mod:`micromacro_sim.models.oneway_batch`) is fitted by REML (lme4's default, and the seed
study's) or ML. The group score is the conditional mode of the random intercept, as lme4's
``ranef()`` reports it: the deviation from the fixed intercept,

    u_g = tau2 n_g / (sigma2 + n_g tau2) * (xbar_g - mu).

Balanced data use the ANOVA closed forms. A fit on the boundary ``tau2 = 0`` is flagged
``admissible=False`` ("zero variance (boundary)"); its scores are all 0. Unbalanced data
are fitted twice: by the exact optimum of the profile (restricted) likelihood, and by
statsmodels ``MixedLM`` as an independent check (option ``verify``). MixedLM's own stopping
rule leaves relative errors up to ~1e-4 in flat likelihoods and it sometimes stops at a
visibly worse point, so the profile optimum is reported; ``extras["mixedlm"]`` says whether
MixedLM agreed ("agrees") or stopped lower ("worse optimum"). If MixedLM ever finds a
higher likelihood than the profile optimum, its fit is reported and the result is flagged
("disagrees with profile likelihood").

Fast engine (:meth:`Blup.scores_batch`): the same estimates for a whole batch
(:func:`~micromacro_sim.models.oneway_batch.oneway_batch`); the MixedLM check is not part
of it.

Reference: R ``lme4::lmer(x ~ (1 | group), REML = TRUE/FALSE)``, ``ranef()``.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.oneway import (
    OneWayFit,
    conditional_modes,
    mixedlm_check,
    oneway_closed_form,
    oneway_mixedlm,
    oneway_profile,
)
from micromacro_sim.models.oneway_batch import oneway_batch

__all__ = [
    "Blup",
    "OneWayFit",
    "conditional_modes",
    "oneway_batch",
    "oneway_closed_form",
    "oneway_mixedlm",
    "oneway_profile",
]

#: Reason of a replication the one-way model cannot be fitted to.
NOT_APPLICABLE = "needs at least 2 groups and some groups with 2+ members"


class Blup(TwoStepEstimator):
    """Conditional modes of a random-intercept model of the first x as the score.

    Options
    -------
    reml : bool, default True
        REML (lme4's default) or ML variance components.
    verify : bool, default True
        Unbalanced data only: also fit statsmodels ``MixedLM`` as an independent check
        of the profile-likelihood optimum (about 0.1 s per fit). Reference engine only:
        the fast engine (:meth:`scores_batch`) reports the profile optimum unchecked.

    Reference: R ``lme4::lmer(x ~ (1 | group), REML = reml)``, ``ranef()``; the second
    step as ``lm(y ~ z + score)`` with ``sandwich::vcovHC`` SEs.
    """

    name = "blup"
    description = "OLS on random-intercept conditional modes (lme4 ranef; REML or ML)"
    options = {
        "reml": Option(True, "bool", "REML (lme4's default) or ML variance components"),
        "verify": Option(True, "bool", "unbalanced data, reference engine: check the optimum "
                                       "against statsmodels MixedLM"),
    }
    batch_designs = ("balanced", "unbalanced")
    origin = "score_mean"  # conditional modes: deviations from the fitted mean
    uses_member_positions = False  # group means and sums only

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if data.n_groups < 2 or data.n_persons <= data.n_groups:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE)

    def first_step(self, data: Dataset) -> tuple[OneWayFit, bool, dict[str, object]]:
        """Variance components, whether they disagree with MixedLM, and check details."""
        reml = bool(self.params["reml"])
        if data.balanced:
            return oneway_closed_form(data, reml=reml), False, {"engine": "closed form"}
        exact = oneway_profile(data, reml=reml)
        info: dict[str, object] = {"engine": "profile likelihood"}
        if not self.params["verify"]:
            return exact, False, info
        check = mixedlm_check(data, exact, reml=reml)
        if check.failed:
            return exact, False, {**info, "mixedlm": "failed"}
        if check.better:  # MixedLM found a better optimum: the profile search missed it
            return check.fit, True, {**info, "engine": "MixedLM"}
        return exact, False, {**info, "mixedlm": "agrees" if check.agrees else "worse optimum"}

    def scores(self, data: Dataset) -> Scores:
        fit, disagrees, info = self.first_step(data)
        u = conditional_modes(data.xbar[:, 0], data.sizes, fit.mu, fit.tau2, fit.sigma2)
        flags = (flag(Reason.BOUNDARY),) if fit.boundary else ()
        if disagrees:
            flags += (flag(Reason.CLOSED_FORM_DISAGREEMENT, "disagrees with profile likelihood"),)
        return Scores(
            values=u,
            converged=not disagrees,
            admissible=not fit.boundary,
            flags=flags,
            extras={
                "tau2": fit.tau2,
                "sigma2": fit.sigma2,
                "mu": fit.mu,
                "loglik": fit.loglik,
                "reml": bool(self.params["reml"]),
                **info,
            },
        )

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Scores of every replication at once (fast engine; see :func:`oneway_batch`).

        Same estimates, boundary verdicts and reasons as :meth:`scores` with
        ``verify=False``: the MixedLM check of the reference path is not part of the fast
        path, whatever ``verify`` says.
        """
        values = np.full(batch.y.shape, np.nan)
        ok = (batch.sizes.sum(axis=1) > batch.n_groups) & (batch.n_groups >= 2)
        flags = no_flags(ok.size)
        add_flags(flags, ~ok, flag(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE))
        admissible = ok.copy()
        reps = np.flatnonzero(ok)
        if reps.size:
            fit = oneway_batch(batch, reml=bool(self.params["reml"]), reps=reps)
            values[reps] = fit.modes
            admissible[reps] = ~fit.boundary
            rows = np.zeros(ok.size, dtype=bool)
            rows[reps[fit.boundary]] = True
            add_flags(flags, rows, flag(Reason.BOUNDARY))
        return BatchScores(values=values, converged=ok.copy(), admissible=admissible,
                           flags=flags)
