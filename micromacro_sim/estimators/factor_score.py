"""Factor scores from a one-factor CFA on the wide G x n matrix (members as indicators).

The CFA is the kernel :mod:`micromacro_sim.models.cfa` (lavaan's default identification,
unbounded ML, same verdicts per dataset and batched). On the fast engine the fits come
from the chunk's :class:`~micromacro_sim.models.cfa.CFAMemo` when the runner passed one
(the redraw gate has then already fitted the same datasets).

With unbalanced groups or absent members the positions with no member are missing cells:
the CFA is fitted by full-information ML (:mod:`micromacro_sim.models.cfa_fiml`) and each
group's score uses its observed members, as ``lavPredict`` does with missing data.

Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)``; ``missing = "fiml"`` when
members are absent.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import no_flags
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.padding import width_classes
from micromacro_sim.models.cfa import fit_cfa, fit_cfa_batch
from micromacro_sim.models.cfa_fiml import cfa_fiml_scores, fit_cfa_fiml_batch
from micromacro_sim.models.wide_layout import layout_problem

__all__ = ["FactorScore"]


def _check_layout(data: Dataset) -> None:
    """Raise NotApplicable where the member-position layout does not identify the CFA."""
    values, mask = data.wide_positions(0)
    problem = layout_problem(values, mask)
    if problem is not None:
        raise NotApplicable(*problem)


class FactorScore(TwoStepEstimator):
    """Factor scores of a free-loading one-factor CFA as the group score.

    Options
    -------
    scores : {"regression", "bartlett"}
        lavaan ``lavPredict`` method (default "regression", as Clark).

    One x (the members are the indicators of the wide matrix). Unbalanced groups and
    absent members: full-information ML on the member-position layout; not applicable
    with fewer than 3 positions (``too_few_members``) or where a position is observed in
    fewer than 2 groups or without variance (``sparse_position``: its loading and
    residual variance are not identified, and lavaan refuses such data). With group sizes
    drawn from a Poisson law the largest positions often are.

    Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
    ``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)`` (``missing = "fiml"`` with
    absent members).
    """

    name = "factor_score"
    description = "OLS on factor scores of a one-factor CFA (members as indicators)"
    options = {
        "scores": Option("regression", "str", "lavPredict method",
                         choices=("regression", "bartlett")),
    }
    max_x = 1
    batch_designs = ("balanced", "unbalanced")
    scale = "marker"  # the first loading is fixed at 1
    origin = "score_mean"  # lavPredict scores: the latent mean is 0
    uses_member_positions = False  # member positions from Batch.positional

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if not data.complete:
            _check_layout(data)

    def scores(self, data: Dataset) -> Scores:
        if not data.complete:
            _check_layout(data)  # also where the batch path leaves a replication to this
            b = self._fiml_scores(Batch.from_datasets([data]))
            return Scores(values=b.values[0], converged=bool(b.converged[0]),
                          admissible=bool(b.admissible[0]), flags=tuple(b.flags[0]))
        wide = data.wide(0)
        fit = fit_cfa(wide)
        extras = {
            "loadings": fit.loadings,
            "residual_variances": fit.residual_variances,
            "factor_variance": fit.factor_variance,
        }
        if not np.isfinite(fit.factor_variance):
            return Scores(
                values=np.full(data.n_groups, np.nan), converged=False, admissible=False,
                flags=fit.flags, extras=extras,
            )
        values = fit.scores(wide, method=self.params["scores"])
        return Scores(
            values=values, converged=fit.converged, admissible=fit.admissible,
            flags=fit.flags, extras=extras,
        )

    def _fiml_scores(self, batch: Batch) -> BatchScores:
        """FIML fits of the replications that are not complete, at their own widths (the
        complete ones, and those the model does not apply to, fall back)."""
        R, G = batch.y.shape
        x, mask, widths = batch.positional
        values = np.full((R, G), np.nan)
        conv, adm = np.ones(R, dtype=bool), np.zeros(R, dtype=bool)
        flags = no_flags(R)
        fallback = batch.complete.copy()
        for r in np.flatnonzero(~fallback):
            K = widths[r]
            fallback[r] = layout_problem(x[r, :, :K], mask[r, :, :K]) is not None
        todo = np.flatnonzero(~fallback)
        for K, idx in width_classes(widths[todo]):
            rows = todo[idx]
            xs, ms = x[rows, :, :K], mask[rows, :, :K]
            fits = (fit_cfa_fiml_batch(xs, ms) if batch.memo is None
                    else batch.memo.fit_fiml(xs, ms, fit_cfa_fiml_batch))
            values[rows] = cfa_fiml_scores(fits, xs, ms, method=self.params["scores"])
            conv[rows], adm[rows] = fits.converged, fits.admissible
            for i, r in enumerate(rows):
                flags[r] = tuple(fits.flags[i])
        return BatchScores(values, conv, adm, flags, fallback=fallback)

    def scores_batch(self, batch: Batch) -> BatchScores:
        if not (batch.balanced and not batch.member_ids):
            return self._fiml_scores(batch)
        R, _, n = batch.x.shape
        if n < 3:  # the reference path records its error for every replication
            return BatchScores.ok(np.full(batch.y.shape, np.nan), fallback=np.ones(R, bool))
        fits = fit_cfa_batch(batch.x, batch.memo)
        values = fits.scores(batch.x, method=self.params["scores"])
        return BatchScores(values, fits.converged.copy(), fits.admissible.copy(),
                           fits.flags.copy())
