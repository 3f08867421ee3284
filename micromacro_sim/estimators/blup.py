"""Mixed-model BLUPs: conditional modes of x ~ 1 + (1 | group), then OLS.

The one-way random-intercept model ``x_gi = mu + u_g + e_gi`` with ``u_g ~ N(0, tau2)``
and ``e_gi ~ N(0, sigma2)`` is fitted by REML (lme4's default, and the seed study's) or
ML. The group score is the conditional mode of the random intercept, as lme4's
``ranef()`` reports it: the deviation from the fixed intercept,

    u_g = tau2 n_g / (sigma2 + n_g tau2) * (xbar_g - mu).

Balanced data have closed forms from the one-way ANOVA (``SSA``, ``SSE``, ``N = G n``):

* REML: ``sigma2 = MSE = SSE / (G (n - 1))``, ``tau2 = (MSA - MSE) / n`` with
  ``MSA = SSA / (G - 1)``.
* ML: the likelihood splits into the within contrasts (``G (n - 1)`` df, variance
  ``sigma2``) and the group means (``G`` values, variance ``sigma2 + n tau2``), so
  ``sigma2 = MSE`` and ``tau2 = (SSA / G - MSE) / n``.
* When that ``tau2`` is negative the optimum is on the boundary: ``tau2 = 0`` and
  ``sigma2 = SST / (N - 1)`` (REML) or ``SST / N`` (ML), as lme4 reports it. Such a fit
  is flagged ``admissible=False`` ("zero variance (boundary)"); its scores are all 0.

Unbalanced data are fitted twice: by the exact optimum of the profile (restricted)
likelihood over the variance ratio ``gamma = tau2 / sigma2`` (a grid scan, then a root
of the derivative to machine precision; ``gamma = 0`` when the deviance rises from 0),
and by statsmodels ``MixedLM`` started at the ANOVA moment estimates (lbfgs polished by
bfgs, powell as fallback) as an independent check. MixedLM's own stopping rule leaves
relative errors up to ~1e-4 in flat likelihoods and it sometimes stops at a visibly
worse point, so the profile optimum is reported; ``extras["mixedlm"]`` says whether
MixedLM agreed ("agrees") or stopped lower ("worse optimum"). If MixedLM ever finds a
higher likelihood than the profile optimum, its fit is reported and the result is
flagged ("disagrees with profile likelihood").

Fast engine (:meth:`Blup.scores_batch`, all replications of a batch at once): balanced
designs use the closed forms above; unbalanced designs the same profile-likelihood optimum
as the reference path: the deviance on the same grid of ``gamma`` (from per-size sufficient
statistics), the same boundary rule, and a batched safeguarded Newton iteration on the
derivative inside the bracketing cell (replications without a bracket go through
:func:`oneway_profile` one by one). The MixedLM check (option ``verify``) is not part of the
fast path; it only runs on the reference engine.

Reference: R ``lme4::lmer(x ~ (1 | group), REML = TRUE/FALSE)``, ``ranef()``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..options import Option
from ..results import BatchScores, Scores
from ..status import Reason, add_flags, flag, no_flags
from .base import NotApplicable, TwoStepEstimator

__all__ = [
    "Blup",
    "OneWayFit",
    "conditional_modes",
    "oneway_batch",
    "oneway_closed_form",
    "oneway_mixedlm",
    "oneway_profile",
]

#: Agreement of MixedLM with the profile optimum, relative to the total variance
#: (MixedLM's own convergence leaves errors of this order in flat likelihoods).
AGREE_TOL = 1e-4
#: Values of ``gamma = tau2 / sigma2`` where the profile deviance is scanned.
PROFILE_GRID = np.concatenate([[0.0], np.logspace(-8, 6, 113)])
#: Newton iterations of the batched root search before a replication is handed to
#: :func:`oneway_profile` (Newton converges in well under 10 from inside the cell).
NEWTON_MAX_ITER = 60
#: Reason of a replication the one-way model cannot be fitted to.
NOT_APPLICABLE = "needs at least 2 groups and some groups with 2+ members"
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


# ---------------------------------------------------------------------- one-way pieces
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


def conditional_modes(
    xbar: np.ndarray, sizes: np.ndarray, mu: float, tau2: float, sigma2: float
) -> np.ndarray:
    """Conditional modes of the random intercepts (lme4 ``ranef``): deviations from mu."""
    n = np.asarray(sizes, dtype=float)
    return tau2 * n / (sigma2 + n * tau2) * (np.asarray(xbar, dtype=float) - mu)


# ---------------------------------------------------------------------- batch (fast engine)
@dataclass(frozen=True)
class OneWayBatch:
    """Estimates of the one-way model for many replications (arrays of shape (R,)).

    Attributes
    ----------
    mu, tau2, sigma2 : ndarray (R,)
    boundary : ndarray of bool (R,)
        ``tau2`` at 0.
    fallback : ndarray of bool (R,)
        Solved one by one by :func:`oneway_profile` (no bracket of the derivative's root,
        or the batched Newton iteration did not settle).
    """

    mu: np.ndarray
    tau2: np.ndarray
    sigma2: np.ndarray
    boundary: np.ndarray
    fallback: np.ndarray


def _batch_stats(batch: Batch, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group sizes (float), group means and SSE of the replications ``reps``."""
    x, mask = batch.x[reps], batch.mask[reps]
    xbar = batch.xbar[reps]
    resid = (x - xbar[:, :, None]) * mask
    return batch.sizes[reps].astype(float), xbar, np.einsum("rgi,rgi->r", resid, resid)


