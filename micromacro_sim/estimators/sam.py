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

from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.sam import BOUNDS, sam_fit, sam_fit_batch, sam_reason, sam_reasons_batch

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
    """

    name = "sam"
    description = "local SAM (Croon-corrected factor-score regression), two-step SEs"
    options = MappingProxyType({
        "bounds": Option("standard", "str", "measurement-step bounds as lavaan's sam() "
                         "('standard') or the unbounded ML closed form ('none')",
                         choices=BOUNDS),
    })
    needs_balanced = True
    max_x = 1
    two_step = False
    batch_designs = ("balanced",)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        out, fallback = sam_fit_batch(batch, bounds=self.params["bounds"])
        R = out["params"].shape[0]
        negative, not_pd = sam_reasons_batch(out)
        flags = no_flags(R)
        add_flags(flags, negative, flag(Reason.NEGATIVE_VARIANCE))
        add_flags(flags, not_pd, flag(Reason.NOT_POSITIVE_DEFINITE))
        return self.one_step_result(batch, out["params"], out["se"], np.ones(R, bool),
                                    ~negative & ~not_pd, flags, fallback)

    def _fit(self, data: Dataset) -> FitResult:
        r = sam_fit(data, bounds=self.params["bounds"])
        reason = sam_reason(r["psi_mm_unbounded"], r["psi_mm"], r["lambda"])
        flags = () if reason is None else (flag(reason),)
        return FitResult(
            method=self.label, terms=data.terms, params=r["params"],
            bse={"classical": r["se"]}, df_resid=None, converged=True,
            admissible=not flags, flags=flags, two_step=False,
            extras={k: r[k] for k in _EXTRAS},
        )
