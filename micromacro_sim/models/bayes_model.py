"""The micro-macro latent covariate model of method ``bayes``: data, priors, conditionals.

Model (groups ``g = 1..G``, observed members ``i = 1..n_g``, ``q`` group covariates Z)::

    x_ig = xi_g + nu_ig,                      nu_ig ~ N(0, sigma2)
    xi_g = gamma0 + gamma'Z_g + zeta_g,       zeta_g ~ N(0, tau2)
    y_g  = b0 + b_z'Z_g + b_xi xi_g + e_g,    e_g ~ N(0, s2e)

``xi`` carries the mean of x, so ``b0`` is the intercept at ``xi = 0`` on the scale of x.
The data enter through ``n_g``, the group sums of x, the total within-group sum of
squares, Z and y only (:class:`GibbsData`), so groups may have any sizes >= 1.

Priors (:class:`GibbsPriors`, all independent; IG(shape, scale) has density
``scale^shape / Gamma(shape) s^(-shape-1) exp(-scale/s)``)
----------------------------------------------------------------------------------
* ``b0, b_z, b_xi ~ N(0, 1e6)`` and ``gamma0, gamma ~ N(0, 1e6)``: prior SD 1000, flat
  over the coefficients of data on a moderate scale (|coefficient| << 1000); Mplus and
  BUGS-style defaults are of this kind.
* ``sigma2 ~ IG(0.001, 0.001)``: the customary vague conjugate prior; ``sigma2`` rests on
  ``N - G`` within-group degrees of freedom, so it hardly matters.
* ``s2e`` flat on (0, inf), written ``IG(-1, 0)`` (Mplus' default for variances; its
  conditional is ``IG(G/2 - 1, RSS/2)``). Not IG(0.001, 0.001): ``s2e`` is weakly
  identified, its likelihood does not vanish at 0 (``xi`` can absorb all of y), and
  IG(eps, eps) then piles posterior mass near 0 (more than 5% below 0.01, true value .35,
  in 55% of datasets at G = 30, ICC .05, and 2.5% at G = 100, ICC .1; flat: 0.5% and 0%).
* ``tau2 ~ IG(nu0/2, nu0 kappa t0 / 2)`` with ``nu0 = 2`` and ``kappa = 1``, i.e.
  IG(1, t0): the *slightly informative* prior for the group-level variance of the
  predictor of Zitzmann, Helm & Hecht (2021, Front. Psychol. 11:611267, their first
  approach), whose purpose is a small MSE of the between-group slope ``b_xi`` when groups
  are few or the ICC is low. It is the conjugate form "prior guess ``kappa t0`` worth
  ``nu0`` groups". The guess is a deterministic function of the data: ``t0`` is the
  residual mean square of the observed group means regressed on ``[1, Z]``
  (:meth:`GibbsData.tau2_guess`), whose expectation is ``tau2 + sigma2 mean(1/n_g)``:
  never below ``tau2`` and always positive. A guess on the high side keeps the posterior of
  ``tau2`` away from 0, where ``b_xi = Cov(y, xi) / tau2`` is unstable (the failure the
  prior is meant to prevent), at the price of a pull of ``b_xi`` towards 0 that vanishes
  as G grows (weight ``nu0 / (nu0 + G)``). Against IG(0.001, 0.001) it cuts the RMSE of
  the posterior median of ``b_xi`` (true .3) from .56 to .21 at G = 30, ICC .05 (mean .23
  instead of .54) and from .17 to .12 at G = 100, ICC .1. The stored copies of the article
  reachable when this was written showed its abstract only, so the authors' exact
  hyperparameters could not be checked; ``tau2_df``, ``tau2_guess`` and
  ``tau2_guess_factor`` expose every choice (docs/bayes.md).

Conditionals
------------
Every full conditional is conjugate: ``xi_g`` normal (:func:`xi_moments`), the two
coefficient vectors normal (:func:`draw_regression`), the variances inverse-gamma
(:func:`draw_inverse_gamma`). The draw functions map standard normal and gamma variates
to draws, elementwise over leading axes (replications, chains), so a replication's draw
never depends on the rest of the stack. :func:`collapsed_gamma`, :func:`collapsed_coef`
and :func:`ridge_log_target` are the conditionals and the density with ``xi`` integrated
out that the sampler (:mod:`.bayes_gibbs`) also uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.linalg import backward_small, cholesky_small, forward_small

__all__ = [
    "GibbsData",
    "GibbsPriors",
    "draw_inverse_gamma",
    "draw_regression",
    "draw_xi",
    "collapsed_coef",
    "collapsed_gamma",
    "param_names",
    "ridge_log_target",
    "xi_moments",
]


def param_names(q: int) -> tuple[str, ...]:
    """Names of the parameters in the last axis of :func:`gibbs`' draws, for q covariates.

    ``("b0", "b_z1", ..., "b_zq", "b_xi", "tau2", "sigma2", "s2e", "gamma0",
    "gamma_z1", ..., "gamma_zq")``.
    """
    zs = tuple(f"z{j + 1}" for j in range(q))
    return ("b0", *(f"b_{z}" for z in zs), "b_xi", "tau2", "sigma2", "s2e", "gamma0",
            *(f"gamma_{z}" for z in zs))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=float)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class GibbsData:
    """Sufficient statistics of R datasets with the same G (and q), stacked: ``n`` (R, G)
    observed members per group (>= 1), ``xsum`` (R, G) their sum of x, ``ssw`` (R,) the
    within-group sum of squares of x over all groups, ``z`` (R, G, q), ``y`` (R, G)."""

    n: np.ndarray
    xsum: np.ndarray
    ssw: np.ndarray
    z: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        for name in ("n", "xsum", "ssw", "z", "y"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        R, G = self.n.shape
        if self.xsum.shape != (R, G) or self.y.shape != (R, G) or self.ssw.shape != (R,):
            raise ValueError("n, xsum and y must be (R, G) and ssw (R,)")
        if self.z.ndim != 3 or self.z.shape[:2] != (R, G):
            raise ValueError("z must be (R, G, q)")
        if np.any(self.n < 1):
            raise ValueError("every group needs at least one observed member")
        if G < self.q + 3:
            raise ValueError("the model needs G >= q + 3 groups")

    n_reps = property(lambda self: self.n.shape[0], doc="Number of replications R.")
    n_groups = property(lambda self: self.n.shape[1], doc="Number of groups G.")
    q = property(lambda self: self.z.shape[2], doc="Number of group covariates q.")

    @classmethod
    def from_long(cls, group: np.ndarray, x: np.ndarray, z: np.ndarray,
                  y: np.ndarray) -> GibbsData:
        """One dataset (R = 1) from long data: ``group`` (N,) codes 0..G-1 of the observed
        members (any order, every code present), ``x`` (N,), ``z`` (G, q) and ``y`` (G,)."""
        group = np.asarray(group, dtype=np.int64)
        x = np.asarray(x, dtype=float).reshape(-1)
        y = np.asarray(y, dtype=float)
        z = np.asarray(z, dtype=float)
        z = z.reshape(len(y), -1) if z.size else np.zeros((len(y), 0))
        G = len(y)
        n = np.bincount(group, minlength=G).astype(float)
        if len(n) != G or group.shape != x.shape:
            raise ValueError("group codes must run 0..G-1 with one x per member")
        xsum = np.bincount(group, weights=x, minlength=G)
        dev = x - (xsum / np.where(n > 0, n, 1.0))[group]
        return cls(n[None], xsum[None], np.array([dev @ dev]), z[None], y[None])

    @classmethod
    def from_dataset(cls, data: Dataset, j: int = 0) -> GibbsData:
        """One :class:`~micromacro_sim.generate.dataset.Dataset` (its x variable ``j``)."""
        return cls.from_long(data.group, data.x[:, j], data.z, data.y)

    @classmethod
    def stack(cls, items: Sequence[GibbsData]) -> GibbsData:
        """Stack datasets of equal G and q along the replication axis."""
        return cls(*(np.concatenate([getattr(d, k) for d in items])
                     for k in ("n", "xsum", "ssw", "z", "y")))

    def take(self, rows: slice | np.ndarray) -> GibbsData:
        """The replications ``rows`` (a slice or an index array)."""
        if not isinstance(rows, slice):
            rows = np.atleast_1d(np.asarray(rows))
        return GibbsData(self.n[rows], self.xsum[rows], self.ssw[rows], self.z[rows],
                         self.y[rows])

    def _ols_ms(self, v: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """Residual mean square of ``v`` (R, G) regressed on [1, Z (, extra)], per rep."""
        out = np.empty(self.n_reps)
        for r in range(self.n_reps):
            cols = [np.ones(self.n_groups), *self.z[r].T]
            if extra is not None:
                cols.append(extra[r])
            X = np.column_stack(cols)
            beta = np.linalg.lstsq(X, v[r], rcond=None)[0]
            res = v[r] - X @ beta
            out[r] = (res @ res) / (self.n_groups - X.shape[1])
        return out

    def tau2_guess(self) -> np.ndarray:
        """The data-based prior guess of ``tau2`` (R,): the residual mean square of the
        observed group means regressed on ``[1, Z]`` (expectation ``tau2 + sigma2 *
        mean(1/n_g)``)."""
        return self._ols_ms(self.xsum / self.n)

    def s2e_guess(self) -> np.ndarray:
        """Residual mean square of y on ``[1, Z, group mean]`` (R,): a start for ``s2e``."""
        return self._ols_ms(self.y, self.xsum / self.n)

    def sigma2_guess(self) -> np.ndarray:
        """Pooled within-group variance (R,) (the tau2 guess where no group has 2)."""
        df = self.n.sum(axis=1) - self.n_groups
        return np.where(df > 0, self.ssw / np.maximum(df, 1), self.tau2_guess())


@dataclass(frozen=True)
class GibbsPriors:
    """Priors of the latent covariate model (defaults: docs/bayes.md).

    Attributes
    ----------
    coef_var : float
        Variance of the independent ``N(0, coef_var)`` priors of ``b0, b_z, b_xi``.
    gamma_var : float
        Variance of the independent ``N(0, gamma_var)`` priors of ``gamma0, gamma``.
    sigma2_shape, sigma2_scale : float
        ``sigma2 ~ IG(shape, scale)`` (within-group variance of x); density
        ``s^(-shape-1) exp(-scale/s)``, improper for ``shape <= 0`` or ``scale = 0``.
    s2e_shape, s2e_scale : float
        ``s2e ~ IG(shape, scale)`` (residual variance of y); ``IG(-1, 0)`` is flat.
    tau2_df : float
        ``nu0``: the weight of the prior guess of ``tau2`` in groups;
        ``tau2 ~ IG(nu0 / 2, nu0 * guess / 2)``.
    tau2_guess : float or None
        A fixed prior guess of ``tau2``; None: the data-based
        :meth:`GibbsData.tau2_guess`.
    tau2_guess_factor : float
        ``kappa``: the guess is ``kappa`` times ``tau2_guess`` (or the data-based guess).
    """

    coef_var: float = 1e6
    gamma_var: float = 1e6
    sigma2_shape: float = 1e-3
    sigma2_scale: float = 1e-3
    s2e_shape: float = -1.0
    s2e_scale: float = 0.0
    tau2_df: float = 2.0
    tau2_guess: float | None = None
    tau2_guess_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("coef_var", "gamma_var", "tau2_df", "tau2_guess_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GibbsPriors.{name} must be positive")
        for name in ("sigma2_scale", "s2e_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"GibbsPriors.{name} must be >= 0")
        if self.tau2_guess is not None and not self.tau2_guess > 0:
            raise ValueError("GibbsPriors.tau2_guess must be positive or None")

    @property
    def tau2_shape(self) -> float:
        """Shape ``nu0 / 2`` of the inverse-gamma prior of ``tau2``."""
        return 0.5 * self.tau2_df

    def tau2_scale(self, data: GibbsData) -> np.ndarray:
        """Scale ``nu0 * kappa * guess / 2`` of the prior of ``tau2``, per replication."""
        guess = (data.tau2_guess() if self.tau2_guess is None
                 else np.full(data.n_reps, float(self.tau2_guess)))
        return 0.5 * self.tau2_df * self.tau2_guess_factor * guess


def xi_moments(n: np.ndarray, xsum: np.ndarray, m: np.ndarray, r: np.ndarray,
               tau2: np.ndarray, sigma2: np.ndarray, b_xi: np.ndarray,
               s2e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (..., G) of ``xi_g`` given everything else.

    ``n, xsum``: members and their sum of x per group; ``m = gamma0 + gamma'Z_g``;
    ``r = y_g - b0 - b_z'Z_g``; ``tau2, sigma2, b_xi, s2e`` broadcast over the groups.
    """
    w_y = b_xi / s2e
    prec = 1.0 / tau2 + n / sigma2 + b_xi * w_y
    num = m / tau2 + xsum / sigma2 + r * w_y
    return num / prec, prec


