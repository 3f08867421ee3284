"""Numerical kernels: the models behind the methods, with no estimator and no registry.

Each family keeps its per-dataset reference and its batch version side by side, in one
module or in a named pair, so their equivalence is visible and tested in one place
(``tests/test_kernels_*.py``). Method files in :mod:`micromacro_sim.estimators` only wire
options and data to these kernels, and kernels report problems as
:class:`~micromacro_sim.core.status.Reason` codes or booleans, never as text.

Families
--------
:mod:`.ols`
    Second-step OLS with classical and HC0-HC3 SEs (statsmodels and batch), and the
    second-step checks.
:mod:`.oneway` / :mod:`.oneway_batch`
    One-way random effects: ANOVA, REML and ML, conditional modes (``blup``).
:mod:`.hetvar` / :mod:`.hetvar_batch`
    Random intercept with a residual variance per member position (``blup_hetvar``).
:mod:`.croon`
    Croon & van Veldhoven's adjusted group means (``croon``).
:mod:`.moments`, :mod:`.sam`, :mod:`.sam_info`
    ML moments of the equal-loading one-factor model, Z-conditional scores
    (``zcond_score``) and local SAM with two-step SEs (``sam``).
:mod:`.twolevel`, :mod:`.twolevel_batch`, :mod:`.twolevel_multi`, :mod:`.twolevel_lavaan`,
:mod:`.twolevel_solve`
    Two-level ML with a latent group mean (one and several x), joint-ML information, and
    lavaan's ``fixed.x = TRUE`` variant (``sem_2level``).
:mod:`.bayes_model`, :mod:`.bayes_gibbs`, :mod:`.mcmc_diagnostics`
    The latent covariate model's data, priors and batched Gibbs sampler (``bayes``), and
    split R-hat, bulk and tail ESS and MCSEs as Vehtari et al. (2021) define them.
:mod:`.linalg`
    Batched solves, positive definiteness, padding-free member sums, fixed-order quadratic
    forms.
"""
