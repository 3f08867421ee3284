"""The population model of ``advise``: the joint two-level ML fit of a user's data, mapped
onto the generator's parametrisation.

Why this model. The generator (docs/generator.md) draws (Z, xi) jointly normal, the members'
x as xi plus independent within-group deviations, and y from Z and xi with a normal error.
``sem_2level`` (lavaan ``level: 1 / x ~~ x / level: 2 / y ~ z + x``, ``fixed.x = FALSE``)
is the maximum-likelihood estimator of exactly that model: x's between part is a latent
variable, regressed jointly with y on Z. So its fit, with the sample moments of Z (their
ML estimates), is the population the simulation reproduces.

The mapping (:data:`MAPPING`) rescales x and Z so that the generator's conventions hold:
E[Z] = 0 and Var(Z_j) = 1 (the generator fixes both), E[xi] = 0 and Var(xi) = var_xi = 1
(its default; x is standardised by the SD of its latent group mean). y keeps its units.
Standard errors of every mapped value come from the delta method: the inverse observed
information of the fit (the conditional parameters psi) and the normal-theory covariance of
the Z moments (they separate from psi), through a central-difference Jacobian.

When the ML fit is flagged (a between variance on the zero bound, not converged, singular
information) the values come from ANOVA and sample moments instead (Croon & van
Veldhoven's moment estimates), the ICC interval from the F distribution (Searle) and the
b_xi interval from croon's HC2 SE; :attr:`Population.source` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.errors import DataError
from micromacro_sim.generate.dataset import Dataset

__all__ = ["MAPPING", "Population", "Value", "fit_population"]

#: Normal quantile of a two-sided 95% interval.
Z975 = 1.959963984540054

#: How each generator value is computed from the fit (shown in the report). tau, c, S and
#: sigma_w are the fit's Var(x^B | Z), regression of x^B on Z, covariance of Z (ML,
#: denominator G) and within variance of x; Var(xi) = V = tau + c'Sc.
MAPPING: tuple[tuple[str, str], ...] = (
    ("var_xi", "1 (x rescaled: x* = (x - E[xi]) / sqrt(V), V = Var(xi) = tau + c'Sc)"),
    ("icc", "V / (V + sigma_w), the ICC of x (unchanged by the rescaling)"),
    ("r_zxi", "Cov(Z_j, xi) / sqrt(S_jj V), with Cov(Z, xi) = S c"),
    ("r_zz", "mean correlation of the Z (the generator has one value for every pair)"),
    ("beta_xi", "b_xi sqrt(V): the slope per SD of xi"),
    ("beta_z", "b_z_j sqrt(S_jj): the slope per SD of Z_j (Z_j* = (Z_j - mean) / SD)"),
    ("beta0", "E[y] = b0 + b_xi E[xi] + b_z'E[Z]: the intercept at the means"),
    ("sigma2_eps", "sigma2_e, the residual variance of y (y keeps its units)"),
)


@dataclass(frozen=True)
class Value:
    """One generator value (or a raw-unit quantity) with its SE and 95% interval.

    ``key`` is the config field, ``field:z`` for a per-Z field (``beta_z:tenure``), or a
    raw-unit quantity (``raw_b_xi``, ``mean_x``, ...). SE and limits are NaN when unknown.
    """

    key: str
    value: float
    se: float = float("nan")
    lower: float = float("nan")
    upper: float = float("nan")


@dataclass(frozen=True)
class Population:
    """The population model fitted to a user's data, in the generator's parametrisation.

    Attributes
    ----------
    source : {"sem_2level", "moments"}
        The joint two-level ML fit, or the moment estimates it fell back to.
    values : tuple of Value
        Generator values (``icc``, ``beta_xi``, ``beta_z:Z``, ``beta0``, ``r_zxi:Z``,
        ``sigma2_eps``, ``r_zz`` with several Z) and raw-unit quantities.
    z_names : tuple of str
        The user's Z columns.
    notes : tuple of str
        What was done instead, when the ML fit was not used.
    """

    source: str
    values: tuple[Value, ...]
    z_names: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Value:
        for v in self.values:
            if v.key == key:
                return v
        raise KeyError(key)

    def keys(self) -> list[str]:
        """Keys of :attr:`values`, in order."""
        return [v.key for v in self.values]


# ---------------------------------------------------------------------------- the mapping
def _unvech(v: np.ndarray, q: int) -> np.ndarray:
    S = np.zeros((q, q))
    S[np.triu_indices(q)] = v
    return S + np.triu(S, 1).T


def _mapped(theta: np.ndarray, q: int, shift: np.ndarray) -> np.ndarray:
    """Generator values and raw quantities (:func:`_keys` order) from the parameters
    ``theta`` = (psi, mu_z, vech S) of a fit to data centred at ``shift`` (c_y, c_z, c_x)."""
    k = 1 + q
    sw, oyy, oyx, tau = theta[:4]
    By, Bx = theta[4:4 + k], theta[4 + k:4 + 2 * k]
    mu = theta[4 + 2 * k:4 + 2 * k + q]
    S = _unvech(theta[4 + 2 * k + q:], q)
    c = Bx[1:]
    b_xi = oyx / tau
    b_z = By[1:] - b_xi * c
    V = tau + c @ S @ c
    sdz = np.sqrt(np.diag(S))
    mean_x = shift[-1] + Bx[0] + c @ mu
    mean_z = shift[1:1 + q] + mu
    mean_y = shift[0] + By[0] + By[1:] @ mu
    corr = S / np.outer(sdz, sdz)
    r_zz = [float(np.mean(corr[np.triu_indices(q, 1)]))] if q > 1 else []
    return np.array([
        V / (V + sw), b_xi * np.sqrt(V), *(b_z * sdz), mean_y, *((S @ c) / (sdz * np.sqrt(V))),
        oyy - oyx**2 / tau, *r_zz,
        b_xi, *b_z, mean_y - b_xi * mean_x - b_z @ mean_z, mean_x, V, sw, *mean_z, *sdz,
    ])


def _keys(z_names: tuple[str, ...]) -> list[str]:
    zs = list(z_names)
    return ["icc", "beta_xi", *[f"beta_z:{z}" for z in zs], "beta0",
            *[f"r_zxi:{z}" for z in zs], "sigma2_eps", *(["r_zz"] if len(zs) > 1 else []),
            "raw_b_xi", *[f"raw_b_z:{z}" for z in zs], "raw_b0", "mean_x", "var_xi_x",
            "sigma2_w", *[f"mean_z:{z}" for z in zs], *[f"sd_z:{z}" for z in zs]]


def _jacobian(f: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
              steps: np.ndarray) -> np.ndarray:
    """Central-difference Jacobian of ``f`` at ``theta``."""
    cols = []
    for i, h in enumerate(steps):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        cols.append((f(up) - f(down)) / (2 * h))
    return np.column_stack(cols)


def _moments_cov(S: np.ndarray, G: int) -> np.ndarray:
    """Covariance of (mean, vech S) of normal Z: S / G and (S_ik S_jl + S_il S_jk) / G."""
    q = S.shape[0]
    pairs = list(zip(*np.triu_indices(q), strict=True))
    W = np.array([[S[i, k] * S[j, m] + S[i, m] * S[j, k] for k, m in pairs]
                  for i, j in pairs]) / G
    out = np.zeros((q + len(pairs), q + len(pairs)))
    out[:q, :q] = S / G
    out[q:, q:] = W
    return out


def _interval(key: str, value: float, se: float) -> tuple[float, float]:
    """95% Wald limits; the ICC's on the logit scale (so they stay inside (0, 1))."""
    if not np.isfinite(se):
        return float("nan"), float("nan")
    if key == "icc":
        logit = np.log(value / (1 - value))
        half = Z975 * se / (value * (1 - value))
        return float(1 / (1 + np.exp(-(logit - half)))), float(1 / (1 + np.exp(-(logit + half))))
    return value - Z975 * se, value + Z975 * se


