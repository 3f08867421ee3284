"""What each method estimates in a scenario: every term on three scales and three origins
(docs/estimands.md).

The generator's coefficients are on the **latent** scale: ``y = b0 + b_z'Z + b_xi'xi + e``
with E[Z] = E[xi] = 0 (the oracle ``true`` estimates them). A method that works from x
estimates the slope per unit of the group's true mean of x, ``T`` (scale **x**): the
population regression of y on (1, Z, T). For continuous members ``T = lbar xi`` (``lbar``
the design-weighted mean loading), so its slope is ``b_xi / lbar``: ``b_xi`` itself for
parallel members. For ordinal members ``T`` is a nonlinear function of xi (the expected
category) and the slope is per category step. Scale **marker** uses the first member
position's true score instead (a CFA whose first loading is fixed at 1).

Intercepts have an origin: **x_zero** (where the score is 0 on the scale of x:
``E[y] - a_z'E[Z] - a_T'E[T]``), **latent_mean** (a latent variable with mean 0) or
**score_mean** (scores that are deviations from their mean); the last two are
``E[y] - a_z'E[Z] = b0``. For continuous members E[T] = 0, so every origin gives b0.

Continuous members have closed forms (``source = "closed form"``); ordinal ones are
computed by quadrature over xi's normal (:mod:`micromacro_sim.design.population`,
``source = "quadrature"``), deterministic and accurate to about 1e-10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.fleishman import fleishman
from micromacro_sim.design.measurement import logistic, mar_intercept
from micromacro_sim.design.population import GRID_NODES_2D, MemberModel, grid, normal_correlation

__all__ = [
    "ORIGINS", "SCALES", "Estimands", "check_estimand", "default_measurement", "estimands",
    "missing_probability", "reliability", "true_value", "unadjusted_limit",
]

#: Scales of a slope.
SCALES = ("latent", "x", "marker")
#: Origins of an intercept.
ORIGINS = ("x_zero", "latent_mean", "score_mean")


def check_estimand(scale: str, origin: str, where: str) -> None:
    """Raise a one-line ConfigError unless ``scale`` and ``origin`` are known."""
    if scale not in SCALES:
        raise ConfigError(f"{where}: scale {scale!r} is not one of {', '.join(SCALES)}")
    if origin not in ORIGINS:
        raise ConfigError(f"{where}: origin {origin!r} is not one of {', '.join(ORIGINS)}")


@dataclass(frozen=True)
class Estimands:
    """A scenario's estimands.

    Attributes
    ----------
    terms : tuple of str
    coefficients : dict
        Scale -> the regression coefficients of (Z, score), in term order without the
        intercept.
    score_mean : dict
        Scale -> E[score] per construct (0 on the latent scale).
    beta0 : float
        E[y] - b_z'E[Z], the intercept at a score of mean 0.
    source : str
        How the x and marker scales' values were obtained: ``closed form`` or
        ``quadrature`` (the latent scale's are the ``coefficients``).
    """

    terms: tuple[str, ...]
    coefficients: dict[str, np.ndarray]
    score_mean: dict[str, np.ndarray]
    beta0: float
    source: str

    def value(self, term: str, scale: str = "latent", origin: str = "latent_mean") -> float:
        """The estimand of ``term`` for a method of this scale and origin."""
        check_estimand(scale, origin, term)
        coef = self.coefficients[scale]
        if term != "intercept":
            return float(coef[self.terms.index(term) - 1])
        if origin != "x_zero":
            return self.beta0
        p = self.score_mean[scale].size
        return float(self.beta0 - coef[len(coef) - p:] @ self.score_mean[scale])

    def source_of(self, scale: str) -> str:
        """How the estimands of ``scale`` were obtained: the latent scale's are the
        generator's coefficients."""
        return "coefficients" if scale == "latent" else self.source

    def rows(self) -> list[dict[str, object]]:
        """One row per term, scale and origin (origins for the intercept only)."""
        out: list[dict[str, object]] = []
        for term in self.terms:
            for scale in SCALES:
                origins = ORIGINS if term == "intercept" else ("",)
                for origin in origins:
                    out.append({"term": term, "scale": scale, "origin": origin,
                                "theta": self.value(term, scale, origin or "latent_mean"),
                                "source": self.source_of(scale)})
        return out


def true_value(sc, term: str, estimand: tuple[str, str], *,  # noqa: ANN001
               own_generator: bool = False) -> float:
    """The value a method with ``estimand`` (scale, origin) is scored against in ``sc``;
    with a generator of the user's own, the fields' (latent) value."""
    if own_generator:
        return float(sc.true_params[term])
    return estimands(sc).value(term, *estimand)


def default_measurement(sc) -> bool:  # noqa: ANN001
    """Continuous parallel members with loading 1 and no member missing."""
    return (sc.categories is None and set(sc.loadings) == {1.0}
            and set(sc.member_variances) == {1.0} and not sc.absent_members)


@lru_cache(maxsize=256)
def estimands(sc) -> Estimands:  # noqa: ANN001 - a Scenario
    """The :class:`Estimands` of scenario ``sc`` (cached)."""
    q, p = sc.n_z, sc.n_x
    b = np.array([*sc.beta_z, *sc.beta_xi], dtype=float)
    latent = b.copy()
    mm = MemberModel(sc)
    zero = np.zeros(p)
    if mm.linear:
        load, _, cls = mm.classes
        l0 = float(load[cls[0]])
        lbar = l0 if len(set(load)) == 1 else float(mm.weights @ load)
        coef = {"latent": latent, "x": _rescaled(b, q, lbar), "marker": _rescaled(b, q, l0)}
        return Estimands(sc.terms, coef, {"latent": zero, "x": zero, "marker": zero},
                         float(sc.beta0), "closed form")
    coef, means = {"latent": latent}, {"latent": zero}
    for scale, which in (("x", 0), ("marker", 1)):
        cov, cross, mean = _score_moments(sc, mm, which)
        coef[scale] = np.linalg.solve(cov, cross @ b)
        means[scale] = np.full(p, mean)
    return Estimands(sc.terms, coef, means, float(sc.beta0), "quadrature")


def _rescaled(b: np.ndarray, q: int, scale: float) -> np.ndarray:
    out = b.copy()
    out[q:] = b[q:] / scale
    return out


def _score_moments(sc, mm: MemberModel, which: int, *, noise: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, float]:  # noqa: ANN001
    """Covariance of X = (Z, score_1..score_p), Cov(X, (Z, xi)) and E[score].

    ``which`` 0: the true score T; 1: the marker's. ``noise``: the observed group means
    instead of T (Var(T) plus :meth:`MemberModel.noise`; cross-construct noise is 0 for
    parallel members, the only case with several constructs this is called for).
    """
    q, p = sc.n_z, sc.n_x
    R = normal_correlation(sc)
    cov_zx = np.asarray(sc.covariance, dtype=float)
    v, w = grid()
    s = mm.score(v)[which]
    u = mm.xi(v)
    mean = float(w @ s)
    var_s = float(w @ (s - mean) ** 2)
    stein = float(w @ (v * s))  # Cov(Z_j, s(V)) = R[j, V] E[V s(V)]
    cov_su = float(w @ (s * u))
    cov = np.zeros((q + p, q + p))
    cross = np.zeros((q + p, q + p))
    cov[:q, :q] = cov_zx[:q, :q]
    cross[:q, :] = cov_zx[:q, :]
    for k in range(p):
        col = q + k
        cov[:q, col] = cov[col, :q] = R[:q, col] * stein
        cross[col, :q] = R[:q, col] * stein
        for j in range(p):
            if j == k:
                cov[col, col] = var_s + (_noise(sc, mm, k) if noise else 0.0)
                cross[col, col] = cov_su
            else:
                ss, su = _pair(mm, which, float(R[col, q + j]), mean)
                cross[col, q + j] = su
                if j > k:
                    cov[col, q + j] = cov[q + j, col] = ss
    return cov, cross, mean


def _pair(mm: MemberModel, which: int, rho: float, mean: float) -> tuple[float, float]:
    """Cov(s(V_1), s(V_2)) and Cov(s(V_1), xi(V_2)) for normals with correlation rho."""
    v1, w1 = grid(GRID_NODES_2D)
    e, we = grid(GRID_NODES_2D)
    v2 = rho * v1[:, None] + math.sqrt(max(1.0 - rho * rho, 0.0)) * e[None, :]
    wt = w1[:, None] * we[None, :]
    s1 = mm.score(v1)[which][:, None] - mean
    s2 = mm.score(v2)[which] - mean
    return float((wt * s1 * s2).sum()), float((wt * s1 * mm.xi(v2)).sum())


def missing_probability(sc, w: np.ndarray) -> np.ndarray | float:  # noqa: ANN001
    """Chance that a member is missing, as a function of the MAR variable's normal."""
    if sc.missing_mar is None:
        return float(sc.missing_mcar)
    poly = (fleishman(sc.xi_skew, sc.xi_kurtosis) if sc.missing_mar.on == "xi"
            else fleishman(0.0, 0.0))
    a = mar_intercept(sc.missing_mar.rate, sc.missing_mar.strength, poly)
    mar = logistic(a + sc.missing_mar.strength * poly.apply(w))
    return 1 - (1 - sc.missing_mcar) * (1 - mar)


def _noise(sc, mm: MemberModel, k: int) -> float:  # noqa: ANN001
    """E[(xbar_k - T_k)^2]: the observed mean's error variance, construct k."""
    if sc.missing_mar is None:
        v, w = grid()
        return float(w @ mm.noise(v, float(sc.missing_mcar)))
    q = sc.n_z
    R = normal_correlation(sc)
    rho = float(R[q + k, q if sc.missing_mar.on == "xi" else 0])
    if rho >= 1 - 1e-12:  # the selection variable is this construct's own xi
        v, w = grid()
        return float(w @ mm.noise(v, missing_probability(sc, v)))
    v1, w1 = grid(GRID_NODES_2D)
    e, we = grid(GRID_NODES_2D)
    sel = rho * v1[:, None] + math.sqrt(max(1.0 - rho * rho, 0.0)) * e[None, :]
    noise = mm.noise(np.broadcast_to(v1[:, None], sel.shape), missing_probability(sc, sel))
    return float((w1[:, None] * we[None, :] * noise).sum())


def reliability(sc) -> float:  # noqa: ANN001
    """Reliability of the first construct's observed group mean: Var(T) / Var(xbar),
    accounting for categories, loadings, member variances, sizes and missing members."""
    if default_measurement(sc):
        return sc.var_xi / (sc.var_xi + sc.sigma2_nu * sc.group_size.mean_inverse())
    mm = MemberModel(sc)
    v, w = grid()
    t = mm.score(v)[0]
    var_t = float(w @ (t - w @ t) ** 2)
    return var_t / (var_t + _noise(sc, mm, 0))


def unadjusted_limit(sc) -> dict[str, float] | None:  # noqa: ANN001
    """Large-G limit of the OLS of y on [1, Z, xbar] (None where no closed form is
    implemented: several constructs with unequal loadings or member variances)."""
    mm = MemberModel(sc)
    if sc.n_x > 1 and not mm.parallel:
        return None
    b = np.array([*sc.beta_z, *sc.beta_xi], dtype=float)
    cov, cross, mean = _score_moments(sc, mm, 0, noise=True)
    coef = np.linalg.solve(cov, cross @ b)
    b0 = float(sc.beta0 - coef[sc.n_z:].sum() * mean)
    return dict(zip(sc.terms, (b0, *coef), strict=True))
