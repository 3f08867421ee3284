"""One-way random-intercept model ``x_gi = mu + u_g + e_gi``: the per-dataset reference.

``u_g ~ N(0, tau2)``, ``e_gi ~ N(0, sigma2)``, fitted by REML (lme4's default) or ML.
Its batch partner is :mod:`.oneway_batch` (the same estimates for many replications at
once); their equivalence is tested in ``tests/test_kernels_mixed.py``.

Balanced data have closed forms from the one-way ANOVA (``SSA``, ``SSE``, ``N = G n``):

* REML: ``sigma2 = MSE = SSE / (G (n - 1))``, ``tau2 = (MSA - MSE) / n`` with
  ``MSA = SSA / (G - 1)``.
* ML: the likelihood splits into the within contrasts (``G (n - 1)`` df, variance
  ``sigma2``) and the group means (``G`` values, variance ``sigma2 + n tau2``), so
  ``sigma2 = MSE`` and ``tau2 = (SSA / G - MSE) / n``.
* When that ``tau2`` is negative the optimum is on the boundary: ``tau2 = 0`` and
  ``sigma2 = SST / (N - 1)`` (REML) or ``SST / N`` (ML), as lme4 reports it.

Unbalanced data: the exact optimum of the profile (restricted) likelihood over the variance
ratio ``gamma = tau2 / sigma2`` (:func:`oneway_profile`: a grid scan, then a root of the
derivative to machine precision; ``gamma = 0`` when the deviance rises from 0), and
statsmodels ``MixedLM`` started at the ANOVA moment estimates (:func:`oneway_mixedlm`) as an
independent check (:func:`mixedlm_check`).

Reference: R ``lme4::lmer(x ~ (1 | group), REML = TRUE/FALSE)``, ``ranef()``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.dataset import Dataset

__all__ = [
    "AGREE_TOL",
    "LOGLIK_TOL",
    "PROFILE_GRID",
    "MixedLMCheck",
    "OneWayFit",
    "conditional_modes",
    "mixedlm_check",
    "oneway_closed_form",
    "oneway_mixedlm",
    "oneway_profile",
]

#: Agreement of MixedLM with the profile optimum, relative to the total variance
#: (MixedLM's own convergence leaves errors of this order in flat likelihoods).
AGREE_TOL = 1e-4
#: Values of ``gamma = tau2 / sigma2`` where the profile deviance is scanned.
PROFILE_GRID = np.concatenate([[0.0], np.logspace(-8, 6, 113)])
#: A MixedLM log-likelihood higher than the profile optimum by more than this (relative)
#: means the profile search missed the optimum.
LOGLIK_TOL = 1e-10


@dataclass(frozen=True)
class OneWayFit:
    """Estimates of the one-way random-intercept model.

    Attributes
    ----------
    mu, tau2, sigma2 : float
        Fixed intercept (GLS), random-intercept variance, residual variance.
    loglik : float
        Log-likelihood (REML: restricted log-likelihood, lme4's convention).
    boundary : bool
        ``tau2`` is at its lower bound 0.
    converged : bool
        The optimizer reported convergence.
    """

    mu: float
    tau2: float
    sigma2: float
    loglik: float
    boundary: bool = False
    converged: bool = True


# ---------------------------------------------------------------------- profile pieces
def _group_stats(x: np.ndarray, data: Dataset) -> tuple[np.ndarray, np.ndarray, float]:
    """Group sizes (float), group means, and the within sum of squares SSE."""
    n = data.sizes.astype(float)
    xbar = np.add.reduceat(x, data.starts) / n
    sse = float(np.sum((x - np.repeat(xbar, data.sizes)) ** 2))
    return n, xbar, sse


def _profile_parts(
    gamma: float, n: np.ndarray, xbar: np.ndarray, sse: float
) -> tuple[float, float, float, float, float]:
    """GLS mean, Q(gamma), sum of w_g, and their gamma-derivatives (envelope for mu)."""
    w = n / (1.0 + n * gamma)
    sw = float(w.sum())
    mu = float(w @ xbar / sw)
    dev2 = (xbar - mu) ** 2
    q = sse + float(w @ dev2)
    dw = -(w**2)
    return mu, q, sw, float(dw @ dev2), float(dw.sum())


def _neg2ll(gamma: float, n: np.ndarray, xbar: np.ndarray, sse: float, reml: bool) -> float:
    """Profiled deviance (-2 log-likelihood) at variance ratio ``gamma``."""
    _, q, sw, _, _ = _profile_parts(gamma, n, xbar, sse)
    N = float(n.sum())
    logdet = float(np.sum(np.log1p(n * gamma)))
    if reml:
        return (N - 1) * (np.log(2 * np.pi * q / (N - 1)) + 1) + logdet + np.log(sw)
    return N * (np.log(2 * np.pi * q / N) + 1) + logdet


def _dneg2ll(gamma: float, n: np.ndarray, xbar: np.ndarray, sse: float, reml: bool) -> float:
    """Derivative of :func:`_neg2ll` in ``gamma``."""
    _, q, sw, dq, dsw = _profile_parts(gamma, n, xbar, sse)
    N = float(n.sum())
    d = float(np.sum(n / (1.0 + n * gamma)))
    if reml:
        return (N - 1) * dq / q + d + dsw / sw
    return N * dq / q + d


def _loglik(
    mu: float, tau2: float, sigma2: float, n: np.ndarray, xbar: np.ndarray, sse: float,
    reml: bool,
) -> float:
    """Log-likelihood (or restricted) at arbitrary parameters (mu ignored under REML)."""
    N = float(n.sum())
    lam = sigma2 + n * tau2
    ll = -0.5 * (
        N * np.log(2 * np.pi)
        + (N - n.size) * np.log(sigma2)
        + np.sum(np.log(lam))
        + sse / sigma2
        + np.sum(n * (xbar - mu) ** 2 / lam)
    )
    if reml:
        # Restricted likelihood: evaluate at the GLS mean, add -1/2 log|X'V^-1 X| + 1/2 log 2pi.
        w = n / lam
        mu_gls = float(w @ xbar / w.sum())
        ll += 0.5 * float(np.sum(w * ((xbar - mu) ** 2 - (xbar - mu_gls) ** 2)))
        ll += -0.5 * np.log(w.sum()) + 0.5 * np.log(2 * np.pi)
    return float(ll)


def _from_gamma(
    gamma: float, n: np.ndarray, xbar: np.ndarray, sse: float, reml: bool, boundary: bool
) -> OneWayFit:
    mu, q, _, _, _ = _profile_parts(gamma, n, xbar, sse)
    N = float(n.sum())
    sigma2 = q / (N - 1 if reml else N)
    return OneWayFit(
        mu=mu, tau2=gamma * sigma2, sigma2=sigma2,
        loglik=float(-0.5 * _neg2ll(gamma, n, xbar, sse, reml)), boundary=boundary,
    )


# ---------------------------------------------------------------------- solvers
def oneway_closed_form(data: Dataset, *, reml: bool = True, j: int = 0) -> OneWayFit:
    """Closed-form ML/REML estimates for balanced data (see the module docstring).

    Raises
    ------
    ValueError
        When the data are unbalanced or have fewer than 2 members per group.
    """
    if not data.balanced:
        raise ValueError("the closed form needs balanced groups")
    G, size = data.n_groups, int(data.sizes[0])
    if size < 2 or G < 2:
        raise ValueError("the closed form needs at least 2 groups of at least 2 members")
    x = data.x[:, j]
    n, xbar, sse = _group_stats(x, data)
    N = G * size
    mu = float(xbar.mean())
    ssa = size * float(np.sum((xbar - mu) ** 2))
    mse = sse / (N - G)
    between = ssa / (G - 1 if reml else G)
    tau2 = (between - mse) / size
    if tau2 > 0:
        sigma2 = mse
        boundary = False
    else:
        tau2 = 0.0
        sigma2 = (sse + ssa) / (N - 1 if reml else N)
        boundary = True
    ll = _loglik(mu, tau2, sigma2, n, xbar, sse, reml)
    return OneWayFit(mu=mu, tau2=tau2, sigma2=sigma2, loglik=ll, boundary=boundary)


def oneway_profile(data: Dataset, *, reml: bool = True, j: int = 0) -> OneWayFit:
    """Exact ML/REML optimum from the profile likelihood in ``gamma = tau2 / sigma2``.

    The deviance is scanned on a log grid of ``gamma``; the optimum is the root of its
    derivative in the bracketing cell (Brent, ``xtol`` 1e-15 relative), or ``gamma = 0``
    when the deviance increases from 0.
    """
    x = data.x[:, j]
    n, xbar, sse = _group_stats(x, data)
    if n.size < 2 or n.sum() <= n.size:
        raise ValueError("the one-way model needs at least 2 groups and N > G")

    def dev(g: float) -> float:
        return _neg2ll(g, n, xbar, sse, reml)

    def ddev(g: float) -> float:
        return _dneg2ll(g, n, xbar, sse, reml)

    from scipy import optimize  # lazy: only the unbalanced reference path needs it

    grid = PROFILE_GRID
    vals = np.array([dev(g) for g in grid])
    i = int(np.argmin(vals))
    if i == 0:
        if ddev(0.0) >= 0:
            return _from_gamma(0.0, n, xbar, sse, reml, boundary=True)
        i = 1
    lo, hi = grid[i - 1], grid[min(i + 1, grid.size - 1)]
    dlo, dhi = ddev(lo), ddev(hi)
    if lo == 0.0 and dlo >= 0:
        return _from_gamma(0.0, n, xbar, sse, reml, boundary=True)
    if dlo < 0 < dhi:
        gamma = optimize.brentq(ddev, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)
    else:  # not bracketed (flat deviance): fall back to bounded minimization
        res = optimize.minimize_scalar(
            dev, bounds=(lo, hi), method="bounded", options={"xatol": 1e-14 * max(hi, 1e-8)}
        )
        gamma = float(res.x)
    return _from_gamma(float(gamma), n, xbar, sse, reml, boundary=False)


def oneway_mixedlm(
    data: Dataset, *, reml: bool = True, j: int = 0, start: OneWayFit | None = None
) -> OneWayFit:
    """statsmodels ``MixedLM`` fit, started at ``start`` (default: ANOVA moments).

    Tries lbfgs, polished by bfgs with a tight gradient tolerance, then powell when
    lbfgs does not report convergence.
    """
    import statsmodels.regression.mixed_linear_model as mlm

    x = data.x[:, j]
    n, xbar, sse = _group_stats(x, data)
    if start is None:
        start = _moment_start(n, xbar, sse)
    gamma0 = max(start.tau2 / start.sigma2, 1e-3)
    exog = np.ones((x.size, 1))
    model = mlm.MixedLM(x, exog, groups=data.group, exog_re=exog)
    sp = mlm.MixedLMParams.from_components(
        fe_params=np.array([start.mu]), cov_re=np.array([[gamma0]])
    )
    res = _mixedlm_try(model, sp, reml, "lbfgs")
    if res is None or not res.converged:
        res = _mixedlm_try(model, sp, reml, "powell")
    else:
        # lbfgs stops on a relative change of the deviance, which leaves tau2 off by up
        # to ~1e-4 in flat likelihoods: polish with bfgs and a tight gradient tolerance.
        polish = _mixedlm_try(
            model,
            mlm.MixedLMParams.from_components(
                fe_params=np.asarray(res.fe_params), cov_re=np.asarray(res.cov_re_unscaled)
            ),
            reml,
            "bfgs",
            gtol=1e-10,
        )
        if polish is not None and polish.converged and polish.llf >= res.llf:
            res = polish
    if res is None:
        raise ValueError("MixedLM failed with lbfgs and powell")
    mu, sigma2 = float(res.fe_params[0]), float(res.scale)
    tau2 = max(float(np.asarray(res.cov_re)[0, 0]), 0.0)
    ll = _loglik(mu, tau2, sigma2, n, xbar, sse, reml)
    return OneWayFit(
        mu=mu, tau2=tau2, sigma2=sigma2, loglik=ll,
        boundary=tau2 <= 1e-8 * sigma2, converged=bool(res.converged),
    )


def _mixedlm_try(model, start, reml: bool, method: str, **kwargs):
    """One MixedLM fit, or None when it raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return model.fit(start_params=start, reml=reml, method=[method], **kwargs)
        except (np.linalg.LinAlgError, ValueError):
            return None


def _moment_start(n: np.ndarray, xbar: np.ndarray, sse: float) -> OneWayFit:
    """ANOVA moment estimates (n0-weighted), tau2 floored at a small positive value."""
    G, N = n.size, float(n.sum())
    mu = float(n @ xbar / N)
    mse = sse / (N - G)
    msa = float(n @ (xbar - mu) ** 2) / (G - 1)
    n0 = (N - float(np.sum(n**2)) / N) / (G - 1)
    tau2 = max((msa - mse) / n0, 1e-3 * mse)
    return OneWayFit(mu=mu, tau2=tau2, sigma2=mse, loglik=np.nan)


# ---------------------------------------------------------------------- check and modes
@dataclass(frozen=True)
class MixedLMCheck:
    """Verdict of the MixedLM check of a profile optimum.

    Attributes
    ----------
    fit : OneWayFit or None
        MixedLM's fit (None when it failed).
    failed : bool
        MixedLM raised with every optimizer.
    better : bool
        MixedLM found a higher likelihood than the profile optimum: the profile search
        missed the optimum.
    agrees : bool
        MixedLM's estimates equal the profile optimum within :data:`AGREE_TOL`.
    """

    fit: OneWayFit | None
    failed: bool
    better: bool
    agrees: bool


def mixedlm_check(data: Dataset, exact: OneWayFit, *, reml: bool = True) -> MixedLMCheck:
    """Fit MixedLM and compare it with the profile optimum ``exact``."""
    try:
        fit = oneway_mixedlm(data, reml=reml)
    except ValueError:
        return MixedLMCheck(fit=None, failed=True, better=False, agrees=False)
    better = fit.loglik > exact.loglik + LOGLIK_TOL * max(1.0, abs(exact.loglik))
    return MixedLMCheck(fit=fit, failed=False, better=bool(better), agrees=_agree(fit, exact))


def _agree(a: OneWayFit, b: OneWayFit) -> bool:
    if a.boundary and b.boundary:
        return True
    scale = b.tau2 + b.sigma2
    return bool(
        abs(a.tau2 - b.tau2) <= AGREE_TOL * scale
        and abs(a.sigma2 - b.sigma2) <= AGREE_TOL * scale
        and abs(a.mu - b.mu) <= AGREE_TOL * np.sqrt(scale)
    )


def conditional_modes(
    xbar: np.ndarray, sizes: np.ndarray, mu: float, tau2: float, sigma2: float
) -> np.ndarray:
    """Conditional modes of the random intercepts (lme4 ``ranef``): deviations from mu."""
    n = np.asarray(sizes, dtype=float)
    return tau2 * n / (sigma2 + n * tau2) * (np.asarray(xbar, dtype=float) - mu)