# ---------------------------------------------------------------------------- ML path
def _ml(data: Dataset) -> tuple[Value, ...] | str:
    """The mapped values of the joint ML fit with delta-method SEs, or why not."""
    from micromacro_sim.models.twolevel import fit_two_level, prepare_data
    from micromacro_sim.models.twolevel_batch import batch_derivs, centre

    q = data.n_z
    centred, shift = centre(data)
    try:
        with np.errstate(all="ignore"):
            fit = fit_two_level(centred)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return f"the sem_2level fit failed ({exc})"
    if fit.reason is not None or not fit.converged:
        why = fit.reason.value if fit.reason is not None else "not_converged"
        return f"the sem_2level fit is flagged [{why}]"
    H = batch_derivs(prepare_data(centred).stats, fit.psi[None])[2][0]
    if not (np.all(np.isfinite(H)) and np.linalg.eigvalsh(H).min() > 0):
        return "the sem_2level information matrix is not positive definite"
    S = fit.s_zz
    theta = np.concatenate([fit.psi, np.zeros(q), S[np.triu_indices(q)]])
    cov = np.zeros((len(theta), len(theta)))
    P = len(fit.psi)
    cov[:P, :P] = np.linalg.inv(H)
    cov[P:, P:] = _moments_cov(S, data.n_groups)
    steps = 1e-5 * np.maximum(np.abs(theta), np.sqrt(np.diag(cov)))

    def f(t: np.ndarray) -> np.ndarray:
        return _mapped(t, q, shift)

    est = f(theta)
    J = _jacobian(f, theta, steps)
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", J, cov, J), 0.0))
    return _values(_keys(data.z_names), est, se)