def _batch_gls(
    gamma: np.ndarray, n: np.ndarray, xbar: np.ndarray, sse: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """w, sum of w, GLS mean, deviations from it and Q at ``gamma`` (R,)."""
    w = n / (1.0 + n * gamma[:, None])
    sw = w.sum(axis=1)
    mu = np.einsum("rg,rg->r", w, xbar) / sw
    e = xbar - mu[:, None]
    q = sse + np.einsum("rg,rg,rg->r", w, e, e)
    return w, sw, mu, e, q


def _batch_dneg2ll(
    gamma: np.ndarray, n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool,
    *, second: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """First (and second) derivative of the profiled deviance in ``gamma``, per replication.

    With ``w_g = n_g / (1 + n_g gamma)`` (so ``w' = -w^2``), ``e = xbar - mu`` and the GLS
    mean profiled out: ``Q' = -sum w^2 e^2``, ``Q'' = 2 sum w^3 e^2 - 2 (sum w^2 e)^2 /
    sum w``, and ``d/dgamma sum log(1 + n gamma) = sum w``.
    """
    w, sw, _, e, q = _batch_gls(gamma, n, xbar, sse)
    c = n.sum(axis=1) - (1.0 if reml else 0.0)
    w2 = w * w
    dq = -np.einsum("rg,rg,rg->r", w2, e, e)
    dsw = -w2.sum(axis=1)
    d1 = c * dq / q + sw
    if reml:
        d1 = d1 + dsw / sw
    if not second:
        return d1, None
    w3 = w2 * w
    w2e = np.einsum("rg,rg->r", w2, e)
    d2q = 2.0 * np.einsum("rg,rg,rg->r", w3, e, e) - 2.0 * w2e**2 / sw
    d2 = c * (d2q / q - (dq / q) ** 2) + dsw
    if reml:
        d2 = d2 + 2.0 * w3.sum(axis=1) / sw - (dsw / sw) ** 2
    return d1, d2


def _grid_deviance(
    n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool
) -> np.ndarray:
    """Profiled deviance of every replication on :data:`PROFILE_GRID`, shape (R, T).

    Groups of equal size share ``w``, so the sums over groups are sums over the distinct
    sizes of per-size counts and sums of (centred) group means: a few matrix products.
    """
    R = n.shape[0]
    sizes, inv = np.unique(n, return_inverse=True)
    K = sizes.size
    idx = (np.arange(R)[:, None] * K + inv.reshape(n.shape)).ravel()
    xc = (xbar - xbar.mean(axis=1, keepdims=True)).ravel()
    count = np.bincount(idx, minlength=R * K).reshape(R, K)
    s1 = np.bincount(idx, weights=xc, minlength=R * K).reshape(R, K)
    s2 = np.bincount(idx, weights=xc * xc, minlength=R * K).reshape(R, K)
    wk = sizes[None, :] / (1.0 + sizes[None, :] * PROFILE_GRID[:, None])  # (T, K)
    sw = count @ wk.T
    q = sse[:, None] + s2 @ wk.T - (s1 @ wk.T) ** 2 / sw
    logdet = count @ np.log1p(sizes[None, :] * PROFILE_GRID[:, None]).T
    N = n.sum(axis=1)[:, None]
    if reml:
        return (N - 1) * (np.log(2 * np.pi * q / (N - 1)) + 1) + logdet + np.log(sw)
    return N * (np.log(2 * np.pi * q / N) + 1) + logdet


def oneway_batch(batch: Batch, *, reml: bool = True, reps: np.ndarray | None = None) -> OneWayBatch:
    """ML/REML estimates of the one-way model for the replications ``reps`` of a batch.

    Balanced batches use the closed forms of :func:`oneway_closed_form`; unbalanced ones
    the optimum of :func:`oneway_profile` (same grid, same boundary rule, the derivative's
    root in the bracketing cell by safeguarded Newton steps, to rounding error). No
    MixedLM check. The replications must have at least 2 groups and N > G.
    """
    reps = np.arange(batch.n_reps) if reps is None else np.asarray(reps)
    n, xbar, sse = _batch_stats(batch, reps)
    R, G = n.shape
    N = n.sum(axis=1)
    fallback = np.zeros(R, dtype=bool)
    if batch.balanced:
        size = n[:, 0]
        mu = xbar.mean(axis=1)
        ssa = size * np.einsum("rg,rg->r", xbar - mu[:, None], xbar - mu[:, None])
        mse = sse / (N - G)
        tau2 = (ssa / (G - 1 if reml else G) - mse) / size
        boundary = ~(tau2 > 0)
        sigma2 = np.where(boundary, (sse + ssa) / (N - 1 if reml else N), mse)
        tau2 = np.where(boundary, 0.0, tau2)
        return OneWayBatch(mu, tau2, sigma2, boundary, fallback)

    grid = PROFILE_GRID
    with np.errstate(divide="ignore", invalid="ignore"):
        i = np.argmin(_grid_deviance(n, xbar, sse, reml), axis=1)
        d0, _ = _batch_dneg2ll(np.zeros(R), n, xbar, sse, reml)
        boundary = (i <= 1) & (d0 >= 0)
        i = np.maximum(i, 1)
        lo, hi = grid[i - 1], grid[np.minimum(i + 1, grid.size - 1)]
        dlo, _ = _batch_dneg2ll(lo, n, xbar, sse, reml)
        dhi, _ = _batch_dneg2ll(hi, n, xbar, sse, reml)
    gamma = np.zeros(R)
    todo = np.flatnonzero(~boundary & (dlo < 0) & (dhi > 0))
    fallback[~boundary] = True
    lo, hi = lo[todo], hi[todo]
    g = np.where(lo > 0, np.sqrt(lo * hi), 0.5 * hi)
    for _ in range(NEWTON_MAX_ITER):
        if todo.size == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d1, d2 = _batch_dneg2ll(g, n[todo], xbar[todo], sse[todo], reml, second=True)
            lo = np.where(d1 < 0, g, lo)
            hi = np.where(d1 > 0, g, hi)
            newton = g - d1 / d2
        inside = (d2 > 0) & (newton > lo) & (newton < hi)
        new = np.where(inside, newton, 0.5 * (lo + hi))
        # A Newton step of 1e-12 relative leaves an error of order its square: done.
        done = (d1 == 0) | (np.abs(new - g) <= 1e-12 * g) | (hi - lo <= 4e-16 * hi)
        new = np.where(d1 == 0, g, new)
        gamma[todo[done]] = new[done]
        fallback[todo[done]] = False
        keep = ~done
        todo, g, lo, hi = todo[keep], new[keep], lo[keep], hi[keep]
    _, _, mu, _, q = _batch_gls(gamma, n, xbar, sse)
    sigma2 = q / (N - 1 if reml else N)
    tau2 = gamma * sigma2
    for r in np.flatnonzero(fallback):  # rare: no bracket (flat deviance) or no settling
        fit = oneway_profile(batch.datasets[reps[r]], reml=reml)
        mu[r], tau2[r], sigma2[r], boundary[r] = fit.mu, fit.tau2, fit.sigma2, fit.boundary
    return OneWayBatch(mu, tau2, sigma2, boundary, fallback)


def _agree(a: OneWayFit, b: OneWayFit) -> bool:
    if a.boundary and b.boundary:
        return True
    scale = b.tau2 + b.sigma2
    return (
        abs(a.tau2 - b.tau2) <= AGREE_TOL * scale
        and abs(a.sigma2 - b.sigma2) <= AGREE_TOL * scale
        and abs(a.mu - b.mu) <= AGREE_TOL * np.sqrt(scale)
    )


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
        try:
            fit = oneway_mixedlm(data, reml=reml)
        except ValueError:
            return exact, False, {**info, "mixedlm": "failed"}
        if fit.loglik > exact.loglik + LOGLIK_TOL * max(1.0, abs(exact.loglik)):
            # MixedLM found a better optimum: the profile search missed it.
            return fit, True, {**info, "engine": "MixedLM"}
        verdict = "agrees" if _agree(fit, exact) else "worse optimum"
        return exact, False, {**info, "mixedlm": verdict}

    def scores(self, data: Dataset) -> Scores:
        fit, disagrees, info = self.first_step(data)
        xbar = data.xbar[:, 0]
        u = conditional_modes(xbar, data.sizes, fit.mu, fit.tau2, fit.sigma2)
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
            n = batch.sizes[reps].astype(float)
            lam = fit.tau2[:, None] * n
            with np.errstate(divide="ignore", invalid="ignore"):
                values[reps] = lam / (fit.sigma2[:, None] + lam) * (
                    batch.xbar[reps] - fit.mu[:, None]
                )
            admissible[reps] = ~fit.boundary
            add_flags(flags, np.isin(np.arange(ok.size), reps[fit.boundary]),
                      flag(Reason.BOUNDARY))
        return BatchScores(values=values, converged=ok.copy(), admissible=admissible,
                           flags=flags)