def draw_xi(n: np.ndarray, xsum: np.ndarray, m: np.ndarray, r: np.ndarray,
            tau2: np.ndarray, sigma2: np.ndarray, b_xi: np.ndarray, s2e: np.ndarray,
            u: np.ndarray) -> np.ndarray:
    """A draw of every ``xi_g`` from its conditional, given standard normals ``u``."""
    mean, prec = xi_moments(n, xsum, m, r, tau2, sigma2, b_xi, s2e)
    return mean + u / np.sqrt(prec)


def draw_regression(xtx: np.ndarray, xtv: np.ndarray, s2: np.ndarray, prior_var: float,
                    u: np.ndarray) -> np.ndarray:
    """A draw of regression coefficients from their normal conditional.

    ``xtx`` (..., k, k) and ``xtv`` (..., k) are ``X'X`` and ``X'v``, ``s2`` (...) the
    error variance, ``prior_var`` the variance of the ``N(0, prior_var)`` priors and ``u``
    (..., k) standard normals. Returns ``A^{-1} X'v + sqrt(s2) L'^{-1} u`` with
    ``A = X'X + (s2/prior_var) I = L L'``: mean ``A^{-1} X'v``, covariance ``s2 A^{-1}``.
    """
    k = xtx.shape[-1]
    a = xtx.copy()
    ridge = s2 / prior_var
    for j in range(k):
        a[..., j, j] += ridge
    L = cholesky_small(a)
    return backward_small(L, forward_small(L, xtv) + np.sqrt(s2)[..., None] * u)