def _values(keys: list[str], est: np.ndarray, se: np.ndarray) -> tuple[Value, ...]:
    out = []
    for key, v, s in zip(keys, est, se, strict=True):
        lo, hi = _interval(key, float(v), float(s))
        out.append(Value(key, float(v), float(s), lo, hi))
    return tuple(out)


# ---------------------------------------------------------------------------- moments path
def _moments(data: Dataset) -> tuple[Value, ...]:
    """Moment estimates (ANOVA, sample moments), the ICC's F interval and b_xi's croon SE."""
    from scipy import stats

    from micromacro_sim.estimators import get_estimator
    from micromacro_sim.models.reliability import anova

    a = anova(data)
    G, N, q = data.n_groups, data.n_persons, data.n_z
    V, sw, msa = float(a.s_xixi[0, 0]), float(a.mse[0, 0]), float(a.msa[0, 0])
    x = data.xbar[:, 0]
    u = np.column_stack([data.z, x, data.y])
    M = np.cov(u, rowvar=False, bias=True).reshape(q + 2, q + 2)
    Sigma = M[:q + 1, :q + 1].copy()
    Sigma[q, q] = V
    if V <= 0:
        raise DataError(f"{data.x_names[0]}: no variance between groups (ANOVA estimate "
                        f"{V:.4g}; ICC(1) <= 0): the group means carry no construct to model")
    if np.linalg.eigvalsh(Sigma).min() <= 0:
        raise DataError(f"{data.x_names[0]}: its between-group variance is no larger than "
                        "what Z explains of it (the covariance of (Z, xi) is not positive "
                        "definite): no population model to simulate")
    b = np.linalg.solve(Sigma, M[:q + 1, q + 1])
    s2e = float(M[q + 1, q + 1] - b @ Sigma @ b)
    S, sdz = Sigma[:q, :q], np.sqrt(np.diag(Sigma[:q, :q]))
    corr = S / np.outer(sdz, sdz)
    mean_x, mean_z, mean_y = float(a.mu_x[0]), data.z.mean(axis=0), float(data.y.mean())
    b_z, b_xi = b[:q], float(b[q])
    est = np.array([
        V / (V + sw), b_xi * np.sqrt(V), *(b_z * sdz), mean_y, *(Sigma[:q, q] / (sdz * np.sqrt(V))),
        max(s2e, 0.0), *([float(np.mean(corr[np.triu_indices(q, 1)]))] if q > 1 else []),
        b_xi, *b_z, mean_y - b_xi * mean_x - b_z @ mean_z, mean_x, V, sw, *mean_z, *sdz])
    vals = list(_values(_keys(data.z_names), est, np.full(len(est), np.nan)))
    F = msa / sw
    f_lo, f_hi = F / stats.f.ppf(0.975, G - 1, N - G), F * stats.f.ppf(0.975, N - G, G - 1)
    vals[0] = Value("icc", vals[0].value, float("nan"), max((f_lo - 1) / (f_lo + a.n0 - 1), 0.0),
                    min((f_hi - 1) / (f_hi + a.n0 - 1), 1.0))
    croon = get_estimator("croon").fit(data)
    se = float(croon.se("HC2")[-1]) * np.sqrt(V) if croon.ok else float("nan")
    vals[1] = _values(["beta_xi"], np.array([vals[1].value]), np.array([se]))[0]
    return tuple(vals)


def fit_population(data: Dataset) -> Population:
    """Fit the population model to a user's dataset (one x, at least one Z).

    Parameters
    ----------
    data : Dataset
        From :func:`~micromacro_sim.api.userdata.prepare`.

    Returns
    -------
    Population

    Raises
    ------
    DataError
        No between-group variance in x, or a between covariance of (Z, xi) that is not
        positive definite (neither the ML fit nor the moments give a population).
    """
    got = _ml(data)
    if not isinstance(got, str):
        return Population("sem_2level", got, tuple(data.z_names))
    note = (f"{got}: the population values are moment estimates (ANOVA for the ICC, sample "
            "moments of Z, xbar and y for the regression, as Croon & van Veldhoven's); the ICC "
            "interval is the F-distribution one, b_xi's from croon's HC2 SE")
    return Population("moments", _moments(data), tuple(data.z_names), (note,))
