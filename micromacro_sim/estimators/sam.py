"""Local structural-after-measurement (SAM): factor-score regression with Croon's correction.

Devlieger, Mayer & Rosseel (2016) correct the moments of factor scores for their
measurement error (Croon's method); Rosseel & Loh's local SAM, lavaan's ``sam()``, is
the modern form of the same idea. lavaan 0.6.14 does not export ``fsr()`` (it is
internal only), so this method reproduces ``lavaan::sam(model, sam.method = "local")``
(default options) and is named ``sam``. The numerical work is
:mod:`micromacro_sim.models.sam`.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.sam import BOUNDS, sam_fit, sam_fit_batch, sam_reason, sam_reasons_batch
from micromacro_sim.models.sam_fiml import INFORMATION, sam_fit_missing

__all__ = ["LocalSAM", "sam_fit"]

_EXTRAS = ("veta", "lambda", "adjusted", "v", "psi_mm", "psi_y", "bounded", "v_unbounded",
           "psi_mm_unbounded")


class LocalSAM(Estimator):
    """Local SAM / Croon-corrected factor-score regression (balanced data, one x).

    Measurement model: one factor with the members as indicators, loadings fixed to 1
    and one residual variance for all members (the CV/SEM measurement model), fitted by
    ML; it has a closed form (residual variance = within variance of member-position-
    centred x over G(n - 1)). lavaan's own default (``lv =~ x1 + ... + xn``: first
    loading 1, other loadings and residual variances free) is *not* used; the reference
    is ``lavaan::sam('lv =~ 1*x1 + ... ; x1 ~~ v*x1 ; ... ; y ~ z1 + ... + lv ;
    lv ~~ z1 ; ... ; z1 ~~ z2 ...', sam.method = "local")`` with all other options at
    their defaults (write the Z covariances out: lavaan otherwise fixes them at 0, which
    leaves the estimates unchanged but not the SEs).

    Option ``bounds``: ``"standard"`` (default, as lavaan's ``sam()``) fits the
    measurement step with lavaan's bounds, 0 <= v <= Var_ML(x1) and 0 <= psi <=
    max_i Var_ML(x_i) -- binding in low-ICC data, and dependent on which member is
    column 1; ``"none"`` uses the unbounded ML closed form (then the point estimates
    equal the full ML SEM's). ``extras["bounded"]`` records whether a bound was active.

    Steps (lavaan 0.6.14): mapping matrix M = (L' T^-1 L)^-1 L' T^-1 (Bartlett), which
    for this block is 1'/n; Var(eta) = M S M' - M Theta M' (Croon's correction:
    Var(xbar) - v/n, covariances with y and Z uncorrected); if lavaan's smallest-root
    statistic lambda is below 1 + 1/(G - 1), Var(eta) = M S M' - (lambda - 1/(G - 1))
    M Theta M' (``veta.force.pd``); then y ~ Z + lv from the corrected moments.

    Standard errors: lavaan's default ``se = "twostep"``, which adds the step-1
    (measurement) uncertainty to the structural information: V = I22^-1 / G +
    I22^-1 I21 Var(v_hat) I12 I22^-1 (expected information). They are normal-based
    (``df_resid=None``) and reported under ``"classical"``; no HC types. lavaan
    0.6.14 returns no intercept for local SAM; ours is mean(y) - b' mean(lv, Z) with
    a delta-method SE (means are independent of the covariance estimates under
    normality), not checked against lavaan.

    Inadmissible: ML factor variance <= 0 ("negative variance") or lambda <= 1
    (corrected Var(eta) not positive definite, "not positive definite"); estimates are
    still reported (lavaan's repaired Var(eta)) but flagged.

    Fast engine (balanced): :func:`~micromacro_sim.models.sam.sam_fit_batch`, all
    replications at once; the rare replications its closed forms do not cover (the
    factor-variance bound reachable, a singular matrix) run the reference fit.

    Unbalanced groups and absent members (:func:`~micromacro_sim.models.sam_fiml.
    sam_fit_missing`, lavaan's ``sam(..., missing = "ml")``): the positions with no member
    are missing cells; the measurement step is fitted by full-information ML (bounds from
    the EM moments of the member positions), the structural step uses the saturated
    moments of (x, y, Z) estimated by EM as lavaan's h1 model, and M = 1'/K. Option
    ``information``: the information of the two-step SEs there. ``"expected"`` (default)
    reproduces this method's complete-data SEs on complete data and stays finite where
    lavaan's default, ``"observed"`` (also available), returns NaN (at G = 30 and ICC .1,
    2 of 40 datasets; at G = 60 and ICC .02, 15 of 40). Not applicable (reason
    ``sparse_position``) where a member position is observed in fewer than 2 groups, as
    lavaan refuses such data: with group sizes drawn from a Poisson law the largest
    positions often are; flagged ``sample_cov_not_positive_definite`` when the saturated
    moments are not estimable (two positions never observed together, or an eigenvalue
    of the EM covariance below 1e-5, lavaan's warnings), ``not_converged`` at the EM's
    iteration limit (500, lavaan's), ``non_finite`` without finite SEs. One dataset at a
    time (about 35 ms at G = 100, K = 10).
    """

    name = "sam"
    description = "local SAM (Croon-corrected factor-score regression), two-step SEs"
    options = MappingProxyType({
        "bounds": Option("standard", "str", "measurement-step bounds as lavaan's sam() "
                         "('standard') or the unbounded ML closed form ('none')",
                         choices=BOUNDS),
        "information": Option("expected", "str", "information of the two-step SEs with "
                              "absent members or unequal groups (lavaan's missing = 'ml' "
                              "default is 'observed')", choices=INFORMATION),
    })
    max_x = 1
    two_step = False
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # member positions from Dataset.wide_positions

    def _fit_batch(self, batch: Batch) -> BatchResult:
        if not (batch.balanced and not batch.member_ids):  # FIML: one dataset at a time
            R, k = batch.n_reps, len(batch.terms)
            nan = np.full((R, k), np.nan)
            return self.one_step_result(batch, nan, nan.copy(), np.ones(R, bool),
                                        np.zeros(R, bool), no_flags(R), np.ones(R, bool))
        out, fallback = sam_fit_batch(batch, bounds=self.params["bounds"])
        R = out["params"].shape[0]
        negative, not_pd = sam_reasons_batch(out)
        flags = no_flags(R)
        add_flags(flags, negative, flag(Reason.NEGATIVE_VARIANCE))
        add_flags(flags, not_pd, flag(Reason.NOT_POSITIVE_DEFINITE))
        return self.one_step_result(batch, out["params"], out["se"], np.ones(R, bool),
                                    ~negative & ~not_pd, flags, fallback)

    def _fit(self, data: Dataset) -> FitResult:
        if not data.complete:
            return self._fit_missing(data)
        r = sam_fit(data, bounds=self.params["bounds"])
        reason = sam_reason(r["psi_mm_unbounded"], r["psi_mm"], r["lambda"])
        flags = () if reason is None else (flag(reason),)
        return FitResult(
            method=self.label, terms=data.terms, params=r["params"],
            bse={"classical": r["se"]}, df_resid=None, converged=True,
            admissible=not flags, flags=flags, two_step=False,
            extras={k: r[k] for k in _EXTRAS},
        )

    def _fit_missing(self, data: Dataset) -> FitResult:
        """Unbalanced groups or absent members: lavaan's ``sam(..., missing = "ml")``."""
        x, mask = data.wide_positions(0)
        if x.shape[1] < 2:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, "needs at least 2 member positions")
        r = sam_fit_missing(np.where(mask, x, 0.0), mask, data.y, data.z,
                            bounds=self.params["bounds"],
                            information=self.params["information"])
        if not r["estimable"]:
            raise NotApplicable(r["reason"], r["message"])
        flags = tuple(flag(reason) for reason in r["reasons"])
        se = np.asarray(r["se"], dtype=float)
        bse = {"classical": se} if not flags and np.all(np.isfinite(se)) else {}
        return FitResult(
            method=self.label, terms=data.terms, params=r["params"], bse=bse,
            df_resid=None, converged=Reason.NOT_CONVERGED not in r["reasons"],
            admissible=not flags, flags=flags, two_step=False,
            extras={k: r[k] for k in _EXTRAS if k in r},
        )