def draw_inverse_gamma(prior_scale: float | np.ndarray, ss: np.ndarray,
                       g: np.ndarray) -> np.ndarray:
    """A draw ``(prior_scale + ss/2) / g`` from ``IG(shape + m/2, prior_scale + ss/2)``,
    ``g`` a standard gamma variate of shape ``shape + m/2`` (fixed over iterations)."""
    return (prior_scale + 0.5 * ss) / g


def collapsed_gamma(xbar: np.ndarray, r: np.ndarray, e2: np.ndarray, tau2: np.ndarray,
                    b_xi: np.ndarray, s2e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``w`` and terms ``h`` (..., G) of ``(gamma0, gamma) | b, tau2, s2e, sigma2``
    with xi integrated out: precision ``sum_g w_g W_g W_g' + I/gamma_var`` and mean
    ``precision^{-1} sum_g W_g h_g`` (``W_g = [1, Z_g]``).

    ``(xbar_g, y_g)`` has mean ``(W_g gamma, b0 + b_z'Z_g + b_xi W_g gamma)`` and the
    covariance of :func:`ridge_log_target`, so with ``r_g = y_g - b0 - b_z'Z_g``,
    ``e2_g = sigma2 / n_g`` and ``det_g = tau2 (s2e + b_xi^2 e2_g) + e2_g s2e``:
    ``w_g = (s2e + b_xi^2 e2_g) / det_g`` and ``h_g = (s2e xbar_g + b_xi e2_g r_g) / det_g``.
    """
    a = s2e + b_xi * b_xi * e2
    det = tau2 * a + e2 * s2e
    return a / det, (s2e * xbar + b_xi * e2 * r) / det


def collapsed_coef(xbar: np.ndarray, y: np.ndarray, m: np.ndarray, e2: np.ndarray,
                   tau2: np.ndarray, b_xi: np.ndarray,
                   s2e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``w`` and responses ``t`` (..., G) of ``(b0, b_z) | b_xi, gamma, tau2, s2e,
    sigma2`` with xi integrated out: a regression of ``t`` on ``[1, Z]`` with weights ``w``
    and the ``N(0, coef_var)`` priors.

    Given ``xbar_g``, ``y_g`` is normal with mean ``b0 + b_z'Z_g + b_xi E[xi_g | xbar_g]``,
    ``E[xi_g | xbar_g] = m_g + tau2 / (tau2 + e2_g) (xbar_g - m_g)``, and variance
    ``s2e + b_xi^2 tau2 e2_g / (tau2 + e2_g)``; ``xbar_g`` does not depend on (b0, b_z).
    """
    s11 = tau2 + e2
    w = s11 / (s2e * s11 + b_xi * b_xi * tau2 * e2)
    return w, y - b_xi * (m + tau2 / s11 * (xbar - m))


def ridge_log_target(tau2: np.ndarray, b: np.ndarray, s2e: np.ndarray,
                     sq: tuple[np.ndarray, ...], e2: np.ndarray, priors: GibbsPriors,
                     tau2_scale: np.ndarray) -> np.ndarray:
    """Log density, up to a constant, of the Metropolis move on ``(tau2, b, s2e)``.

    With ``xi`` integrated out and ``gamma, sigma2`` fixed, each group's
    ``(xbar_g, y_g)`` is bivariate normal with covariance
    ``[[tau2 + e2_g, c], [c, v]]``, where ``e2_g = sigma2 / n_g``, ``c = b_xi tau2`` and
    ``v = b_xi^2 tau2 + s2e`` (determinant ``tau2 s2e + e2_g v``). The move holds the
    reduced-form coefficients ``b0 + b_xi gamma0`` and ``b_z + b_xi gamma`` fixed, so the
    means do not change.

    Parameters
    ----------
    tau2, s2e : ndarray (..., 1)
    b : ndarray (..., q + 2)
        ``(b0, b_z, b_xi)``.
    sq : tuple of ndarray (..., G)
        ``(d1^2, -2 d1 d2, d2^2, e2 d2^2)`` with ``d1 = xbar_g - gamma0 - gamma'Z_g`` and
        ``d2`` = ``y_g`` minus its reduced-form mean.
    e2 : ndarray (..., G)
    priors : GibbsPriors
    tau2_scale : ndarray
        Scale of the prior of ``tau2`` (broadcasting against ``tau2[..., 0]``).

    Returns
    -------
    ndarray (...)
        Log posterior of ``(tau2, b, s2e)`` plus ``log v``, the log Jacobian of the
        move's coordinates ``(log tau2, c, log v)``; ``-inf`` where ``s2e <= 0``.
    """
    b_xi = b[..., -1:]
    c = b_xi * tau2
    v = c * b_xi + s2e
    with np.errstate(invalid="ignore", divide="ignore"):
        det = tau2 * s2e + e2 * v
        num = v * sq[0] + c * sq[1] + tau2 * sq[2] + sq[3]
        ll = -0.5 * (np.log(det) + num / det).sum(axis=-1)
        t, e, vv = tau2[..., 0], s2e[..., 0], v[..., 0]
        lp = (-(priors.tau2_shape + 1.0) * np.log(t) - tau2_scale / t
              - (priors.s2e_shape + 1.0) * np.log(e) - priors.s2e_scale / e
              - 0.5 * (b * b).sum(axis=-1) / priors.coef_var + np.log(vv))
        out = ll + lp
    return np.where(e > 0, out, -np.inf)
